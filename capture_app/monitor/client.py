"""A monitor's link to a recorder (docs/control.md): commands with acknowledgements, and the state feed.

Two threads, no Qt: ``monitor-state`` keeps the newest ``view`` (its images decoded there, off the GUI
thread) and ``status`` (the GUI timer
reads them) and queues ``take`` reports; ``monitor-commands`` sends queued commands one at a
time, in order, and resends a command with the same id until the recorder answers it, so an
operator's mark is never lost to a slow recorder and never applied twice. Replies go to the
caller's callback on the command thread (the window turns them into a Qt signal).
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import deque
from typing import Callable

import cv2
import zmq

from capture_app.bus import control_protocol as protocol
from capture_app.core.errors import CaptureError
from capture_app.monitor.overlay import LiveVideo, ViewState, state_from_view

log = logging.getLogger(__name__)

Reply = Callable[[bool, dict, str], None]  # (ok, result, error)
HANDSHAKE_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL \
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
FAILED_HANDSHAKES_TO_GIVE_UP = 3  # without a refusal (a wrong server key): ZeroMQ retries every 0.1 s or so


class HandshakeWatch:
    """The failed CurveZMQ handshakes of one client socket (a socket monitor), and what they mean."""

    def __init__(self, socket: zmq.Socket):
        self._socket = socket
        self._events = socket.get_monitor_socket(HANDSHAKE_FAILURES)
        self.failures: list[int] = []  # zmq.EVENT_HANDSHAKE_FAILED_* in the order seen

    def _take_events(self) -> None:
        from zmq.utils.monitor import recv_monitor_message
        while self._events.poll(0):
            self.failures.append(recv_monitor_message(self._events)["event"])

    def hopeless(self) -> bool:
        """True once the recorder refused this key, or handshakes failed FAILED_HANDSHAKES_TO_GIVE_UP times."""
        self._take_events()
        return (zmq.EVENT_HANDSHAKE_FAILED_AUTH in self.failures
                or len(self.failures) >= FAILED_HANDSHAKES_TO_GIVE_UP)

    def why(self) -> str:
        """The rest of a sentence for the operator; "" when no handshake failed."""
        self._take_events()
        if zmq.EVENT_HANDSHAKE_FAILED_AUTH in self.failures:
            return ("refused this client's CurveZMQ key: use the monitor.key_secret from the recorder's "
                    "[bus] keys directory (docs/control.md), not a driver's or another rig's key")
        if self.failures:
            return ("could not complete a CurveZMQ handshake: the server key given (app.key) is not this "
                    "recorder's; copy app.key from the recorder's [bus] keys directory (docs/control.md)")
        return ""

    def close(self) -> None:
        self._socket.disable_monitor()
        self._events.close(0)


class RecorderClient:
    """Connects to the recorder at ``control_endpoint``; ``close`` stops both threads."""

    def __init__(self, control_endpoint: str, name: str = "monitor", context: zmq.Context | None = None,
                 curve=None, connect_timeout_s: float = 10.0):
        from capture_app.bus.endpoint_trust import require_private_ipc
        require_private_ipc(control_endpoint, "recorder control endpoint")  # else another user could pose as it
        self.control_endpoint = control_endpoint
        self.name = name
        self._context = context or zmq.Context.instance()
        self._curve = curve
        self._stop = threading.Event()
        self._commands: queue.Queue = queue.Queue()
        self.view: dict | None = None
        self.view_state: ViewState | None = None  # the newest view with its images decoded, on the receiving thread
        self._video = LiveVideo()
        self.status: dict | None = None
        self.takes_finished: deque = deque(maxlen=100)
        self._pending = 0                 # commands sent or queued and not answered yet
        self._pending_lock = threading.Lock()
        self.unanswered: list[str] = []   # commands the recorder never answered (shown as errors)
        self.malformed = 0
        hello = self.call("hello", timeout_s=connect_timeout_s)
        self.hello = hello
        self.state_endpoint = self._reachable(hello["state_endpoint"])
        self.status = hello["status"]
        self._threads = [threading.Thread(target=self._receive_state, name="monitor-state", daemon=True),
                         threading.Thread(target=self._send_commands, name="monitor-commands", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _reachable(self, state_endpoint: str) -> str:
        """The state endpoint as this host reaches it (a recorder bound to tcp://*:P announces *)."""
        if state_endpoint.startswith("tcp://"):
            host = self.control_endpoint[len("tcp://"):].rpartition(":")[0]
            return f"tcp://{host}:{state_endpoint.rpartition(':')[2]}"
        return state_endpoint

    def _secured(self) -> bool:
        return self._curve is not None and self.control_endpoint.startswith("tcp://")

    def _socket(self, kind: int) -> zmq.Socket:
        socket = self._context.socket(kind)
        socket.linger = 0
        if self._secured():
            from capture_app.bus.remote import secure_client
            secure_client(socket, self._curve)
        return socket

    def close(self) -> None:
        self._stop.set()
        for thread in getattr(self, "_threads", []):
            thread.join(5)

    # --- commands -------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Commands queued or sent and not answered yet."""
        return self._pending

    def send(self, cmd: str, args: dict | None = None, on_reply: Reply | None = None) -> None:
        """Queue a command; ``on_reply(ok, result, error)`` runs on the command thread once answered."""
        with self._pending_lock:
            self._pending += 1
        self._commands.put((uuid.uuid4().hex, cmd, {**(args or {}), "by": self.name}, on_reply))

    def call(self, cmd: str, args: dict | None = None, timeout_s: float = protocol.GIVE_UP_S) -> dict:
        """Send one command and wait for its answer (a socket of its own); CaptureError if refused."""
        socket = self._socket(zmq.DEALER)
        handshakes = HandshakeWatch(socket) if self._secured() else None
        socket.connect(self.control_endpoint)
        try:  # a refused key is known within a resend (RESEND_S), not after the whole timeout
            ok, result, error = protocol.exchange(socket, uuid.uuid4().hex, cmd, {**(args or {}), "by": self.name},
                                                  timeout_s, self._stop, self._count_malformed,
                                                  handshakes.hopeless if handshakes is not None else None)
            refused = handshakes.why() if ok is None and handshakes is not None else ""
        finally:
            if handshakes is not None:
                handshakes.close()
            socket.close(0)
        if refused:
            raise CaptureError(f"the recorder at {self.control_endpoint} {refused}")
        if ok is None:
            raise CaptureError(f"no recorder answered at {self.control_endpoint} within {timeout_s:g} s: start one "
                               f"with `capture-app serve` (or `capture-app monitor --sim`, which starts both)")
        if not ok:
            raise CaptureError(error)
        return result

    def _send_commands(self) -> None:
        socket = self._socket(zmq.DEALER)
        socket.connect(self.control_endpoint)
        try:
            while not self._stop.is_set():
                try:
                    request_id, cmd, args, on_reply = self._commands.get(timeout=0.1)
                except queue.Empty:
                    continue
                ok, result, error = protocol.exchange(socket, request_id, cmd, args, protocol.GIVE_UP_S, self._stop,
                                                      self._count_malformed)
                with self._pending_lock:
                    self._pending -= 1
                if ok is None:
                    ok, error = False, f"the recorder did not answer {cmd!r} within {protocol.GIVE_UP_S:.0f} s"
                    self.unanswered.append(cmd)
                if on_reply is not None:
                    try:
                        on_reply(ok, result, error)
                    except Exception:
                        log.exception("monitor: handling the reply to %s failed", cmd)
        finally:
            socket.close(0)

    # --- the state feed ----------------------------------------------------------------
    def _receive_state(self) -> None:
        socket = self._socket(zmq.SUB)
        socket.rcvhwm = 20
        for topic in protocol.TOPICS:
            socket.setsockopt(zmq.SUBSCRIBE, topic)
        socket.connect(self.state_endpoint)
        try:
            for topic, frame in protocol.receive_pairs(socket, self._stop, self._count_malformed):
                try:
                    payload = protocol.unpack(frame)
                except protocol.ProtocolError:
                    self.malformed += 1
                    continue
                if topic == b"view":
                    self._on_view(payload)
                elif topic == b"status":
                    self.status = payload
                elif topic == b"take":
                    self.takes_finished.append(payload)
        finally:
            socket.close(0)

    def _on_view(self, payload) -> None:
        """A ``view`` message of the state feed (on the receiving thread): the newest view and its decoded state;
        one that cannot be read is counted as malformed."""
        try:  # JPEG decoding releases the GIL: done here, it keeps the GUI thread's frames short
            state = state_from_view(payload, self._video)
        except (KeyError, TypeError, ValueError, cv2.error):
            self.malformed += 1
            return
        self.view, self.view_state = payload, state

    def _count_malformed(self) -> None:
        self.malformed += 1
