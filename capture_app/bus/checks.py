"""What each stream kind may carry, and the check every bus message passes before it is used.

A message either fits its stream's schema and is plausible, and is then stored whole and
used, or it is rejected whole with a short reason, counted per stream (``rejected``). Nothing
here does I/O or reads a clock: the caller gives the receive time. Documented in
docs/protocol.md ("Buffers per stream kind", "What a receiver refuses").

Plausibility: a capture time more than ``future_limit_ns`` after its receive time, or more
than ``past_limit_ns`` before it, is an outlier. Against the stream's reference (its last accepted
sample) a sample is also an outlier when it is plausible alone but not after the reference: a
sequence number that skips more samples than the stream could have produced since (more than
``seq_slack`` + ``seq_rate_factor`` x its expected rate x the receive time elapsed; ``max_seq_jump``
for a stream without a rate), or a capture time in the future of its receive time that advanced more
than ``time_jump_ns`` beyond the receive time's advance. Outliers are refused and never become the
reference, so one bad message cannot silence a stream; when ``readopt_after`` outliers in a row are
consistent with each other (each would pass these rules with the previous one as the reference),
the jump was real (a device renumbered, a clock stepped) and the last of them becomes the reference.
A sequence number or capture time that does not increase is refused as well (the episode file
requires both to increase within a sender).

Senders: a stream's sender changes only when the current one is gone, seen from its own messages:
its driver's ``_status`` (same ``sender`` id) says ``stopped`` or ``failed``, the process that
published it exited (``note_gone``, for the app's own driver processes), or nothing of it
(sample or status) arrived for ``takeover_silence_ns`` before a moment the dispatcher had read
everything waiting (``note_idle``), so a loaded dispatcher's receive gap is not silence. Until then a
second sender is refused (``competing-sender``); a replaced sender is never accepted again. Every
change is counted (``sender_changes``) and queued for the episode's events (``take_sender_changes``).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from capture_app.bus.message import Message, SampleBlock
from capture_app.core.streams import STREAM_KINDS
from capture_app.episode.video_codec import is_annex_b


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
    max_seq_jump: int = 100_000              # samples skipped, for a stream without an expected rate
    seq_slack: int = 256                     # samples skipped beyond what the rate allows
    seq_rate_factor: float = 2.0             # times the expected rate x receive time elapsed
    time_jump_ns: int = 500_000_000          # a future stamp's advance beyond the receive time's advance
    readopt_after: int = 50
    takeover_silence_ns: int = 2_000_000_000  # the current sender unheard this long (4 missed statuses): gone


GONE_STATES = ("stopped", "failed")  # a driver status that ends its sender's hold on its streams


@dataclass
class _StreamState:
    sender: int | None = None
    last_receive: int = 0   # of the last accepted sample
    last_heard: int = 0     # of the last message of the current sender, accepted or not, or its status
    gone: bool = False      # the current sender's driver said it stopped or failed
    last_seq: int | None = None
    last_t: int | None = None
    retired: set = field(default_factory=set)   # senders replaced by a newer one (a restarted driver)
    shapes: dict = field(default_factory=dict)  # buffer -> shape fixed by the first accepted sample
    encodings: dict = field(default_factory=dict)  # buffer -> encoding fixed by the first sample that fits
    outlier: tuple | None = None  # (seq, t_capture_ns, t_receive_ns) of the last outlier in a row
    outlier_run: int = 0


class MessageCheck:
    """Checks messages against the schema of their stream kind and against the stream's history.
    ``check`` returns None for an accepted message, else the reason; ``rejected`` counts
    (stream, reason). Use from one thread (the dispatcher)."""

    def __init__(self, streams, limits: Plausibility | None = None):
        self.kinds = {s: STREAM_KINDS.get(s, "unknown") for s in streams}
        self.rates = dict(streams) if isinstance(streams, dict) else {}  # stream -> expected Hz
        self.limits = limits or Plausibility()
        self.rejected: Counter = Counter()
        self.readopted: Counter = Counter()
        self.sender_changes: Counter = Counter()  # stream -> times its sender changed
        self.idle_ns = 0  # the last moment the caller had read every message waiting (note_idle)
        self._changes: deque = deque(maxlen=1000)  # (stream, old, new, why, t_receive_ns) not yet taken
        self._state = {s: _StreamState() for s in streams}
        self._accepted_layouts: set[tuple] = set()  # batch layouts whose schema check passed (accept_block)

    def check(self, message: Message) -> str | None:
        state = self._state.get(message.stream)
        if state is not None and message.sender == state.sender:
            state.last_heard = max(state.last_heard, message.t_receive_ns)  # alive, even if refused
        reason = self._schema_problem(message) or self._history_problem(message)
        if reason is not None:
            self.rejected[(message.stream, reason)] += 1
        return reason

    def accept_block(self, block: SampleBlock) -> bool:
        """Accept a whole batch in array operations when ``check`` would accept each of its samples in turn
        (the stream's current sender, fitting its schema, stamps plausible, seq and time increasing, no jump),
        updating the stream's history as those checks would. False, with nothing changed, for any other batch:
        the caller then checks its samples one by one (same results, refusals counted per sample)."""
        state = self._state.get(block.stream)
        if state is None or state.sender is None or block.sender != state.sender or state.last_t is None:
            return False
        t, receive, limits = block.t_capture_ns, block.t_receive_ns, self.limits
        # The schema check depends only on the batch's layout (its buffers' names, dtypes, sample shapes and
        # encodings: a batch's buffers are raw) and on the shapes and encodings the stream fixed, which never
        # change once fixed; so a layout accepted before is accepted again without the check (its meta, which
        # varies, is still checked). Nothing about the samples' values is skipped.
        layout = (block.stream, *((name, array.dtype.str, array.shape[1:], block.encodings.get(name, "raw"))
                                  for name, array in block.arrays.items()))
        first_t0 = int(t[0])
        known_layout = layout in self._accepted_layouts
        if not known_layout:
            if self._schema_problem(block.message(0)) is not None:
                return False
        elif block.meta and self._meta_problem(block.meta) is not None:
            return False
        if block.seq <= state.last_seq or first_t0 <= state.last_t:
            return False
        if block.n > 1:
            steps = t[1:] - t[:-1]
            if bool((steps <= 0).any()):
                return False
        if int(t.max()) - receive > limits.future_limit_ns or receive - int(t.min()) > limits.past_limit_ns:
            return False
        if self._jump_of(block.stream, block.seq, first_t0, receive,
                         (state.last_seq, state.last_t, state.last_receive)) is not None:
            return False
        if block.n > 1:  # each later sample against the one before it (same receive stamp: no time elapsed)
            if min(limits.seq_slack, limits.max_seq_jump) < 0:
                return False
            if bool(((t[1:] > receive) & (steps > limits.time_jump_ns)).any()):
                return False
        state.last_heard = max(state.last_heard, receive)
        state.last_seq, state.last_t, state.last_receive = block.seq + block.n - 1, int(t[-1]), receive
        state.outlier, state.outlier_run = None, 0
        if not known_layout:
            for name, array in block.arrays.items():
                state.shapes.setdefault(name, tuple(block.shapes.get(name, array.shape[1:])))
                state.encodings.setdefault(name, block.encodings.get(name, "raw"))
            self._accepted_layouts.add(layout)
        return True

    def note_idle(self, t_ns: int) -> None:
        """Every message that reached the receiver before ``t_ns`` (host monotonic) has been checked."""
        self.idle_ns = max(self.idle_ns, t_ns)

    def note_status(self, streams, sender: int, state: str, t_receive_ns: int) -> None:
        """A driver's ``_status`` (from the endpoint that owns it): its sender is alive, or gone when ``state``
        is stopped or failed."""
        for stream in streams:
            s = self._state.get(stream)
            if s is not None and s.sender == sender:
                s.last_heard = max(s.last_heard, t_receive_ns)
                s.gone = state in GONE_STATES

    def note_gone(self, streams) -> None:
        """The process publishing ``streams`` exited: their current senders are gone."""
        for stream in streams:
            if stream in self._state:
                self._state[stream].gone = True

    def take_sender_changes(self) -> list[tuple]:
        """The sender changes since the last call: ``(stream, old sender, new sender, why, t_receive_ns)``."""
        out = list(self._changes)
        self._changes.clear()
        return out

    def encoding_of(self, stream: str, buffer: str) -> str | None:
        """The encoding of ``buffer`` fixed by the stream's first accepted message (None before it)."""
        state = self._state.get(stream)
        return None if state is None else state.encodings.get(buffer)

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
        return self._meta_problem(m.meta)

    @staticmethod
    def _meta_problem(meta: dict) -> str | None:
        """``meta:<key>`` for a number of ``META_NUMBERS`` out of its range or not a number, else None."""
        for key, (low, high) in META_NUMBERS.items():
            value = meta.get(key)
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
        why = self._gone(state) if new_sender else ""
        if new_sender and not why:
            return "competing-sender"  # the stream's sender is alive: a second publisher is not a restart
        if not new_sender and state.last_seq is not None and m.seq <= state.last_seq:
            return "seq-backwards"
        reference = None if state.last_t is None else (None if new_sender else state.last_seq, state.last_t,
                                                       state.last_receive)
        jump = self._jump(m, reference)
        if jump and not self._readopt(state, m):
            return jump
        if state.last_t is not None and m.t_capture_ns <= state.last_t:
            return "time-backwards"
        if new_sender:
            state.retired.add(state.sender)
            self.sender_changes[m.stream] += 1
            self._changes.append((m.stream, state.sender, m.sender, why, m.t_receive_ns))
            state.gone = False
        state.sender, state.last_seq, state.last_t, state.last_receive = m.sender, m.seq, m.t_capture_ns, m.t_receive_ns
        state.last_heard = max(state.last_heard, m.t_receive_ns)
        state.outlier, state.outlier_run = None, 0
        for name, array in m.arrays.items():
            state.shapes.setdefault(name, tuple(m.shapes.get(name, array.shape)))
            state.encodings.setdefault(name, m.encodings.get(name, "raw"))
        return None

    def _gone(self, state: _StreamState) -> str:
        """Why the stream's current sender is gone ("" while it is not): its own status, or its silence."""
        if state.gone:
            return "its driver reported stopped or failed, or its process exited"
        silent_ns = self.idle_ns - state.last_heard
        if silent_ns >= self.limits.takeover_silence_ns:
            return f"nothing from it for {silent_ns / 1e9:.1f} s with the bus read up to date"
        return ""

    def _jump(self, m: Message, reference: tuple | None) -> str | None:
        """``seq-jump`` or ``time-jump`` when ``m`` does not plausibly follow ``reference`` = (seq or None for
        another sender, t_capture_ns, t_receive_ns), else None."""
        return self._jump_of(m.stream, m.seq, m.t_capture_ns, m.t_receive_ns, reference)

    def _jump_of(self, stream: str, seq: int, t_capture_ns: int, t_receive_ns: int,
                 reference: tuple | None) -> str | None:
        """``_jump`` of a sample given by its stream, seq and stamps (ns)."""
        if reference is None:
            return None
        last_seq, last_t, last_receive = reference
        limits = self.limits
        elapsed_ns = max(0, t_receive_ns - last_receive)
        if last_seq is not None:
            rate = self.rates.get(stream, 0.0)
            allowed = (limits.seq_slack + limits.seq_rate_factor * rate * elapsed_ns / 1e9) if rate > 0 \
                else limits.max_seq_jump
            if seq - last_seq - 1 > allowed:
                return "seq-jump"
        if t_capture_ns > t_receive_ns and (t_capture_ns - last_t) - elapsed_ns > limits.time_jump_ns:
            return "time-jump"
        return None

    def _readopt(self, state: _StreamState, m: Message) -> bool:
        """True once ``readopt_after`` consecutive outliers follow each other plausibly (a real jump)."""
        run = state.outlier
        follows = run is not None and m.seq > run[0] and m.t_capture_ns > run[1] and self._jump(m, run) is None
        state.outlier_run = state.outlier_run + 1 if follows else 1
        state.outlier = (m.seq, m.t_capture_ns, m.t_receive_ns)
        if state.outlier_run >= self.limits.readopt_after:
            self.readopted[state.sender] += 1
            return True
        return False


def fill_optional(stream_kind: str, message: Message) -> None:
    """Complete an accepted message in place: every optional buffer of its kind absent from it is added,
    filled with the spec's ``fill``, with its encoding ("raw") and shape, so every row of a stream has the
    same columns. The one place this is done; the writer relies on it (docs/protocol.md)."""
    _fill_missing(stream_kind, message, rows=())


def fill_optional_block(stream_kind: str, block: SampleBlock) -> None:
    """``fill_optional`` for a whole batch: each absent optional buffer added with ``block.n`` rows of its fill."""
    _fill_missing(stream_kind, block, rows=(block.n,))


def _fill_missing(stream_kind: str, item: Message | SampleBlock, rows: tuple[int, ...]) -> None:
    """Add each optional buffer of ``stream_kind`` absent from ``item``, of shape ``rows + spec.shape``."""
    schema = SCHEMAS.get(stream_kind, {})
    missing = {n: s for n, s in schema.items() if s.optional and n not in item.arrays}
    if not missing:
        return
    arrays, encodings, shapes = dict(item.arrays), dict(item.encodings), dict(item.shapes)
    for name, spec in missing.items():
        arrays[name] = np.full((*rows, *spec.shape), spec.fill, dtype=np.dtype(spec.dtype))
        encodings[name] = "raw"
        shapes[name] = tuple(spec.shape)
    item.arrays, item.encodings, item.shapes = arrays, encodings, shapes
