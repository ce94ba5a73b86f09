"""What the bus hands the recorder: one sample (``Message``) or a whole batch of one stream (``SampleBlock``).

A version-2 bus message (docs/protocol.md) carries ``n`` consecutive samples of one stream. The recorder's
intake takes such a batch as one ``SampleBlock`` (stamps and values as arrays with a leading dimension
``n``) and checks, buffers and stores it with array operations; ``SampleBlock.messages()`` gives the same
samples one by one, exactly as ``decode_messages`` does, for every path that needs them singly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATUS_PREFIX = "_status/"


@dataclass
class Message:
    """One decoded bus message.

    Times are host monotonic nanoseconds: ``t_capture_ns`` is the driver's best
    estimate of when the sample was captured, ``t_device_ns`` the device's own clock
    (None when it has none), ``t_publish_ns`` when it was sent and ``t_receive_ns``
    when the subscriber decoded it. ``arrays`` holds raw arrays, or 1-D uint8 blobs
    for encoded buffers whose decoded shape is in ``shapes``.
    """

    stream: str
    seq: int
    t_capture_ns: int
    t_device_ns: int | None
    t_publish_ns: int
    tracking: str
    arrays: dict[str, np.ndarray]
    encodings: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    meta: dict[str, Any] = field(default_factory=dict)
    t_receive_ns: int = 0
    nbytes: int = 0
    sender: int = 0  # random id of the publishing driver instance: seq counts restart with a new sender
    clock_offset_ns: int = 0  # subtracted from a remote host's t_capture_ns to put it on this host's clock

    @property
    def is_status(self) -> bool:
        return self.stream.startswith(STATUS_PREFIX)


@dataclass
class SampleBlock:
    """``n`` consecutive samples of one stream from one batch message (one sender, one receive stamp).

    ``seq`` is the first sample's sequence number (the others follow by one); ``t_capture_ns`` is an int64
    array of ``n`` host-monotonic capture times (ns); ``t_device_ns`` a list of ``n`` ints or Nones, or None;
    ``tracking`` a list of ``n`` states; ``arrays`` raw arrays of shape ``(n, *shapes[name])``; ``nbytes``
    the batch's buffer bytes. Times as in ``Message``.
    """

    stream: str
    seq: int
    n: int
    t_capture_ns: np.ndarray
    t_device_ns: list | None
    t_publish_ns: int
    tracking: list[str]
    arrays: dict[str, np.ndarray]
    encodings: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    meta: dict[str, Any] = field(default_factory=dict)
    t_receive_ns: int = 0
    nbytes: int = 0
    sender: int = 0
    clock_offset_ns: int = 0

    is_status = False

    def message(self, i: int) -> Message:
        """Sample ``i`` alone, as ``decode_messages`` makes it (arrays are views on the block's)."""
        return Message(stream=self.stream, seq=self.seq + i, t_capture_ns=int(self.t_capture_ns[i]),
                       t_device_ns=None if self.t_device_ns is None else self.t_device_ns[i],
                       t_publish_ns=self.t_publish_ns, tracking=self.tracking[i],
                       arrays={name: array[i] for name, array in self.arrays.items()}, encodings=self.encodings,
                       shapes=self.shapes, meta=dict(self.meta), t_receive_ns=self.t_receive_ns,
                       nbytes=self.nbytes // self.n, sender=self.sender, clock_offset_ns=self.clock_offset_ns)

    def messages(self) -> list[Message]:
        """Every sample alone, in order."""
        return [self.message(i) for i in range(self.n)]

    @property
    def seqs(self) -> np.ndarray:
        """The samples' sequence numbers (int64)."""
        return np.arange(self.seq, self.seq + self.n, dtype=np.int64)
