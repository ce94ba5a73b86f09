"""The recorder's side of the control channel and the state feed (docs/control.md).

Two threads beside the capture session:

* ``control-server`` answers commands from any number of monitors (ROUTER socket), one at a
  time and in arrival order, each acknowledged only once ``Takes`` has made it durable. Replies
  are cached by request id, so a resent command is answered again, never run twice.
* ``state-publisher`` publishes, for display, each new synchronizer tick (``view``: JPEG bytes as
  recorded, poses, keypoints, validity, a decimated depth image) and 5 times a second the
  ``status`` (streams, drivers, writer queue and refusals, rejections, takes, disk). It only
  copies and packs (msgpack, numpy): no decoding, no drawing, so the synchronizer keeps its GIL.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import asdict

import zmq

from capture_app.bus import control_protocol as protocol
from capture_app.core.clock import now_ns
from capture_app.bus.endpoint_trust import require_private_ipc, restrict_bound_socket
from capture_app.core.errors import CaptureError, ConfigError
from capture_app.core.live_verdict import RECENT_WINDOW_S, counts_between, cumulative_counts
from capture_app.rig.priority import prioritise_recorder_thread
from capture_app.recorder.takes import Takes

log = logging.getLogger(__name__)

VIEW_PERIOD_S = 0.05
STATUS_PERIOD_S = 0.2
DEPTH_STEP = 4          # the depth image is shown at a quarter of its resolution
REPLY_CACHE = 1000
CAMERAS = {"ego_camera": "ego", "top_camera": "top"}


def view_of_tick(tick, sent_seq: dict[str, int] | None = None) -> dict:
    """A synchronizer tick as the monitor draws it (``view`` topic of docs/control.md). A camera stored as
    H.264 sends, instead of one image, its frames after ``sent_seq[stream]`` up to the one shown (a
    monitor decodes them in order); ``sent_seq`` is updated."""
    view = {"t_eval_ns": tick.t_eval_ns, "t_tick_ns": tick.t_tick_ns, "lateness_ns": tick.lateness_ns,
            "action_valid": tick.action_valid, "T_world_cam": tick.T_world_cam,
            "T_cam_wrist": dict(tick.T_cam_wrist), "T_world_wrist": dict(tick.T_world_wrist),
            "keypoints": dict(tick.keypoints),
            "stream_status": {s: int(e.status) for s, e in tick.evaluations.items()}}
    for stream, key in CAMERAS.items():
        message = tick.frames.get(stream)
        if message is None:
            continue
        frame = {"seq": message.seq, "encoding": message.encodings.get("color", "raw"),
                 "shape": list(message.shapes.get("color", message.arrays["color"].shape))}
        if frame["encoding"] == "h264":
            after = (sent_seq or {}).get(stream, -1)
            if after > message.seq:  # the sender restarted and counts from 0 again
                after = -1
            frame["packets"] = [[m.seq, bool(m.meta["keyframe"]), int(m.meta["packet"]), m.arrays["color"]]
                                for m in tick.video_packets.get(stream, []) if m.seq > after]
            if sent_seq is not None:
                sent_seq[stream] = message.seq
        else:
            frame["color"] = message.arrays["color"]
        if "depth" in message.arrays:
            frame["depth"] = message.arrays["depth"][::DEPTH_STEP, ::DEPTH_STEP]
        view[key] = frame
    return view


def status_of(session, takes: Takes, control_refused: int = 0) -> dict:
    """The ``status`` topic: everything the monitor's health table, banners and REC panel show."""
    streams = {name: asdict(st) for name, st in session.stream_status().items()}
    drivers = {name: h.to_dict() for name, h in session.driver_health().items()}
    writer = session.writer
    writer_state = None
    if writer is not None:
        stats = writer.stats()
        writer_state = {"written": dict(stats.written), "refused": dict(stats.overflow),
                        "seq_gaps": dict(stats.seq_gaps), "backlog_items": stats.backlog_items,
                        "backlog_bytes": stats.backlog_bytes, "error": stats.error,
                        "video_undecodable": dict(stats.video_undecodable),
                        "values_repaired": stats.values_repaired, "items_refused": stats.items_refused}
    return {"t_ns": now_ns(), "rig": session.config.name, "streams": streams, "drivers": drivers,
            "writer": writer_state, "rejected": session.rejected_counts(),
            "losses": {**session.loss_counts(), "control_refused": control_refused}, "takes": takes.state(),
            "drift": session.drift.state() if getattr(session, "drift", None) is not None else None,
            "check": getattr(session, "check_prompt", None),
            "handsfree": handsfree() if (handsfree := getattr(session, "handsfree_status", None)) else None}


