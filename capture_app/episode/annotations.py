"""Subtask annotation: a pure model of marks made while recording, and its place in the file.

An annotator picks a label (a number key) to start a subtask, ends it, or undoes the
last mark. Starting a subtask ends the one that is open. Times are host monotonic ns
of what the annotator saw (the displayed tick's ``t_eval``).

In the episode file: ``/annotations/subtasks`` with one row per segment: ``label``,
``description`` (hand-level, e.g. "use right hand to pour the juice"), ``hand``
(left / right / both), ``start_ns``, ``end_ns`` (-1 while open), ``start_tick``,
``end_tick`` (row indices into /synced: the first row with t_eval >= start, the last
with t_eval < end).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import h5py
import numpy as np

GROUP = "annotations/subtasks"
OPEN = -1


@dataclass(frozen=True)
class Segment:
    label: str
    description: str
    hand: str
    start_ns: int
    end_ns: int = OPEN

    @property
    def is_open(self) -> bool:
        return self.end_ns == OPEN


class Annotator:
    """The marks of one episode. Every operation is reversible with ``undo``."""

    def __init__(self):
        self._history: list[list[Segment]] = []
        self.segments: list[Segment] = []

    def _push(self) -> None:
        self._history.append(list(self.segments))

    def start(self, label: str, t_ns: int, description: str = "", hand: str = "both") -> Segment:
        """Start a subtask at ``t_ns``, ending the open one there."""
        self._push()
        self._close_open(t_ns)
        segment = Segment(label, description, hand, int(t_ns))
        self.segments.append(segment)
        return segment

    def end(self, t_ns: int) -> Segment | None:
        """End the open subtask at ``t_ns``; None if none is open."""
        if not self.segments or not self.segments[-1].is_open:
            return None
        self._push()
        self._close_open(t_ns)
        return self.segments[-1]

    def undo(self) -> bool:
        """Take back the last start or end; False when there is nothing to undo."""
        if not self._history:
            return False
        self.segments = self._history.pop()
        return True

    def _close_open(self, t_ns: int) -> None:
        if self.segments and self.segments[-1].is_open:
            last = self.segments[-1]
            self.segments[-1] = replace(last, end_ns=max(int(t_ns), last.start_ns))

    @property
    def current(self) -> Segment | None:
        return self.segments[-1] if self.segments and self.segments[-1].is_open else None

    def finished(self, t_end_ns: int) -> list[Segment]:
        """The segments with any open one ended at ``t_end_ns``."""
        return [replace(s, end_ns=t_end_ns) if s.is_open else s for s in self.segments]


def write_segments(f: h5py.File, segments: list[Segment]) -> None:
    """Replace /annotations/subtasks in an open episode; tick indices from /synced/t_eval_ns."""
    if GROUP in f:
        del f[GROUP]
    group = f.require_group(GROUP)
    t_eval = f["synced/t_eval_ns"][:] if "synced/t_eval_ns" in f else np.zeros(0, np.int64)
    text = h5py.string_dtype()
    group.create_dataset("label", data=np.array([s.label for s in segments], dtype=object), dtype=text)
    group.create_dataset("description", data=np.array([s.description for s in segments], dtype=object), dtype=text)
    group.create_dataset("hand", data=np.array([s.hand for s in segments], dtype=object), dtype=text)
    starts = np.array([s.start_ns for s in segments], np.int64)
    ends = np.array([s.end_ns for s in segments], np.int64)
    group.create_dataset("start_ns", data=starts)
    group.create_dataset("end_ns", data=ends)
    group.create_dataset("start_tick", data=np.searchsorted(t_eval, starts, side="left").astype(np.int64))
    end_tick = np.where(ends >= 0, np.searchsorted(t_eval, ends, side="left") - 1, -1).astype(np.int64)
    group.create_dataset("end_tick", data=end_tick)
    group.attrs["version"] = 1


def read_segments(f: h5py.File) -> list[Segment]:
    """The segments stored in an open episode (empty when there are none)."""
    if GROUP not in f:
        return []
    g = f[GROUP]
    def text(name):
        return [v.decode() if isinstance(v, bytes) else str(v) for v in g[name][:]]
    return [Segment(label, description, hand, int(start), int(end)) for label, description, hand, start, end
            in zip(text("label"), text("description"), text("hand"), g["start_ns"][:], g["end_ns"][:])]
