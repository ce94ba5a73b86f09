"""LeRobot export speed on the full simulated rig: CPU seconds of every process over the episodes'
duration, real time per core, scaling with workers, and where the time goes (figures in
docs/performance.md, "LeRobot export speed").

    python bench/export_speed.py [--distinct 2] [--seconds 30] [--episodes 4] [--repeats 3]
    python bench/export_speed.py --reuse /tmp/export-episodes     # record there once, reuse afterwards

``--distinct`` episodes of ``--seconds`` are recorded from the full simulated rig (720p ego camera,
640x480 top camera with depth; bench/dataset_jobs.py's ``record_episodes``) and copied to make
``--episodes`` files. Each run exports them all (``export_item`` on the local process pool with 1, 2,
4, ... workers up to the core count, one codec thread per worker, then ``merge_shards``) and measures:

- CPU seconds of all its processes: this process (job control, merge) + the pool's worker processes
  (``resource.getrusage(RUSAGE_CHILDREN)`` once the pool has ended: start, imports, the work);
  their ratio to the episodes' duration (goal <= 0.2, i.e. >= 5x real time per core);
- wall time, speed (x real time) and scaling efficiency = speed(N) / (N x speed(1)) (goal >= 75 %);
  on a shared machine wall time depends on the others' load (printed), CPU seconds much less, so
  also CPU efficiency = CPU(1 worker) / CPU(N workers): the share of the work that is not overhead of
  running in parallel (the wall-time efficiency an idle machine with N free cores would show at most);
- per stage, summed over the episodes (each worker's own CPU clock): HDF5 read, JPEG decode, convert
  (resize, range), encode (x264 and MP4), image statistics, the rest of a shard (final table), the
  workers' start and imports, and in this process the merge (Parquet and meta/).

Medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine  # noqa: E402
from capture_app.dataset.commands import export_item  # noqa: E402
from capture_app.dataset.jobs import run_jobs  # noqa: E402
from capture_app.dataset.lerobot_export import ExportOptions, merge_shards  # noqa: E402
from capture_app.dataset.sources import list_episodes  # noqa: E402
from capture_app.dataset.training_rows import read_training_rows  # noqa: E402

STAGES = ("read", "decode", "convert", "encode", "image_stats", "table", "worker_start", "merge")


def cpu_seconds() -> tuple[float, float]:
    """(this process, its ended children) user + system CPU seconds."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def worker_counts(cores: int) -> list[int]:
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


