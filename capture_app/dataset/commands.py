"""``capture-app export lerobot`` and ``capture-app dataset validate|resync|export|stats``: jobs over many
episodes on a local process pool or Ray (``--ray``), with a progress bar, retries and a summary."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from capture_app.dataset.catalog import catalog_row, catalog_stats, failed_row, load_catalog, stale_sources, write_catalog
from capture_app.dataset.jobs import run_jobs, summary
from capture_app.dataset.lerobot_export import ExportOptions, export_shard, merge_shards, parse_image_size
from capture_app.dataset.video import check_preset
from capture_app.dataset.sources import is_local, list_episodes, local_copy, local_path_of
from capture_app.core.errors import CaptureError


# --- per-episode jobs (top-level functions: they run in pool processes and Ray workers) -----------
def export_item(item: tuple[int, str], staging: str, options: ExportOptions, threads: int = 1):
    """Export shard of episode ``item = (number, source)``; ``threads`` for its video decoder and encoder,
    and for OpenCV in this (worker) process: its default pool of one thread per core spins beside every
    worker (16 % more CPU per episode measured with one worker on 2 cores, docs/performance.md)."""
    import cv2
    cv2.setNumThreads(threads)
    number, source = item
    with local_copy(source) as path:
        shard = export_shard(path, staging, number, options, threads)
    shard.source = source
    return shard


def resync_item(source: str, calibration_json: str | None):
    """Recompute an episode's final table (and its quality report) in place, with a new calibration or its own."""
    from calibration.model import calibration_from_json
    from capture_app.recorder.final_table import finalize_episode
    from capture_app.recorder.resync import resync_episode
    if not is_local(source):
        raise CaptureError(f"{source}: resync rewrites the file; run it where the episodes are stored")
    path = local_path_of(source)
    calibration = calibration_from_json(calibration_json, "--calibration-file") if calibration_json else None
    version = resync_episode(path, calibration)
    report = finalize_episode(path)  # the quality report with the rig's own thresholds, as `capture-app resync`
    return {"version": version, "verdict": report.get("verdict")}


# --- orchestration -----------------------------------------------------------------------------
def update_catalog(sources: list[str], catalog_path: Path, workers: int | None, ray: str | None,
                   retries: int = 1, progress: bool = True) -> tuple[list[dict], str]:
    """Validate the episodes whose catalog row is missing or stale; returns (all rows, job summary)."""
    episodes = list_episodes(sources)
    catalog = load_catalog(catalog_path)
    todo = stale_sources(episodes, catalog)
    results = run_jobs(catalog_row, todo, workers=workers, ray_address=ray, retries=retries, label="validate",
                       progress=progress)
    for r in results:
        catalog[r.item] = r.value if r.ok else failed_row(r.item, r.error)
    rows = [catalog[s] for s in episodes]
    write_catalog(catalog_path, rows)
    text = summary(results, "validate") + f" ({len(episodes) - len(todo)} unchanged since the last run)"
    return rows, text


