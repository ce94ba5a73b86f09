"""Episodes -> a LeRobotDataset v3.0 (docs/datasets.md has the field mapping).

Two steps, so that the expensive one runs anywhere (a process pool, Ray workers):

1. ``export_shard`` (per source episode, independent): reads the final table, picks the frames,
   decodes the JPEG frames and encodes one MP4 per camera into ``staging``; returns the frame
   columns and per-episode facts (a ``Shard``, small).
2. ``merge_shards`` (once): numbers episodes, frames, tasks and subtasks globally, writes the
   data Parquet files, moves the videos into place and writes ``meta/``.

One data file and one video file per camera hold every LeRobot episode cut from one source
episode (file index = the source's number), as the v3.0 layout allows.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from capture_app.dataset.camera_frames import CameraFrames
from capture_app.dataset.feature_stats import aggregate_stats, feature_stats, image_stats, to_json
from capture_app.dataset.frames import fill_missing_rows, frame_runs, hold_invalid, row_subtasks, sample_frames
from capture_app.dataset.training_rows import CAMERAS, ImageReader, read_training_rows
from capture_app.dataset.video import VideoWriter, video_info
from capture_app.core.errors import EpisodeFormatError

CODEBASE_VERSION = "v3.0"
EXPORT_VERSION = 2  # docs/datasets.md: 2 = validity flags float32 0/1 (1 had bool), --image-size, --invalid drop
ROBOT_TYPE = "bimanual_human_hands"  # a wearable rig: the "robot" is two tracked human hands
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
NO_SUBTASK = ""  # subtask string of frames outside every annotated segment (subtask_index 0)
IMAGE_STATS_FRAMES = 60  # frames sampled per episode and camera for image statistics


@dataclass(frozen=True)
class ExportOptions:
    """``invalid``: ``keep`` every row (invalid parts hold their last valid value and are flagged),
    ``split`` into runs of fully valid rows of at least ``min_frames``, or ``drop`` the frames whose
    action (the next row) is not fully valid, cutting an episode at each gap (runs of at least
    ``min_frames``). ``image_size``: (width, height) in pixels every camera is resized to (None: each
    camera's own size). Video: codec, CRF, GOP, encoder preset ("" = the codec's default in
    ``capture_app.dataset.video.DEFAULT_PRESETS``: speed against file size, docs/datasets.md)."""
    invalid: str = "keep"
    image_size: tuple[int, int] | None = None
    min_frames: int = 20
    codec: str = "h264"
    crf: int = 23
    gop: int = 2
    preset: str = ""


@dataclass
class EpisodePart:
    """One LeRobot episode cut from a source episode: frames [start, stop) of its shard."""
    start: int
    stop: int
    subtasks: list[dict]


@dataclass
class Shard:
    source_number: int
    source: str
    name: str
    task: str
    fps: float
    columns: dict[str, np.ndarray]  # per frame, in shard order
    subtask_names: list[str]        # local subtask index -> subtask string
    parts: list[EpisodePart]
    videos: dict[str, str]          # camera key -> staged mp4
    video_infos: dict[str, dict]
    image_shapes: dict[str, tuple]
    image_stats: dict[str, list[dict]] = field(default_factory=dict)  # camera key -> stats per part
    action_names: list[str] = field(default_factory=list)
    valid_names: list[str] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # the worker's CPU seconds per stage (benchmarks)


def video_key(camera: str) -> str:
    return f"observation.images.{camera}"


def export_shard(path: str, staging: str, source_number: int, options: ExportOptions = ExportOptions(),
                 threads: int = 1) -> Shard:
    """Frames, videos and facts of one source episode (see the module docstring). ``threads``: the video
    decoder's and encoder's threads (0: FFmpeg's choice); the output does not depend on it."""
    start = time.process_time()
    rows = read_training_rows(path)
    missing = [key for key in CAMERAS if key not in rows.image_rows or not (rows.image_rows[key] >= 0).any()]
    if missing:
        raise EpisodeFormatError(f"{path}: no frames from {', '.join(CAMERAS[k] for k in missing)}; "
                                 f"a training set needs both cameras")
    valid = rows.action_valid.astype(bool)
    image_rows, present = {}, {}
    for key in CAMERAS:
        image_rows[key], present[key] = fill_missing_rows(rows.image_rows[key])
    all_present = np.all([present[k] for k in CAMERAS], axis=0)
    row_ok = valid.all(axis=1) & all_present
    usable = row_ok & np.append(row_ok[1:], False)
    if options.invalid == "drop":  # only the action matters: a frame is kept when its next row is fully valid
        usable = np.append(valid.all(axis=1)[1:], False)
    runs = frame_runs(usable, options.invalid, options.min_frames)
    if not runs:
        raise EpisodeFormatError(f"{path}: no frames to export ({options.invalid} mode, "
                                 f"{int(usable.sum())} usable rows of {len(usable)}, min {options.min_frames} frames)")
    picked = np.concatenate([np.arange(a, b) for a, b in runs])
    held = hold_invalid(rows.action, valid)
    owner = row_subtasks(np.array([s.start_row for s in rows.subtasks], np.int64),
                         np.array([s.end_row for s in rows.subtasks], np.int64), len(rows.t_eval_ns))
    names = [NO_SUBTASK] + [s.description or s.label for s in rows.subtasks]
    fps = rows.rate_hz
    frame_in_part = np.concatenate([np.arange(b - a) for a, b in runs])
    columns = {
        "observation.state": held[picked].astype(np.float32),
        "action": held[picked + 1].astype(np.float32),
        # float32 0/1, not bool: lerobot normalizes every observation.* key (mean/std) and bool tensors
        # cannot be subtracted; 1.0 = valid / present
        "observation.state_valid": valid[picked].astype(np.float32),
        "action_valid": valid[picked + 1].astype(np.float32),
        "observation.images_present": np.stack([present[k][picked] for k in CAMERAS], axis=1).astype(np.float32),
        "timestamp": (frame_in_part / fps).astype(np.float32),
        "frame_index": frame_in_part.astype(np.int64),
        "subtask_index": (owner[picked] + 1).astype(np.int64),  # local: 0 none, k + 1 segment k
        "source_row": picked.astype(np.int64),
        "t_eval_ns": rows.t_eval_ns[picked].astype(np.int64),
    }
    parts, offset = [], 0
    for a, b in runs:
        part_subtasks = []
        for k, s in enumerate(rows.subtasks):
            inside = np.flatnonzero(owner[a:b] == k)
            if len(inside):
                part_subtasks.append({"label": s.label, "description": s.description, "hand": s.hand,
                                      "from_frame": int(inside[0]), "to_frame": int(inside[-1]) + 1})
        parts.append(EpisodePart(offset, offset + b - a, part_subtasks))
        offset += b - a
    sampled = sample_frames([(p.start, p.stop) for p in parts], IMAGE_STATS_FRAMES)
    shapes = dict(rows.image_shapes)
    if options.image_size is not None:
        w, h = options.image_size
        shapes = {key: (int(h), int(w), shape[2]) for key, shape in shapes.items()}
    videos, infos, stats = {}, {}, {}
    seconds = {"read": 0.0, "decode": 0.0, "convert": 0.0, "encode": 0.0, "image_stats": 0.0}
    with ImageReader(path) as reader:
        for key in CAMERAS:
            target = Path(staging) / f"{source_number:06d}" / f"{key}.mp4"
            h, w, _ = shapes[key]
            frames = CameraFrames(reader, key, w, h, resize=options.image_size is not None, threads=threads)
            samples = _encode_camera(frames, image_rows[key][picked], target, int(round(fps)), options, sampled,
                                     threads, seconds)
            for stage, value in frames.seconds.items():
                seconds[stage] += value
            videos[key] = str(target)
            infos[key] = video_info(target)
            t0 = time.process_time()
            stats[key] = [image_stats(np.stack(s)) for s in samples]
            seconds["image_stats"] += time.process_time() - t0
    seconds["total"] = time.process_time() - start
    return Shard(source_number=source_number, source=path, name=rows.name, task=rows.task, fps=fps,
                 columns=columns, subtask_names=names, parts=parts, videos=videos, video_infos=infos,
                 image_shapes=shapes, image_stats=stats, action_names=rows.action_names,
                 valid_names=rows.valid_names, attrs=rows.attrs, seconds=seconds)


def _encode_camera(frames: CameraFrames, source_rows: np.ndarray, target: Path, fps: int, options: ExportOptions,
                   sampled: list[np.ndarray], threads: int, seconds: dict) -> list[list[np.ndarray]]:
    """Encode frame i = ``frames``' frame of stored row ``source_rows[i]`` into ``target``, decoding each
    stored row once (a held frame is the same video frame again); returns, per part, the ``sampled``
    frames at 1/8 resolution (RGB) for the image statistics. Adds the encoder's CPU seconds to
    ``seconds["encode"]``."""
    wanted = {int(i): part for part, indices in enumerate(sampled) for i in indices}
    samples: list[list[np.ndarray]] = [[] for _ in sampled]
    with VideoWriter(target, fps, frames.width, frames.height, options.codec, options.crf, options.gop,
                     options.preset, threads) as writer:
        last_row, frame, small = -1, None, None
        for i, source_row in enumerate(source_rows.tolist()):
            if source_row != last_row or (i in wanted and small is None):
                frame, small = frames.frame(source_row, small_rgb=i in wanted)
                last_row = source_row
            t0 = time.process_time()
            writer.write_frame(frame)
            seconds["encode"] += time.process_time() - t0
            if i in wanted:
                samples[wanted[i]].append(small)
        t0 = time.process_time()
    seconds["encode"] += time.process_time() - t0
    return samples


def parse_image_size(text: str) -> tuple[int, int]:
    """``"WxH"`` (e.g. ``"640x480"``) -> (width, height); a clear ValueError otherwise."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--image-size {text!r}: give WIDTHxHEIGHT in pixels, e.g. 640x480") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192) or w % 2 or h % 2:
        raise ValueError(f"--image-size {text!r}: width and height must be even numbers of pixels 16..8192 "
                         f"(yuv420p video needs even sizes), e.g. 640x480")
    return w, h


def _features(shard: Shard) -> dict:
    vector = lambda dtype, names: {"dtype": dtype, "shape": [len(names)], "names": list(names)}  # noqa: E731
    scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}  # noqa: E731
    features = {
        "observation.state": vector("float32", shard.action_names),
        "action": vector("float32", shard.action_names),
        "observation.state_valid": vector("float32", shard.valid_names),
        "action_valid": vector("float32", shard.valid_names),
        "observation.images_present": vector("float32", list(CAMERAS)),
    }
    for key in CAMERAS:
        h, w, c = shard.image_shapes[key]
        features[video_key(key)] = {"dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
                                    "info": shard.video_infos[key]}
    for name in ("timestamp",):
        features[name] = scalar("float32")
    for name in ("frame_index", "episode_index", "index", "task_index", "subtask_index", "source_row", "t_eval_ns"):
        features[name] = scalar("int64")
    return features


def _arrow_table(columns: dict[str, np.ndarray], features: dict):
    import pyarrow as pa
    arrays, names = [], []
    for name, values in columns.items():
        spec = features[name]
        item = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}[spec["dtype"]]
        if spec["shape"] == [1]:
            arrays.append(pa.array(values, type=item))
        else:
            flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=item)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, spec["shape"][0]))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _episode_row(shard: Shard, part: EpisodePart, episode_index: int, first_frame: int, where: dict,
                 state_valid: np.ndarray, part_stats: dict) -> dict:
    """The meta/episodes row of one LeRobot episode: lerobot's columns, then ours (docs/datasets.md)."""
    row = {"episode_index": episode_index, "tasks": [shard.task], "length": part.stop - part.start,
           "data/chunk_index": where["chunk_index"], "data/file_index": where["file_index"],
           "dataset_from_index": first_frame + part.start, "dataset_to_index": first_frame + part.stop,
           "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
    for key in CAMERAS:
        row.update({f"videos/{video_key(key)}/chunk_index": where["chunk_index"],
                    f"videos/{video_key(key)}/file_index": where["file_index"],
                    f"videos/{video_key(key)}/from_timestamp": part.start / shard.fps,
                    f"videos/{video_key(key)}/to_timestamp": part.stop / shard.fps})
    source_rows = shard.columns["source_row"]
    row.update({"source_episode": Path(shard.source).name, "source_name": shard.name,
                "source_from_row": int(source_rows[part.start]), "source_to_row": int(source_rows[part.stop - 1]) + 1,
                "operator": shard.attrs.get("operator", ""), "calibration_id": shard.attrs.get("calibration_id", ""),
                "valid_fraction": float(np.mean(state_valid[part.start:part.stop].all(axis=1))),
                "subtasks": [s["label"] for s in part.subtasks],
                "subtask_descriptions": [s["description"] for s in part.subtasks],
                "subtask_hands": [s["hand"] for s in part.subtasks],
                "subtask_from_frame": [s["from_frame"] for s in part.subtasks],
                "subtask_to_frame": [s["to_frame"] for s in part.subtasks]})
    row.update({f"stats/{name}/{k}": np.asarray(v).tolist() for name, s in part_stats.items() for k, v in s.items()})
    return row


def _chunk_file(number: int) -> dict:
    return {"chunk_index": number // CHUNKS_SIZE, "file_index": number % CHUNKS_SIZE}


def merge_shards(shards: list[Shard], out: str | Path) -> dict:
    """Write the dataset from its shards (any order; numbered by ``source_number``). Returns info.json."""
    import pandas as pd
    import pyarrow.parquet as pq
    out = Path(out)
    shards = sorted(shards, key=lambda s: s.source_number)
    if not shards:
        raise EpisodeFormatError("nothing to merge: every episode failed or none was given")
    fps = {round(s.fps) for s in shards}
    if len(fps) != 1:
        raise EpisodeFormatError(f"episodes synced at different rates {sorted(fps)} Hz cannot share one dataset")
    features = _features(shards[0])
    for shard in shards[1:]:  # one dataset, one shape per feature
        if shard.image_shapes != shards[0].image_shapes or shard.action_names != shards[0].action_names:
            raise EpisodeFormatError(f"{shard.source}: cameras {shard.image_shapes} or action names differ from "
                                     f"{shards[0].source} ({shards[0].image_shapes}); export episodes of one rig "
                                     f"setup to one dataset")
    tasks: dict[str, int] = {}
    subtasks: dict[str, int] = {NO_SUBTASK: 0}
    episodes, stats_parts = [], {name: [] for name in features}
    episode_index = frame_index = 0
    for shard in shards:
        task = tasks.setdefault(shard.task, len(tasks))
        local_to_global = np.array([subtasks.setdefault(n, len(subtasks)) for n in shard.subtask_names], np.int64)
        n = len(shard.columns["frame_index"])
        columns = dict(shard.columns)
        columns["subtask_index"] = local_to_global[columns["subtask_index"]]
        columns["episode_index"] = np.empty(n, np.int64)
        columns["index"] = np.arange(frame_index, frame_index + n, dtype=np.int64)
        columns["task_index"] = np.full(n, task, np.int64)
        where = _chunk_file(shard.source_number)
        for part_number, part in enumerate(shard.parts):
            columns["episode_index"][part.start:part.stop] = episode_index
            part_stats = {name: feature_stats(values[part.start:part.stop].reshape(part.stop - part.start, -1))
                          for name, values in columns.items()}
            for key in CAMERAS:
                part_stats[video_key(key)] = shard.image_stats[key][part_number]
            for name, s in part_stats.items():
                stats_parts[name].append(s)
            episodes.append(_episode_row(shard, part, episode_index, frame_index, where,
                                         columns["observation.state_valid"], part_stats))
            episode_index += 1
        data_path = out / DATA_PATH.format(**where)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_arrow_table({k: columns[k] for k in features if features[k]["dtype"] != "video"}, features),
                       data_path, compression="snappy")
        for key in CAMERAS:
            target = out / VIDEO_PATH.format(video_key=video_key(key), **where)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(shard.videos[key], target)
        frame_index += n
    (out / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(episodes).to_parquet(out / EPISODES_PATH)
    pd.DataFrame({"task_index": list(tasks.values())}, index=list(tasks)).to_parquet(out / "meta/tasks.parquet")
    pd.DataFrame({"subtask_index": list(subtasks.values())}, index=list(subtasks)).to_parquet(out / "meta/subtasks.parquet")
    stats = {name: aggregate_stats(parts) for name, parts in stats_parts.items() if parts}
    (out / "meta/stats.json").write_text(json.dumps(to_json(stats), indent=2))
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": ROBOT_TYPE, "total_episodes": episode_index,
            "total_frames": frame_index, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": fps.pop(),
            "splits": {"train": f"0:{episode_index}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "features": features, "capture_app_export_version": EXPORT_VERSION}
    (out / "meta/info.json").write_text(json.dumps(info, indent=2))
    return info
