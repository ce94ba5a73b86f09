"""Reading a recorded episode for review: per-tick view states and its subtask segments."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from capture_app.episode.annotations import Segment, read_segments, write_segments
from capture_app.core.geometry import pose_to_transform
from capture_app.core.clock import now_ns
from capture_app.episode.file import open_episode
from capture_app.core.errors import EpisodeFormatError
from capture_app.core.interpolation import STATUS_NAMES
from capture_app.episode.frames import FrameReader
from capture_app.monitor.overlay import HANDS, ViewState, hand_validity, wrist_transform_from_action


def _pose(row: np.ndarray) -> np.ndarray | None:
    return None if np.isnan(row).any() else pose_to_transform(row)


class EpisodeReview:
    """A read-only view of one episode, by synced tick; ``save_segments`` rewrites its annotations."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._open()

    def _open(self) -> None:
        self.file = open_episode(self.path)
        self._readers: dict[str, FrameReader] = {}
        if "synced/t_tick_ns" not in self.file:
            self.file.close()
            raise EpisodeFormatError(f"{self.path} has no synced table to review (too short, or interrupted "
                                     f"before its first tick)")
        synced = self.file["synced"]
        self.ticks = len(synced["t_tick_ns"])
        self.streams = json.loads(synced.attrs["streams"])
        self.t_eval = synced["t_eval_ns"][:]
        self.t0_ns = int(self.file.attrs.get("start_monotonic_ns", self.t_eval[0] if self.ticks else 0))
        self.t_end_ns = int(self.file.attrs.get("end_monotonic_ns", self.t_eval[-1] if self.ticks else 0))
        self.segments: list[Segment] = read_segments(self.file)
        attrs = self.file.attrs
        self.task, self.instruction, self.operator = (str(attrs.get(k, "")) for k in ("task", "instruction", "operator"))

    def close(self) -> None:
        self.file.close()

    def _frame(self, stream: str, row: int, column: str):
        if row < 0 or f"streams/{stream}/{column}" not in self.file:
            return None
        if column != "color":
            return self.file[f"streams/{stream}/{column}"][row]
        reader = self._readers.get(stream)
        if reader is None:  # one per stream: stepping through ticks decodes each video frame once
            reader = self._readers[stream] = FrameReader(self.file, stream)
        return reader.frame(row)

    def state(self, i: int) -> ViewState:
        """The view state of synced row ``i``."""
        s = self.file["synced"]
        action = s["action"][i]
        keypoints = s["keypoints"][i]
        index = s["stream_index"][i] if "stream_index" in s else np.full(len(self.streams), -1)
        ego_row = int(index[self.streams.index("ego_camera")])
        top_row = int(index[self.streams.index("top_camera")])
        return ViewState(
            t_ns=int(self.t_eval[i]),
            ego_image=self._frame("ego_camera", ego_row, "color"),
            top_image=self._frame("top_camera", top_row, "color"),
            top_depth=self._frame("top_camera", top_row, "depth"),
            T_cam_wrist={h: wrist_transform_from_action(action, h) for h in HANDS},
            keypoints={h: None if np.isnan(keypoints[j]).any() else keypoints[j] for j, h in enumerate(HANDS)},
            T_world_cam=_pose(s["T_world_cam"][i]),
            T_world_wrist={h: _pose(s[f"T_world_{h}_wrist"][i]) for h in HANDS},
            stream_status={name: int(v) for name, v in zip(self.streams, s["stream_status"][i])},
            hand_valid=hand_validity(s["action_valid"][i]) if "action_valid" in s else {h: True for h in HANDS})

    def stream_states(self, i: int) -> dict[str, str]:
        """Each stream's recorded interpolation status at synced row ``i`` (the file's own per-tick status)."""
        return {name: STATUS_NAMES[int(v)] for name, v in zip(self.streams, self.file["synced/stream_status"][i])}

    def save_segments(self, segments: list[Segment], edits: list[str] = ()) -> None:
        """Write edited segments back into the episode file, and each edit as an event in /events."""
        self.file.close()
        try:
            with open_episode(self.path, "r+") as f:
                write_segments(f, segments)
                append_events(f, [(now_ns(), "info", "review", f"edited in review: {e}") for e in edits])
        finally:
            self._open()


def append_events(f: h5py.File, events: list[tuple[int, str, str, str]]) -> None:
    """Append (t_ns, level, source, message) rows to /events of an open episode."""
    if not events:
        return
    group = f["events"]
    n = len(group["t_ns"])
    for name, values in zip(("t_ns", "level", "source", "message"), zip(*events)):
        dataset = group[name]
        dataset.resize((n + len(events),))
        dataset[n:] = np.array(values, dtype=np.int64 if name == "t_ns" else object)
