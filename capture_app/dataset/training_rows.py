"""What an episode gives a training set: its final synced table, camera frame rows and subtasks,
read from the HDF5 file (docs/episode-format.md). Read-only; images are decoded on demand."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from capture_app.episode.file import open_episode
from capture_app.core.errors import EpisodeFormatError
from capture_app.episode.frames import FrameReader

CAMERAS = {"ego": "ego_camera", "top": "top_camera"}  # training-set key -> stream


@dataclass
class Subtask:
    label: str
    description: str
    hand: str
    start_row: int
    end_row: int  # inclusive; -1: open to the last row


@dataclass
class TrainingRows:
    """One episode's final table (T rows at ``rate_hz``) and what goes with it."""
    path: str
    name: str
    rate_hz: float
    t_eval_ns: np.ndarray            # (T,) host monotonic ns
    action: np.ndarray               # (T, 48) float64, NaN where invalid
    action_valid: np.ndarray         # (T, 4) bool
    action_names: list[str]
    valid_names: list[str]
    image_rows: dict[str, np.ndarray]  # camera key -> (T,) row in /streams/<stream>/color, -1 where none
    image_shapes: dict[str, tuple[int, int, int]]
    subtasks: list[Subtask]
    attrs: dict = field(default_factory=dict)  # instruction, task, operator, calibration_id, status...

    @property
    def task(self) -> str:
        """The language instruction (the task name when there is none)."""
        return self.attrs.get("instruction") or self.attrs.get("task") or ""


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_training_rows(path: str | Path) -> TrainingRows:
    """The training view of an episode. Refuses a file without a final table (run ``capture-app resync``)."""
    path = str(path)
    with open_episode(path) as f:
        if "synced" not in f or f["synced"].attrs.get("table", "live") != "final":
            raise EpisodeFormatError(f"{path}: no final synced table (an interrupted or recovered episode); "
                                     f"run `capture-app resync {path}` first")
        synced = f["synced"]
        streams = json.loads(synced.attrs["streams"])
        stream_index = synced["stream_index"][:]
        image_rows, shapes = {}, {}
        for key, stream in CAMERAS.items():
            if stream in streams and f"streams/{stream}/color" in f:
                image_rows[key] = stream_index[:, streams.index(stream)]
                shapes[key] = tuple(int(v) for v in f[f"streams/{stream}"].attrs["color_shape"])
        subtasks = []
        if "annotations/subtasks/label" in f:
            g = f["annotations/subtasks"]
            for label, description, hand, a, b in zip(g["label"][:], g["description"][:], g["hand"][:],
                                                      g["start_tick"][:], g["end_tick"][:]):
                subtasks.append(Subtask(_text(label), _text(description), _text(hand), int(a), int(b)))
        attrs = {k: _text(v) if isinstance(v, (bytes, str)) else v.item() if hasattr(v, "item") else v
                 for k, v in f.attrs.items() if k in ("instruction", "task", "operator", "episode_name", "status",
                                                      "outcome", "format_version", "simulated")}
        attrs["calibration_id"] = _text(f["calibration"].attrs.get("calibration_id", "")) if "calibration" in f else ""
        return TrainingRows(
            path=path, name=attrs.get("episode_name") or Path(path).stem, rate_hz=float(synced.attrs["rate_hz"]),
            t_eval_ns=synced["t_eval_ns"][:], action=synced["action"][:], action_valid=synced["action_valid"][:],
            action_names=json.loads(synced.attrs["action_names"]),
            valid_names=json.loads(synced.attrs["action_valid_names"]),
            image_rows=image_rows, image_shapes=shapes, subtasks=subtasks, attrs=attrs)


class ImageReader:
    """Decodes colour frames of an episode by stream row (JPEG or H.264 -> RGB uint8), keeping the file open."""

    def __init__(self, path: str):
        self.path = path
        self._file = open_episode(path)
        self._readers: dict[str, FrameReader] = {}

    @property
    def file(self):
        """The open episode file (h5py.File), read-only."""
        return self._file

    def frame(self, key: str, row: int) -> np.ndarray:
        reader = self._readers.get(key)
        if reader is None:
            reader = self._readers[key] = FrameReader(self._file, CAMERAS[key])
        image = reader.frame(row)
        if image is None:
            raise ValueError(f"{self.path}: {CAMERAS[key]} row {row} cannot be decoded (a video frame whose "
                             f"keyframe or a frame before it is missing); `capture-app inspect` lists such rows")
        return image

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