def export_lerobot(sources: list[str], out: Path, options: ExportOptions, workers: int | None = None,
                   ray: str | None = None, retries: int = 1, overwrite: bool = False,
                   progress: bool = True) -> tuple[dict, str]:
    """Export every episode under ``sources`` to one LeRobotDataset at ``out``: shards in parallel, then
    one merge. Returns (info.json, job summary). Failed episodes are left out and listed."""
    out = Path(out)
    try:
        check_preset(options.codec, options.preset)
    except ValueError as exc:
        raise CaptureError(str(exc)) from None
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CaptureError(f"{out} is not empty; choose a new --out or pass --overwrite")
        shutil.rmtree(out)
    episodes = list_episodes(sources)
    if not episodes:
        raise CaptureError(f"no episodes (*.h5) under {', '.join(sources)}")
    staging = out / ".staging"
    kwargs = {"staging": str(staging), "options": options, "threads": codec_threads(workers, len(episodes), ray)}
    results = run_jobs(export_item, list(enumerate(episodes)), kwargs=kwargs,
                       workers=workers, ray_address=ray, retries=retries, label="export", progress=progress)
    try:
        info = merge_shards([r.value for r in results if r.ok], out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info, summary(results, "export")


def codec_threads(workers: int | None, episodes: int, ray: str | None = None) -> int:
    """Video codec threads per export worker: the cores left to each of the workers that have an episode
    to do (one when every core has a worker: threads beyond that only add switching), so workers x
    threads never exceeds the cores. On Ray one (the cluster's cores are not known here)."""
    if ray:
        return 1
    cores = os.cpu_count() or 1
    busy = max(1, min(workers or cores, episodes))
    return max(1, cores // busy)


# --- command line ------------------------------------------------------------------------------
def _add_job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run on Ray: 'local' starts one here, else ray://HOST:PORT or auto")
    parser.add_argument("--retries", type=int, default=1, help="more attempts for an episode that fails (default 1)")


def _add_export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the dataset folder to create")
    parser.add_argument("--invalid", choices=("keep", "split", "drop"), default="keep",
                        help="keep: every row, invalid hand parts hold their last valid value and are flagged in "
                             "observation.state_valid / action_valid (default); split: each run of fully valid rows "
                             "becomes an episode; drop: frames whose action is not fully valid are left out (an "
                             "episode is cut at each gap)")
    parser.add_argument("--image-size", metavar="WxH", type=_image_size,
                        help="resize every camera to this size, e.g. 640x480 (policies such as diffusion need one "
                             "image shape across cameras; default: each camera's own)")
    parser.add_argument("--min-frames", type=int, default=20, help="with --invalid split or drop: shortest episode kept, in frames (default 20 = 1 s)")
    parser.add_argument("--codec", choices=("h264", "av1"), default="h264", help="video codec (default h264)")
    parser.add_argument("--crf", type=int, default=23, help="video quality, lower is better (default 23)")
    parser.add_argument("--gop", type=int, default=2, help="frames between keyframes (default 2, as lerobot: fast random access)")
    parser.add_argument("--preset", default="", help="encoder preset: speed against file size (h264: ultrafast "
                                                     "(default) .. veryslow; av1: 0..13, default 10)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def _image_size(text: str) -> tuple[int, int]:
    try:
        return parse_image_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(sub) -> None:
    export = sub.add_parser("export", help="turn episodes into a training set")
    formats = export.add_subparsers(dest="format", required=True)
    lerobot = formats.add_parser("lerobot", help="a LeRobotDataset v3.0 (docs/datasets.md)")
    lerobot.add_argument("sources", nargs="+", help="episode files or folders")
    _add_export_options(lerobot)
    _add_job_options(lerobot)
    lerobot.set_defaults(func=cmd_export_lerobot)
    mcap = formats.add_parser("mcap", help="MCAP files with Foxglove schemas and a rosbag2 metadata.yaml (docs/datasets.md)")
    mcap.add_argument("sources", nargs="+", help="episode files or folders")
    mcap.add_argument("--out", required=True, help="folder for one bag folder (NAME/NAME.mcap + metadata.yaml) per episode")
    mcap.add_argument("--no-progress", action="store_true", help="no progress bar")
    mcap.add_argument("--ros2", action="store_true",
                      help="ROS 2 standard messages in CDR instead of Foxglove's protobuf schemas, so that ros2 bag play "
                           "and rosbag2 readers deserialize them (needs the rosbags package; docs/datasets.md)")
    mcap.set_defaults(func=cmd_export_mcap)

    dataset = sub.add_parser("dataset", help="jobs over many episodes: validate, resync, export, stats")
    jobs = dataset.add_subparsers(dest="job", required=True)
    for name, text in (("validate", "check every episode and update the catalog"),
                       ("stats", "figures over the catalog (validates new episodes first)")):
        job = jobs.add_parser(name, help=text)
        job.add_argument("source", help="a folder, file:// or fsspec URL of episodes")
        job.add_argument("--catalog", help="catalog Parquet file (default: SOURCE/catalog.parquet for a local folder)")
        _add_job_options(job)
        job.set_defaults(func=cmd_dataset_validate if name == "validate" else cmd_dataset_stats)
    resync = jobs.add_parser("resync", help="recompute every episode's final table (after a recalibration)")
    resync.add_argument("source")
    resync.add_argument("--calibration-file", help="calibration JSON to apply (default: each episode's own)")
    _add_job_options(resync)
    resync.set_defaults(func=cmd_dataset_resync)
    job = jobs.add_parser("export", help="export to a LeRobotDataset as a distributed job")
    job.add_argument("source")
    _add_export_options(job)
    _add_job_options(job)
    job.set_defaults(func=cmd_dataset_export)


def _catalog_path(args) -> Path:
    if args.catalog:
        return Path(args.catalog)
    if not is_local(args.source) or not Path(args.source.removeprefix("file://")).is_dir():
        raise CaptureError(f"{args.source}: give --catalog PATH (the default is inside a local folder)")
    return Path(args.source.removeprefix("file://")) / "catalog.parquet"


def _export_options(args) -> ExportOptions:
    return ExportOptions(invalid=args.invalid, min_frames=args.min_frames, codec=args.codec, crf=args.crf, gop=args.gop,
                         image_size=args.image_size, preset=args.preset)


def _run_export(sources: list[str], args) -> int:
    info, text = export_lerobot(sources, Path(args.out), _export_options(args), args.workers, args.ray,
                                args.retries, args.overwrite)
    print(text)
    print(f"{args.out}: {info['total_episodes']} episodes, {info['total_frames']} frames at {info['fps']} Hz")
    return 0 if "0 failed" in text.splitlines()[0] else 1


def cmd_export_lerobot(args) -> int:
    return _run_export(args.sources, args)


def cmd_export_mcap(args) -> int:
    from tqdm import tqdm
    from capture_app.dataset.mcap_export import export_episode_mcap
    episodes = [e for e in list_episodes(args.sources) if is_local(e)]
    if not episodes:
        raise CaptureError(f"no local episodes (*.h5) under {', '.join(args.sources)}")
    failed = 0
    for source in tqdm(episodes, desc="export mcap", unit="episode", disable=args.no_progress, file=sys.stderr):
        try:
            if args.ros2:
                from capture_app.dataset.mcap_ros2 import export_episode_ros2
                folder, notes = export_episode_ros2(source, args.out)
                print(folder)
                for note in notes:  # what a ROS 2 bag cannot hold, never dropped silently
                    print(f"  LEFT OUT {note}", file=sys.stderr)
                continue
            print(export_episode_mcap(source, args.out))
        except Exception as exc:  # listed, the others still exported
            failed += 1
            print(f"FAILED {source}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"{len(episodes) - failed} of {len(episodes)} episodes exported to {args.out}, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_dataset_export(args) -> int:
    return _run_export([args.source], args)


def cmd_dataset_validate(args) -> int:
    rows, text = update_catalog([args.source], _catalog_path(args), args.workers, args.ray, args.retries)
    print(text)
    bad = [r for r in rows if r["validation"] != "ok"]
    for r in bad:
        print(f"  {r['validation'].upper()} {r['source']}: {', '.join(json.loads(r['problems']))}")
    print(f"catalog: {_catalog_path(args)} ({len(rows)} episodes, {len(bad)} not valid)")
    return 1 if bad else 0


def cmd_dataset_stats(args) -> int:
    rows, text = update_catalog([args.source], _catalog_path(args), args.workers, args.ray, args.retries)
    print(text, file=sys.stderr)
    print(json.dumps(catalog_stats(rows), indent=2))
    return 0


def cmd_dataset_resync(args) -> int:
    calibration_json = Path(args.calibration_file).read_text() if args.calibration_file else None
    results = run_jobs(resync_item, list_episodes([args.source]), kwargs={"calibration_json": calibration_json},
                       workers=args.workers, ray_address=args.ray, retries=args.retries, label="resync")
    text = summary(results, "resync")
    print(text)
    return 0 if all(r.ok for r in results) else 1
