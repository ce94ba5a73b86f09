"""What each stream kind may carry, and the check every bus message passes before it is used.

A message either fits its stream's schema and is plausible, and is then stored whole and
used, or it is rejected whole with a short reason, counted per stream (``rejected``). Nothing
here does I/O or reads a clock: the caller gives the receive time. Documented in
docs/protocol.md ("Buffers per stream kind", "What a receiver refuses").

Plausibility: a capture time more than ``future_limit_ns`` after its receive time, or more
than ``past_limit_ns`` before it, is an outlier; so is a sequence number that jumps by more
than ``max_seq_jump`` from the last accepted one of the same sender. Outliers are rejected
and never become the stream's new reference, so one bad message cannot silence a stream.
A sequence number or capture time that does not increase is rejected as well (the episode
file requires both to increase within a sender). A new sender (a restarted driver) takes a
stream over only once the current one has been silent for ``takeover_silence_ns``; while both
publish, the newcomer is rejected, and a replaced sender is never accepted again. When a sender keeps sending consistent
"jumped" sequence numbers (``readopt_after`` in a row, each +1 from the previous outlier),
the jump was real (a device renumbered) and the new numbering is adopted, counted as a gap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from capture_app.bus import Message
from capture_app.streams import STREAM_KINDS
from capture_app.video_codec import is_annex_b


@dataclass(frozen=True)
class BufferSpec:
    """One buffer: dtype string, shape (None = any size, fixed per stream by its first sample),
    encodings allowed; an optional buffer is filled with ``fill`` in the file when absent."""

    dtype: str
    shape: tuple
    encodings: tuple = ("raw",)
    optional: bool = False
    fill: float = float("nan")


_POSE = BufferSpec("<f8", (7,))
_IMAGE = BufferSpec("|u1", (None, None, 3), ("raw", "jpeg", "h264"))
SCHEMAS: dict[str, dict[str, BufferSpec]] = {
    "pose": {"pose": _POSE},
    "keypoints": {"keypoints": BufferSpec("<f4", (25, 3)), "wrist_quat": BufferSpec("<f8", (4,), optional=True)},
    "image": {"color": _IMAGE},
    "rgbd": {"color": _IMAGE, "depth": BufferSpec("<u2", (None, None))},
    "truth": {"world_cam": _POSE, "world_left_wrist": _POSE, "world_right_wrist": _POSE,
              "left_keypoints": BufferSpec("<f8", (25, 3)), "right_keypoints": BufferSpec("<f8", (25, 3))},
}
META_NUMBERS = {"depth_scale_m": (1e-6, 1.0), "depth_dt_ms": (-1000.0, 1000.0)}
JPEG_MAGIC = b"\xff\xd8"


@dataclass(frozen=True)
class Plausibility:
    future_limit_ns: int = 5_000_000_000     # capture stamped more than this after its receive time
    past_limit_ns: int = 120_000_000_000     # or more than this before it
    max_seq_jump: int = 100_000
    readopt_after: int = 50
    takeover_silence_ns: int = 300_000_000   # a new sender replaces the current one only after this silence


@dataclass
class _StreamState:
    sender: int | None = None
    last_receive: int = 0
    last_seq: int | None = None
    last_t: int | None = None
    retired: set = field(default_factory=set)   # senders replaced by a newer one (a restarted driver)
    shapes: dict = field(default_factory=dict)  # buffer -> shape fixed by the first accepted sample
    encodings: dict = field(default_factory=dict)  # buffer -> encoding fixed by the first sample that fits
    outlier_seq: int | None = None
    outlier_run: int = 0


class MessageCheck:
    """Checks messages against the schema of their stream kind and against the stream's history.
    ``check`` returns None for an accepted message, else the reason; ``rejected`` counts
    (stream, reason). Use from one thread (the dispatcher)."""

    def __init__(self, streams, limits: Plausibility | None = None):
        self.kinds = {s: STREAM_KINDS.get(s, "unknown") for s in streams}
        self.limits = limits or Plausibility()
        self.rejected: Counter = Counter()
        self.readopted: Counter = Counter()
        self._state = {s: _StreamState() for s in streams}

    def check(self, message: Message) -> str | None:
        reason = self._schema_problem(message) or self._history_problem(message)
        if reason is not None:
            self.rejected[(message.stream, reason)] += 1
        return reason

    def rejected_by_stream(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (stream, reason), n in self.rejected.items():
            out.setdefault(stream, {})[reason] = n
        return out

    # --- the message alone ---------------------------------------------------------------
    def _schema_problem(self, m: Message) -> str | None:
        schema = SCHEMAS.get(self.kinds.get(m.stream, ""))
        if schema is None:
            return "unknown-stream"
        names = set(m.arrays)
        required = {n for n, spec in schema.items() if not spec.optional}
        if not required <= names:
            return f"missing-buffer:{','.join(sorted(required - names))}"
        if not names <= set(schema):
            return f"unknown-buffer:{','.join(sorted(names - set(schema)))}"
        state = self._state[m.stream]
        for name, array in m.arrays.items():
            spec = schema[name]
            encoding = m.encodings.get(name, "raw")
            if encoding not in spec.encodings:
                return f"encoding:{name}"
            shape = tuple(m.shapes.get(name, array.shape))
            if encoding == "raw" and array.dtype.str != spec.dtype:
                return f"dtype:{name}"
            if encoding == "jpeg" and (array.nbytes < 4 or bytes(array[:2]) != JPEG_MAGIC):
                return f"not-jpeg:{name}"
            if encoding == "h264" and (array.nbytes < 5 or not is_annex_b(array)):
                return f"not-h264:{name}"
            if encoding == "h264" and not isinstance(m.meta.get("keyframe"), bool):
                return "meta:keyframe"
            if encoding == "h264" and (isinstance(m.meta.get("packet"), bool) or not isinstance(m.meta.get("packet"), int)
                                       or not 0 <= m.meta["packet"] < 2 ** 63):
                return "meta:packet"
            if state.encodings.get(name, encoding) != encoding:
                return f"encoding-changed:{name}"
            if len(shape) != len(spec.shape) or any(want is not None and got != want
                                                     for got, want in zip(shape, spec.shape)):
                return f"shape:{name}"
            fixed = state.shapes.get(name)
            if fixed is not None and fixed != shape:
                return f"shape-changed:{name}"
            if encoding == "raw" and array.dtype.kind == "f" and array.size == 0:
                return f"shape:{name}"
        for key, (low, high) in META_NUMBERS.items():
            value = m.meta.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not low <= value <= high):
                return f"meta:{key}"
        return None

    # --- the message against its stream's history ---------------------------------------------
    def _history_problem(self, m: Message) -> str | None:
        state = self._state[m.stream]
        limits = self.limits
        if m.t_capture_ns - m.t_receive_ns > limits.future_limit_ns:
            return "future-stamp"
        if m.t_receive_ns - m.t_capture_ns > limits.past_limit_ns:
            return "stale-stamp"
        if m.sender in state.retired:
            return "retired-sender"
        new_sender = state.sender is not None and m.sender != state.sender
        if new_sender and m.t_receive_ns - state.last_receive < limits.takeover_silence_ns:
            return "competing-sender"  # the stream's sender is alive: a second publisher is not a restart
        if not new_sender and state.last_seq is not None:
            if m.seq <= state.last_seq:
                return "seq-backwards"
            if m.seq - state.last_seq > limits.max_seq_jump and not self._readopt(state, m.seq):
                return "seq-jump"
        if state.last_t is not None and m.t_capture_ns <= state.last_t:
            return "time-backwards"
        if new_sender:
            state.retired.add(state.sender)
        state.sender, state.last_seq, state.last_t, state.last_receive = m.sender, m.seq, m.t_capture_ns, m.t_receive_ns
        state.outlier_seq, state.outlier_run = None, 0
        for name, array in m.arrays.items():
            state.shapes.setdefault(name, tuple(m.shapes.get(name, array.shape)))
            state.encodings.setdefault(name, m.encodings.get(name, "raw"))
        return None

    def _readopt(self, state: _StreamState, seq: int) -> bool:
        """True once ``readopt_after`` consecutive outliers count on from each other (a real renumbering)."""
        state.outlier_run = state.outlier_run + 1 if state.outlier_seq is not None and seq == state.outlier_seq + 1 else 1
        state.outlier_seq = seq
        if state.outlier_run >= self.limits.readopt_after:
            self.readopted[state.sender] += 1
            return True
        return False


def fill_optional(stream_kind: str, message: Message) -> None:
    """Complete an accepted message in place: every optional buffer of its kind absent from it is added,
    filled with the spec's ``fill``, with its encoding ("raw") and shape, so every row of a stream has the
    same columns. The one place this is done; the writer relies on it (docs/protocol.md)."""
    schema = SCHEMAS.get(stream_kind, {})
    missing = {n: s for n, s in schema.items() if s.optional and n not in message.arrays}
    if not missing:
        return
    arrays, encodings, shapes = dict(message.arrays), dict(message.encodings), dict(message.shapes)
    for name, spec in missing.items():
        arrays[name] = np.full(spec.shape, spec.fill, dtype=np.dtype(spec.dtype))
        encodings[name] = "raw"
        shapes[name] = tuple(spec.shape)
    message.arrays, message.encodings, message.shapes = arrays, encodings, shapes
