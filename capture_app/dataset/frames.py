"""Pure frame selection for training sets: which synced rows become frames, held values for
invalid parts, and the subtask of each row. No I/O.

A frame at synced row r carries ``observation.state = action[r]`` and ``action = action[r + 1]``
(the unified action of the next tick is what the policy must produce), so the last row of an
episode has no frame.
"""

from __future__ import annotations

import numpy as np

from capture_app.core.action_space import PART_COLUMNS


def hold_invalid(action: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``action`` (T, 48) with each part's invalid rows replaced by that part's last valid value (the
    first valid one before it has been seen; zeros for a part never valid). ``valid`` is (T, 4)."""
    out = np.array(action, dtype=np.float64, copy=True)
    rows = np.arange(len(out))
    for part, columns in enumerate(PART_COLUMNS):
        ok = valid[:, part] & np.isfinite(out[:, columns]).all(axis=1)
        if not ok.any():
            out[:, columns] = 0.0
            continue
        last_valid = np.maximum.accumulate(np.where(ok, rows, -1))
        source = np.where(last_valid >= 0, last_valid, int(np.argmax(ok)))
        out[:, columns] = out[source, columns]
    return out


def fill_missing_rows(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the image row to show: ``index`` (T,) with -1 where no frame exists becomes the
    previous existing one (the next one at the start; -1 stays only when there is none at all).
    Returns (filled, present)."""
    present = index >= 0
    if not present.any():
        return index.copy(), present
    rows = np.arange(len(index))
    last = np.maximum.accumulate(np.where(present, rows, -1))
    source = np.where(last >= 0, last, int(np.argmax(present)))
    return index[source], present


def frame_runs(usable: np.ndarray, mode: str, min_frames: int) -> list[tuple[int, int]]:
    """The frame ranges [start, stop) of synced rows to export. ``usable`` (T,) says per row whether
    the row and the next one are fully valid; the last row is never a frame. ``keep``: one range of
    every row; ``split`` (and ``drop``, whose caller passes a different ``usable``): each run of usable rows
    at least ``min_frames`` long."""
    frames = len(usable) - 1
    if frames <= 0:
        return []
    if mode == "keep":
        return [(0, frames)]
    if mode not in ("split", "drop"):
        raise ValueError(f"invalid-row mode {mode!r}: use keep, split or drop")
    ok = np.concatenate([[False], usable[:frames], [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(ok))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_frames]


def row_subtasks(start_tick: np.ndarray, end_tick: np.ndarray, rows: int) -> np.ndarray:
    """Per synced row, the index of the segment it lies in (-1 outside every segment). A segment covers
    rows start_tick..end_tick inclusive; an end of -1 (left open) runs to the last row."""
    owner = np.full(rows, -1, np.int64)
    for k, (a, b) in enumerate(zip(start_tick, end_tick)):
        b = rows - 1 if b < 0 else b
        owner[max(int(a), 0):max(int(b) + 1, 0)] = k
    return owner


def sample_frames(parts: list[tuple[int, int]], per_part: int) -> list[np.ndarray]:
    """Per part [start, stop), up to ``per_part`` frame indices spread evenly over it (every part gets at
    least one; for the image statistics)."""
    return [np.unique(np.linspace(a, b - 1, min(per_part, b - a)).round().astype(np.int64)) for a, b in parts]
