"""What the drift watch is handed, and what it keeps: bounded per-stream inboxes and numpy time series.

``Inbox.offer`` is the intake listener's whole work on the bus thread: one dict lookup, one length test, one
deque append (a batch the intake accepted whole comes as one ``SampleBlock``). Each stream's inbox holds at most ``bound`` messages (about 10 s of a pose stream, 2 s of ego
frames); when the drift watch's thread falls that far behind, newer messages are shed, counted per stream
(``shed``) and reported in its summary, never silently dropped. The thread takes each inbox whole (``take``)
and turns the messages into arrays in one pass (``stack``), so no per-sample numpy work happens anywhere.

``Series`` keeps recent (t_s, value) samples of one stream in numpy arrays, added in batches; ``sampled_at``
interpolates a series of orientations or poses at given instants, and says which of them its samples cover.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from capture_app.bus.message import SampleBlock
from capture_app.core.geometry import make_transform, quat_to_matrix
from capture_app.core.rotation_series import QuatTrack

MAX_SAMPLE_GAP_S = 0.1  # a pose or IMU orientation is not interpolated across a longer gap (tracking lost)


class Inbox:
    """Bounded per-stream sample queues. ``bounds``: stream -> the most samples it holds; ``min_gap_ns``:
    stream -> queue a sample only this long (capture stamps, ns) after the last queued one (the ego frames the
    drift watch analyses; the others are not wanted, so not shed). A ``SampleBlock`` (a batch the intake accepted
    whole) is queued whole and counts its ``n`` samples."""

    def __init__(self, bounds: dict[str, int], min_gap_ns: dict[str, int] | None = None):
        gaps = min_gap_ns or {}
        self._streams = {stream: (deque(), int(bound), int(gaps.get(stream, 0))) for stream, bound in bounds.items()}
        self._last_ns = {stream: -(1 << 62) for stream in bounds}
        self._offered = {stream: 0 for stream in bounds}  # samples queued (written by the bus thread only)
        self._taken = {stream: 0 for stream in bounds}    # samples taken (written by the drift thread only)
        self.shed = {stream: 0 for stream in bounds}  # samples refused because the inbox was full

    def offer(self, item) -> None:
        """Queue one message or SampleBlock (the bus thread; never blocks, never raises for an unknown stream)."""
        entry = self._streams.get(item.stream)
        if entry is None:
            return
        queue, bound, gap = entry
        if isinstance(item, SampleBlock):
            if gap:  # decimated streams are taken sample by sample
                for message in item.messages():
                    self.offer(message)
                return
            n = item.n
        else:
            n = 1
            if gap:
                if 0 <= item.t_capture_ns - self._last_ns[item.stream] < gap:
                    return
                self._last_ns[item.stream] = item.t_capture_ns
        if self._offered[item.stream] - self._taken[item.stream] + n <= bound:
            queue.append(item)
            self._offered[item.stream] += n
        else:
            self.shed[item.stream] += n

    def take(self, stream: str) -> list:
        """Every message or SampleBlock waiting for ``stream``, oldest first (the drift watch's thread)."""
        queue = self._streams[stream][0]
        items = [queue.popleft() for _ in range(len(queue))]
        self._taken[stream] += sum(item.n if isinstance(item, SampleBlock) else 1 for item in items)
        return items

    def waiting(self) -> int:
        """Samples queued and not yet taken."""
        return sum(self._offered[s] - self._taken[s] for s in self._streams)

    def total_shed(self) -> int:
        return sum(self.shed.values())


def stack(items: list, field: str, offset_ns: int, width: int,
          tracked: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(t_s (n,), values (n, width)) of the items' ``field`` at their capture stamps minus ``offset_ns``, in the
    items' order; items are messages or SampleBlocks. Only samples whose field is a finite vector of ``width``
    and, with ``tracked``, that track ``ok`` (others are skipped, not errors: a lost tracker, an absent IMU).
    Consecutive SampleBlocks are converted together (a pass takes ~20 batches of a stream), as are
    consecutive single messages."""
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    run: list = []  # consecutive items of one kind (messages, or SampleBlocks), converted together
    for item in items:
        if run and isinstance(item, SampleBlock) != isinstance(run[0], SampleBlock):
            parts.append(_stack_run(run, field, width, tracked))
            run = []
        run.append(item)
    if run:
        parts.append(_stack_run(run, field, width, tracked))
    if not parts:
        return np.zeros(0), np.zeros((0, width))
    t_ns = np.concatenate([t for t, _ in parts]) if len(parts) > 1 else parts[0][0]
    v = np.concatenate([v for _, v in parts]) if len(parts) > 1 else parts[0][1]
    finite = np.all(np.isfinite(v), axis=1)
    return (t_ns[finite] - offset_ns) / 1e9, v[finite]


def _stack_run(run: list, field: str, width: int, tracked: bool) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(run[0], SampleBlock):
        return _stack_blocks(run, field, width, tracked)
    return _stack_messages(run, field, width, tracked)


def _stack_blocks(blocks: list, field: str, width: int, tracked: bool) -> tuple[np.ndarray, np.ndarray]:
    kept = [b for b in blocks if b.arrays.get(field) is not None and b.arrays[field].shape == (b.n, width)]
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros((0, width))
    t_ns = np.concatenate([np.asarray(b.t_capture_ns, dtype=np.int64) for b in kept])
    values = np.concatenate([b.arrays[field] for b in kept]).astype(float, copy=False)
    if tracked:
        ok = np.array([state == "ok" for b in kept for state in b.tracking], dtype=bool)
        return t_ns[ok], values[ok]
    return t_ns, values


def _stack_messages(messages: list, field: str, width: int, tracked: bool) -> tuple[np.ndarray, np.ndarray]:
    kept = [m for m in messages if m.arrays.get(field) is not None and (not tracked or m.tracking == "ok")]
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros((0, width))
    try:  # the intake checked each message's schema: one conversion of the lot
        v = np.array([m.arrays[field] for m in kept], dtype=float)
    except ValueError:
        v = None
    if v is None or v.shape != (len(kept), width):  # a shape the schema let through: keep the right ones
        kept = [m for m in kept if np.shape(m.arrays[field]) == (width,)]
        v = np.array([m.arrays[field] for m in kept], dtype=float).reshape(len(kept), width)
    t_ns = np.fromiter((m.t_capture_ns for m in kept), dtype=np.int64, count=len(kept))
    return t_ns, v


class Series:
    """Recent (t_s, value) samples of one stream in numpy arrays, at most ``seconds`` long (values of one shape)."""

    def __init__(self, seconds: float, shape: tuple, capacity: int = 8192):
        self.seconds = seconds
        self._t = np.zeros(capacity)
        self._v = np.zeros((capacity,) + shape)
        self._n = 0

    @property
    def last_t(self) -> float | None:
        return float(self._t[self._n - 1]) if self._n else None

    def add_many(self, t_s: np.ndarray, values: np.ndarray) -> None:
        """Append samples (times increasing); a time not after every earlier one (a repeat, out of order) is
        skipped."""
        t_s = np.asarray(t_s, dtype=float)
        if len(t_s) == 0:
            return
        previous = np.concatenate([[self._t[self._n - 1] if self._n else -np.inf], t_s[:-1]])
        keep = t_s > np.maximum.accumulate(previous)
        t_s, values = t_s[keep], np.asarray(values)[keep]
        k = len(t_s)
        if self._n + k > len(self._t):  # full: keep the recent part (or grow when all of it is recent)
            first = int(np.searchsorted(self._t[:self._n], t_s[-1] - self.seconds))
            self._n -= first
            self._t[:self._n] = self._t[first:first + self._n]
            self._v[:self._n] = self._v[first:first + self._n]
            while self._n + k > len(self._t):
                self._t = np.concatenate([self._t, np.zeros_like(self._t)])
                self._v = np.concatenate([self._v, np.zeros_like(self._v)])
        self._t[self._n:self._n + k] = t_s
        self._v[self._n:self._n + k] = values
        self._n += k

    def add(self, t_s: float, value) -> None:
        self.add_many(np.array([t_s]), np.asarray(value)[None])

    def arrays(self, since: float = -np.inf, until: float = np.inf):
        """(times, values) with since <= t <= until (views: copy before keeping them)."""
        t = self._t[:self._n]
        a, b = np.searchsorted(t, since, side="left"), np.searchsorted(t, until, side="right")
        return t[a:b], self._v[a:b]


def sampled_at(series: Series, t_s: np.ndarray, with_position: bool = False):
    """(rotations (n, 3, 3) at ``t_s`` of a series of wxyz quaternions (n, 4) or of poses (n, 7: xyz, wxyz) or,
    ``with_position``, its poses (n, 4, 4); covered (n,) bool: the instants between two of its samples at most
    ``MAX_SAMPLE_GAP_S`` apart, the only ones to use). (None, covered) when none is covered."""
    t, values = series.arrays(since=float(np.min(t_s)) - 0.1, until=float(np.max(t_s)) + 0.1)
    if len(t) < 2:
        return None, np.zeros(len(t_s), bool)
    i = np.clip(np.searchsorted(t, t_s), 1, len(t) - 1)
    covered = (t_s >= t[0]) & (t_s <= t[-1]) & (t[i] - t[i - 1] <= MAX_SAMPLE_GAP_S)
    if not covered.any():
        return None, covered
    R = quat_to_matrix(QuatTrack(t, values[:, -4:]).at(t_s))
    if not with_position:
        return R, covered
    return make_transform(R, np.stack([np.interp(t_s, t, values[:, k]) for k in range(3)], axis=-1)), covered