class RecentLosses:
    """How much each loss counter of the ``status`` grew over the last ``window_s`` seconds (the ``recent`` map
    of docs/control.md; ``capture_app.core.live_verdict`` judges "now" by it). Thread-safe."""

    def __init__(self, window_s: float = RECENT_WINDOW_S):
        self.window_s = window_s
        self._history: deque[tuple[int, dict[str, int]]] = deque()
        self._lock = threading.Lock()

    def add(self, status: dict, t_ns: int) -> dict:
        """Note ``status``'s counters at ``t_ns`` (recorder monotonic ns); the ``recent`` map."""
        counts = cumulative_counts(status)
        horizon = t_ns - int(self.window_s * 1e9)
        with self._lock:
            self._history.append((t_ns, counts))
            # the baseline: the newest snapshot at least window_s old (or the oldest there is)
            while len(self._history) > 1 and self._history[1][0] <= horizon:
                self._history.popleft()
            baseline = self._history[0][1]
        return {"window_s": self.window_s, "counts": counts_between(baseline, counts)}


def check_control_endpoint(endpoint: str, curve) -> None:
    """Refuse (ConfigError) a control endpoint other local users could use: tcp:// without CurveZMQ keys that
    allow only the monitors' key, or ipc:// outside a private directory (docs/control.md, Trust model)."""
    if endpoint.startswith("tcp://") and (curve is None or not curve.allowed_clients):
        raise ConfigError(f"control endpoint {endpoint}: tcp:// reaches every local user (loopback too), so it "
                          f"needs CurveZMQ keys: set [bus] keys in the rig config to a directory from `capture-app "
                          f"keys DIR` (monitors pass --keys DIR), or use ipc:// in a directory only you can use, e.g. "
                          f"ipc:///run/user/UID/capture/control (docs/control.md, Trust model)")
    require_private_ipc(endpoint, "control endpoint")


