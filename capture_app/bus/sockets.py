"""The bus's ZeroMQ sockets: a driver's publisher and the recorder's subscriber (the protocol they speak is
``capture_app.bus.wire``; docs/protocol.md)."""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from typing import Iterable

import numpy as np
import zmq

from capture_app.bus.message import Message, SampleBlock
from capture_app.bus.wire import (ACCEPTED_VERSIONS, HIGH_WATER_MARK, INPROC_HIGH_WATER_MARK, decode_block,
                                  decode_messages, encode_message)
from capture_app.core.clock import now_ns
from capture_app.core.errors import BusProtocolError

log = logging.getLogger(__name__)


class BusPublisher:
    """One driver's publisher. Not thread-safe: use it from one thread only.

    ``bind=False`` connects to the application's subscriber (in-process drivers);
    ``bind=True`` binds the endpoint (a driver running as its own process).
    """

    def __init__(self, endpoint: str, *, bind: bool = False, context: zmq.Context | None = None, curve=None):
        self.endpoint = endpoint
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB)
        if curve is not None:  # capture_app.bus.remote.CurveKeys: this side is the CurveZMQ server
            from capture_app.bus.remote import secure_server
            secure_server(self._socket, curve)
        self._socket.setsockopt(zmq.SNDHWM, INPROC_HIGH_WATER_MARK if endpoint.startswith("inproc://") else HIGH_WATER_MARK)
        self._socket.setsockopt(zmq.LINGER, 500)
        if bind:
            self._socket.bind(endpoint)
            from capture_app.bus.endpoint_trust import restrict_bound_socket
            restrict_bound_socket(endpoint)  # ipc: only this user may connect
        else:
            self._socket.connect(endpoint)

    def send_frames(self, frames: list) -> None:
        """Send frames made by ``encode_message`` (zero-copy; never mutate sent arrays)."""
        self._socket.send_multipart(frames, copy=False)

    def publish(self, stream: str, seq: int, t_capture_ns: int, arrays: dict[str, np.ndarray], **kwargs) -> None:
        """Encode and send one sample; see ``encode_message`` for the arguments."""
        self.send_frames(encode_message(stream, seq, t_capture_ns, arrays, **kwargs))

    def close(self) -> None:
        self._socket.close()


class BusSubscriber:
    """Receives and decodes bus messages; malformed ones are counted and logged, never raised.

    ``bind`` endpoints are bound (the in-process bus), ``connect`` endpoints are
    connected (driver processes). Use from one thread only.
    """

    def __init__(
        self,
        bind: Iterable[str] = (),
        connect: Iterable[str] = (),
        *,
        topics: Iterable[str] = ("",),
        context: zmq.Context | None = None,
        curve=None,
    ):
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.SUB)
        if curve is not None:  # capture_app.bus.remote.CurveKeys: connect as a CurveZMQ client
            from capture_app.bus.remote import secure_client
            secure_client(self._socket, curve)
        bind, connect = list(bind), list(connect)
        inproc = any(e.startswith("inproc://") for e in bind + connect)
        self._socket.setsockopt(zmq.RCVHWM, INPROC_HIGH_WATER_MARK if inproc else HIGH_WATER_MARK)
        self._socket.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        for endpoint in bind:
            self._socket.bind(endpoint)
        for endpoint in connect:
            self._socket.connect(endpoint)
        self.malformed: Counter[str] = Counter()
        self.received = 0  # samples (a batch message counts its samples)
        self._split: deque[Message] = deque()  # the rest of a batch message, handed out one by one
        self._lock = threading.Lock()
        self._last_warning_ns = 0

    def recv_waiting(self, stamp=None) -> Message | None | bool:
        """The next sample already waiting, without polling: a Message (one sample; a batch message is
        handed out one sample per call), None if a message was malformed (counted), or False when nothing
        is waiting."""
        if self._split:
            return self._split.popleft()
        messages = self._receive(decode_messages, stamp)
        if messages is None or messages is False:
            return messages
        self.received += len(messages)
        self._split.extend(messages[1:])
        return messages[0]

    def recv_waiting_block(self, stamp=None) -> Message | SampleBlock | None | bool:
        """Like ``recv_waiting``, but a batch message comes whole, as one ``SampleBlock``."""
        if self._split:
            return self._split.popleft()
        decoded = self._receive(decode_block, stamp)
        if decoded is not None and decoded is not False:
            self.received += decoded.n if isinstance(decoded, SampleBlock) else 1
        return decoded

    def _receive(self, decode, stamp):
        """One waiting bus message decoded with ``decode``; False when none is waiting, None (counted) when
        it is malformed."""
        try:
            frames = [self._socket.recv(zmq.NOBLOCK, copy=False)]
        except zmq.Again:
            return False
        while frames[-1].more:  # ZeroMQ delivers a multipart message whole: its other parts are here already
            frames.append(self._socket.recv(copy=False))  # (pyzmq's recv_multipart asks RCVMORE per part: 2x slower)
        try:
            return decode(frames, t_receive_ns=stamp() if stamp else None)
        except BusProtocolError as exc:
            self._count_malformed(exc)
            return None

    @property
    def holds_batch_rest(self) -> bool:
        """True while samples of a batch already taken off the socket (and stamped) wait to be handed out."""
        return bool(self._split)

    @property
    def socket(self) -> zmq.Socket:
        return self._socket

    def poll(self, timeout_ms: int) -> bool:
        """True when a sample is waiting."""
        return bool(self._split) or bool(self._socket.poll(timeout_ms, zmq.POLLIN))

    def recv(self, timeout_ms: int = 100, stamp=None) -> Message | None:
        """Next valid message, or None on timeout or when the message was malformed.

        ``stamp`` (optional) is a callable returning the receive time in ns; the
        default is the host monotonic clock at decode.
        """
        if not self.poll(timeout_ms):
            return None
        message = self.recv_waiting(stamp)
        return message or None

    def _count_malformed(self, exc: BusProtocolError) -> None:
        with self._lock:
            self.malformed[exc.reason] += 1
        t = now_ns()
        if t - self._last_warning_ns > 1_000_000_000:  # at most one warning a second
            self._last_warning_ns = t
            log.warning("%s (dropped; %d malformed so far). Check that every driver runs this "
                        "version of capture-app (bus protocol v%s).", exc, sum(self.malformed.values()),
                        "/".join(map(str, ACCEPTED_VERSIONS)))

    def close(self) -> None:
        self._socket.close()
