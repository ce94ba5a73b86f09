"""Batches of high-rate pose and keypoint samples for the bus (docs/protocol.md, "Batches").

A tracker at 250 Hz and a glove at 120 Hz publish one small message per sample; each message costs
both ends a fixed overhead (ZeroMQ frames, a msgpack header, the receiver's per-message work) far
above its few hundred bytes. A ``SampleBatcher`` holds consecutive samples of a stream for at most
``window_ns`` (20 ms by default, a fifth of the synchronizer's 100 ms delay, so no synced row waits
for it) and sends them as one protocol-version-2 message. A batch only ever holds samples that
follow each other (seq + 1) with the same buffers and ``meta``; anything else starts a new batch.
Camera frames and encoded buffers are never batched.

Pure bookkeeping: no sockets, no threads; the driver's thread calls it and sends what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from capture_app.bus.wire import MAX_BATCH, encode_batch, encode_message

MAX_SAMPLES = 32  # per batch: a burst of late samples goes out in a few messages, not one huge one


@dataclass
class _Pending:
    first_seq: int
    held_since_ns: int
    layout: tuple
    meta: dict[str, Any]
    samples: list = field(default_factory=list)  # (t_capture_ns, t_device_ns, tracking, arrays)


def _layout(arrays: dict[str, np.ndarray]) -> tuple:
    return tuple((name, a.dtype.str, a.shape) for name, a in arrays.items())


class SampleBatcher:
    """Per stream, the samples held for the next batch message of one sender."""

    def __init__(self, window_ns: int, sender: int, max_samples: int = MAX_SAMPLES):
        self.window_ns = window_ns
        self.sender = sender
        self.max_samples = min(max_samples, MAX_BATCH)
        self._pending: dict[str, _Pending] = {}

    def add(self, stream: str, seq: int, t_capture_ns: int, t_device_ns: int | None, tracking: str,
            arrays: dict[str, np.ndarray], meta: dict[str, Any] | None, now_ns: int) -> list[list]:
        """Hold one raw sample; returns the messages (frame lists) to send now: the stream's held batch when
        this sample cannot join it, and the batch when it is full."""
        out = []
        meta = meta or {}
        pending = self._pending.get(stream)
        layout = _layout(arrays)
        if pending is not None and (seq != pending.first_seq + len(pending.samples) or layout != pending.layout
                                    or meta != pending.meta):
            out.append(self._frames(stream, self._pending.pop(stream)))
            pending = None
        if pending is None:
            pending = self._pending[stream] = _Pending(seq, now_ns, layout, meta)
        held = {name: np.array(a, copy=True) for name, a in arrays.items()}  # the device may reuse its arrays
        pending.samples.append((t_capture_ns, t_device_ns, tracking, held))
        if len(pending.samples) >= self.max_samples:
            out.append(self._frames(stream, self._pending.pop(stream)))
        return out

    def due(self, now_ns: int) -> list[list]:
        """The messages of batches held for ``window_ns`` or longer (call this often, also when no sample came)."""
        late = [s for s, p in self._pending.items() if now_ns - p.held_since_ns >= self.window_ns]
        return [self._frames(s, self._pending.pop(s)) for s in late]

    def drain(self) -> list[list]:
        """Every held batch's message (the driver is stopping or reconnecting)."""
        out = [self._frames(s, p) for s, p in self._pending.items()]
        self._pending.clear()
        return out

    def _frames(self, stream: str, pending: _Pending) -> list:
        t_capture, t_device, tracking, arrays = zip(*pending.samples)
        if len(pending.samples) == 1:  # a version-1 message: any receiver reads it
            return encode_message(stream, pending.first_seq, t_capture[0], arrays[0], tracking=tracking[0],
                                  t_device_ns=t_device[0], meta=pending.meta, sender=self.sender)
        stacked = {name: np.stack([a[name] for a in arrays]) for name, _, _ in pending.layout}
        return encode_batch(stream, pending.first_seq, list(t_capture), stacked, tracking=list(tracking),
                            t_device_ns=None if all(t is None for t in t_device) else list(t_device),
                            meta=pending.meta, sender=self.sender)