class ControlServer:
    """Serves one session's takes to monitors. ``close`` stops both threads and their sockets."""

    def __init__(self, session, takes: Takes, control_endpoint: str, context: zmq.Context | None = None,
                 curve=None):
        self.session = session
        self.takes = takes
        self.control_endpoint = control_endpoint
        self.state_endpoint = protocol.state_endpoint_for(control_endpoint)
        self._context = context or zmq.Context.instance()
        self.context = self._context
        self.local_endpoint = f"inproc://capture-control-{uuid.uuid4().hex}"  # in-process clients (hands-free)
        self._curve = curve
        self._auth = None
        self._stop = threading.Event()
        self._replies: OrderedDict[str, bytes] = OrderedDict()
        self._finished_takes: list[dict] = []
        self._finished_lock = threading.Lock()
        self.bad_requests = 0
        self._last_refusal_event_ns = 0
        self._recent = RecentLosses()
        self._ready = threading.Barrier(3)
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._serve_commands, name="control-server", daemon=True),
                         threading.Thread(target=self._publish_state, name="state-publisher", daemon=True)]
        takes.on_take_finished = self._take_finished

    def start(self) -> "ControlServer":
        check_control_endpoint(self.control_endpoint, self._curve)
        if self._curve is not None and self._curve.allowed_clients:
            from capture_app.bus.remote import start_authenticator  # only monitors holding monitor.key_secret
            self._auth = start_authenticator(self._context, self._curve.allowed_clients)
        for thread in self._threads:
            thread.start()
        self._ready.wait(10)
        if self._errors:
            self.close()
            raise CaptureError(f"cannot serve monitors at {self.control_endpoint}: {self._errors[0]}; is another "
                               f"recorder using it? Choose another --control endpoint")
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(5)
        if self._auth is not None:
            self._auth.stop()

    def _socket(self, kind: int, endpoint: str) -> zmq.Socket:
        socket = self._context.socket(kind)
        socket.linger = 0
        socket.maxmsgsize = protocol.MAX_FRAME_BYTES
        if self._curve is not None and endpoint.startswith("tcp://"):
            from capture_app.bus.remote import secure_server
            secure_server(socket, self._curve)
        socket.bind(endpoint)
        restrict_bound_socket(endpoint)  # ipc: only this user may connect (its directory is private as well)
        return socket

    # --- commands -------------------------------------------------------------------
    def _bound_when_ready(self, kind: int, endpoint: str) -> zmq.Socket | None:
        """Bind, then meet the other thread and ``start`` at the barrier; None (reported) if the bind failed."""
        try:
            socket = self._socket(kind, endpoint)
        except zmq.ZMQError as exc:
            self._errors.append(exc)
            socket = None
        self._ready.wait(10)
        return socket

    def _status(self) -> dict:
        status = status_of(self.session, self.takes, self.bad_requests)
        status["recent"] = self._recent.add(status, status["t_ns"])
        return status

    def _count_bad_request(self, reason: str = "a message that is not [client id, request]") -> None:
        """A control message refused: counted (``status`` shows it live) and, while a take records, an
        ``/events`` warning at most once a second with the count so far."""
        self.bad_requests += 1
        log.warning("control: refused a request: %s", reason)
        if now_ns() - self._last_refusal_event_ns >= 1_000_000_000:
            self._last_refusal_event_ns = now_ns()
            self.takes.log_warning("control", f"refused a control request: {reason} "
                                              f"({self.bad_requests} refused since the recorder started)")

    def _serve_commands(self) -> None:
        prioritise_recorder_thread()
        socket = self._bound_when_ready(zmq.ROUTER, self.control_endpoint)
        if socket is None:
            return
        # the recorder's own hands-free inputs (capture_app.handsfree) send their commands here: the same
        # answers, reply cache and durability as a monitor's, on an endpoint only this process can reach
        local = self._context.socket(zmq.ROUTER)
        local.linger = 0
        local.bind(self.local_endpoint)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(local, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                for sock in (socket, local):
                    if sock in ready:
                        frames = sock.recv_multipart()
                        if len(frames) == 2:
                            sock.send_multipart([frames[0], self._answer(frames[1])])
                        else:
                            self._count_bad_request()
        finally:
            socket.close(0)
            local.close(0)

    def _answer(self, frame: bytes) -> bytes:
        try:
            request_id, cmd, args = protocol.parse_request(frame)
        except protocol.ProtocolError as exc:
            self._count_bad_request(str(exc))
            return protocol.reply("", False, error=f"refused: {exc} (docs/control.md)")
        cached = self._replies.get(request_id)
        if cached is not None:  # a resend: the same answer, the command is not run again
            return cached
        try:
            args = protocol.checked_args(cmd, args)
        except ValueError as exc:
            self._count_bad_request(f"{cmd}: {exc}")
            answer = protocol.reply(request_id, False, error=f"{cmd} refused: {exc} (docs/control.md, Limits)")
            self._replies[request_id] = answer
            return answer
        try:
            result = self._run(cmd, args)
            result["t_ns"] = now_ns()  # when it was done: a status older than this predates it
            answer = protocol.reply(request_id, True, result)
        except KeyError as exc:
            answer = protocol.reply(request_id, False, error=f"{cmd}: missing argument {exc} (docs/control.md)")
        except (CaptureError, TypeError, ValueError) as exc:
            answer = protocol.reply(request_id, False, error=f"{cmd}: {exc}")
        except Exception as exc:  # a bug must not stop the recorder serving (the take goes on)
            log.exception("control: %s failed", cmd)
            answer = protocol.reply(request_id, False, error=f"{cmd} failed: {type(exc).__name__}: {exc}")
        self._replies[request_id] = answer
        while len(self._replies) > REPLY_CACHE:
            self._replies.popitem(last=False)
        return answer

    def _run(self, cmd: str, args: dict) -> dict:
        takes, by = self.takes, str(args.get("by", ""))
        origin = {"via": str(args.get("via", "")), "onset_ns": args.get("onset_ns")}  # who, and since when
        if cmd == "hello":
            return {"protocol": protocol.VERSION, "state_endpoint": self.state_endpoint,
                    "calibration": self.session.calibration.to_json(), "status": self._status()}
        if cmd == "status":
            return self._status()
        if cmd == "start":
            return takes.start(name=args.get("name"), task=str(args.get("task", "")),
                               instruction=str(args.get("instruction", "")), operator=str(args.get("operator", "")),
                               by=by, **origin)
        if cmd == "stop":
            return takes.stop(str(args.get("outcome", "saved")), by=by, **origin)
        if cmd == "discard":
            return takes.discard(by=by, **origin)
        if cmd == "mark_start":
            return takes.mark_start(str(args["label"]), int(args["t_ns"]), str(args.get("description", "")),
                                    str(args.get("hand", "both")), by=by, **origin)
        if cmd == "mark_end":
            return takes.mark_end(int(args["t_ns"]), by=by, **origin)
        if cmd == "undo":
            return takes.undo(by=by, **origin)
        if cmd == "note":
            return takes.note(str(args.get("text", "")), by=by)
        raise CaptureError(f"unknown command {cmd!r}")

    # --- the state feed ----------------------------------------------------------------
    def _take_finished(self, take: dict) -> None:
        with self._finished_lock:
            self._finished_takes.append(take)

    def _publish_state(self) -> None:
        prioritise_recorder_thread()
        socket = self._bound_when_ready(zmq.PUB, self.state_endpoint)
        if socket is None:
            return
        socket.sndhwm = 50  # a slow monitor loses views, never blocks the recorder
        last_tick, next_status, sent_seq = None, 0.0, {}
        try:
            while not self._stop.wait(VIEW_PERIOD_S):
                tick = self.session.latest_tick
                if tick is not None and tick is not last_tick:
                    last_tick = tick
                    self._send(socket, b"view", view_of_tick(tick, sent_seq))
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + STATUS_PERIOD_S
                    self._send(socket, b"status", self._status())
                with self._finished_lock:
                    finished, self._finished_takes = self._finished_takes, []
                for take in finished:
                    self._send(socket, b"take", take)
        finally:
            socket.close(0)

    def _send(self, socket: zmq.Socket, topic: bytes, payload: dict) -> None:
        try:
            socket.send_multipart([topic, protocol.pack(payload)], zmq.NOBLOCK)
        except zmq.Again:
            pass  # no monitor keeps up: views are for display only, the file has everything