def export_once(episodes: list[str], workers: int, threads: int, options: ExportOptions, tmp: Path) -> dict:
    """One export of ``episodes``: wall and CPU seconds, and CPU seconds per stage."""
    staging, out = tmp / "staging", tmp / "dataset"
    shutil.rmtree(out, ignore_errors=True)
    self0, children0 = cpu_seconds()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    results = run_jobs(export_item, list(enumerate(episodes)), workers=workers, progress=False,
                       kwargs={"staging": str(staging), "options": options, "threads": threads})
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"export failed: {failed[0].error}")
    merge_start = time.process_time()
    merge_shards([r.value for r in results], out)
    merge_cpu = time.process_time() - merge_start
    wall = time.perf_counter() - start
    self1, children1 = cpu_seconds()
    shutil.rmtree(staging, ignore_errors=True)
    video_bytes = sum(p.stat().st_size for p in (out / "videos").rglob("*.mp4"))
    stages = dict.fromkeys(STAGES, 0.0)
    for r in results:
        seconds = r.value.seconds
        for stage in ("read", "decode", "convert", "encode", "image_stats"):
            stages[stage] += seconds[stage]
        stages["table"] += seconds["total"] - sum(seconds[s] for s in ("read", "decode", "convert", "encode",
                                                                       "image_stats"))
    workers_cpu = children1 - children0
    stages["worker_start"] = workers_cpu - sum(r.value.seconds["total"] for r in results)
    stages["merge"] = merge_cpu
    return {"wall": wall, "cpu": (self1 - self0) + workers_cpu, "parent": self1 - self0, "workers": workers_cpu,
            "stages": stages, "load": (load + os.getloadavg()[0]) / 2, "video_bytes": video_bytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--distinct", type=int, default=2, help="episodes recorded (default 2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each recorded episode (default 30)")
    parser.add_argument("--episodes", type=int, default=0, help="episodes exported (copies; default 2 per core, at least 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-workers", type=int, default=os.cpu_count(), help="default: the core count")
    parser.add_argument("--threads", type=int, default=1, help="codec threads per worker (default 1)")
    parser.add_argument("--preset", default="", help="encoder preset (default: the export's default)")
    parser.add_argument("--reuse", help="a folder of recorded episodes: used as it is, or recorded into when empty")
    args = parser.parse_args()
    total = args.episodes or max(4, 2 * args.max_workers)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        folder = Path(args.reuse) if args.reuse else Path(tmp) / "episodes"
        folder.mkdir(parents=True, exist_ok=True)
        episodes = list_episodes([str(folder)])
        if not episodes:
            from bench.dataset_jobs import record_episodes  # here: the pool's workers import this script again
            episodes = record_episodes(folder, args.distinct, args.seconds, total)
        episodes = (episodes * total)[:total] if len(episodes) < total else episodes[:total]
        duration = 0.0
        for path in episodes:
            rows = read_training_rows(path)
            duration += len(rows.t_eval_ns) / rows.rate_hz
        print(f"{len(episodes)} episodes, {duration:.0f} s in all (720p ego, 640x480 top with depth; JPEG); "
              f"preset {args.preset or 'default'}, {args.threads} codec thread(s) per worker; "
              f"medians of {args.repeats} runs")
        options = ExportOptions(preset=args.preset)
        export_once(episodes[:1], 1, args.threads, options, Path(tmp))  # warm the page cache and imports
        runs = {}
        for workers in worker_counts(args.max_workers):
            done = [export_once(episodes, workers, args.threads, options, Path(tmp)) for _ in range(args.repeats)]
            runs[workers] = {key: statistics.median(r[key] for r in done) for key in ("wall", "cpu", "parent",
                                                                                       "workers", "load", "video_bytes")}
            runs[workers]["stages"] = {s: statistics.median(r["stages"][s] for r in done) for s in STAGES}
            r = runs[workers]
            print(f"  {workers} workers: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, load {r['load']:.1f}", flush=True)
        print(f"\n{'workers':>7}{'wall s':>9}{'x real time':>13}{'efficiency':>12}{'CPU s':>8}{'CPU/duration':>14}"
              f"{'x real time per core':>22}{'CPU efficiency':>16}{'load avg':>10}")
        one = duration / runs[1]["wall"]
        for workers, r in runs.items():
            speed = duration / r["wall"]
            print(f"{workers:>7}{r['wall']:>9.1f}{speed:>13.1f}{speed / (workers * one):>11.0%} {r['cpu']:>8.1f}"
                  f"{r['cpu'] / duration:>14.3f}{duration / r['cpu']:>22.1f}{runs[1]['cpu'] / r['cpu']:>15.0%} "
                  f"{r['load']:>10.1f}")
        print("\nwhere the CPU goes (seconds per second of episode; medians):")
        print(f"{'workers':>7}" + "".join(f"{s:>13}" for s in STAGES))
        for workers, r in runs.items():
            print(f"{workers:>7}" + "".join(f"{r['stages'][s] / duration:>13.4f}" for s in STAGES))
        print(f"videos: {runs[1]['video_bytes'] / 1e6 / (duration / 60):.1f} MB per minute of episode (both cameras)")
        print("(read = HDF5, decode = JPEG, convert = resize + range, encode = x264 + MP4, table = the rest of a "
              "shard, worker_start = process start and imports, merge = Parquet and meta/ in this process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
