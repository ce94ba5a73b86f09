"""The recorder's control channel and state feed (docs/control.md): message encoding, and the two loops
that use it on a socket (``exchange`` for a request, ``receive_pairs`` for the state feed).

Two ZeroMQ endpoints per recorder:

* **control** (ROUTER at the recorder, DEALER at each monitor): a request is one frame, a msgpack
  map ``{"v": 1, "id": str, "cmd": str, "args": map}``; the reply is one frame
  ``{"v": 1, "id": same, "ok": bool, "error": str, "result": map}``. A request id is answered once and
  the answer is cached: a client that did not hear back resends the same id and gets the same reply,
  so a retried command never runs twice.
* **state** (PUB at the recorder, SUB at each monitor): two frames, topic and msgpack map. Topics:
  ``view`` (one per synchronizer tick, for display), ``status`` (5 times a second) and ``take`` (a take
  finished and its quality report is known).

Arrays travel as ``{"__nd__": [dtype str, shape list, bytes]}``; everything else is plain msgpack.
"""

from __future__ import annotations

from typing import Iterator

import msgpack
import numpy as np
import zmq

from capture_app.core.values import MAX_NAME_CHARS, MAX_TEXT_CHARS, checked_choice, checked_t_ns, checked_text

VERSION = 1
COMMANDS = ("hello", "status", "start", "stop", "discard", "mark_start", "mark_end", "undo", "note")
TOPICS = (b"view", b"status", b"take")
MAX_REQUEST_BYTES = 1 << 20       # a request frame larger than this is refused unread (docs/control.md)
MAX_FRAME_BYTES = 64 << 20        # ZeroMQ drops a peer that sends a frame larger than this
RESEND_S = 2.0                    # no answer yet: a client sends the same request again (answered once)
GIVE_UP_S = 120.0                 # longer than the longest stop (bus drain and file close under load)
HANDS = ("left", "right", "both")
OUTCOMES = ("saved", "aborted")
# who gave a command (optional ``via``, with every command): logged as the /events source, with the latency
# from ``onset_ns`` (when the operator began it: a gesture's onset, a key press) to when it was done
VIA = ("key", "gesture", "pedal", "voice", "script")
# per command: argument -> (check, required); every other argument is refused
_TEXT = (lambda f, v: checked_text(f, v), False)
_NAME = (lambda f, v: checked_text(f, v, limit=MAX_NAME_CHARS), False)
ARGS = {
    "hello": {}, "status": {}, "undo": {}, "discard": {},
    "start": {"name": (lambda f, v: None if v is None else checked_text(f, v, limit=MAX_NAME_CHARS), False),
              "task": _NAME, "instruction": _TEXT, "operator": _NAME},
    "stop": {"outcome": (lambda f, v: checked_choice(f, v, OUTCOMES), False)},
    "mark_start": {"label": (lambda f, v: checked_text(f, v, limit=MAX_NAME_CHARS, required=True), True),
                   "t_ns": (checked_t_ns, True), "description": _TEXT,
                   "hand": (lambda f, v: checked_choice(f, v, HANDS), False)},
    "mark_end": {"t_ns": (checked_t_ns, True)},
    "note": {"text": (lambda f, v: checked_text(f, v, limit=MAX_TEXT_CHARS, required=True), True)},
}
_ND = "__nd__"


class ProtocolError(ValueError):
    """A control or state message that does not follow docs/control.md."""


def _default(value):
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {_ND: [array.dtype.str, list(array.shape), array.tobytes()]}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} on the control channel")


def _hook(obj: dict):
    if _ND in obj and len(obj) == 1:
        dtype, shape, data = obj[_ND]
        return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    return obj


def pack(payload: dict) -> bytes:
    """A map -> one msgpack frame (numpy arrays and scalars included)."""
    return msgpack.packb(payload, default=_default, use_bin_type=True)


def unpack(frame: bytes) -> dict:
    """One msgpack frame -> a map; ProtocolError when it is not a map or does not decode."""
    try:
        payload = msgpack.unpackb(frame, object_hook=_hook, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types for garbage
        raise ProtocolError(f"not a msgpack map: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict):
        raise ProtocolError(f"expected a msgpack map, got {type(payload).__name__}")
    return payload


def receive_pairs(socket, stop, on_bad) -> "Iterator[list[bytes]]":
    """Two-frame messages from ``socket`` until the ``stop`` event is set (polled every 0.1 s); any other
    frame count is dropped and counted by calling ``on_bad()``."""
    while not stop.is_set():
        if not socket.poll(100):
            continue
        frames = socket.recv_multipart()
        if len(frames) == 2:
            yield frames
        else:
            on_bad()


def request(request_id: str, cmd: str, args: dict | None = None) -> bytes:
    return pack({"v": VERSION, "id": request_id, "cmd": cmd, "args": args or {}})


def exchange(socket, request_id: str, cmd: str, args: dict, timeout_s: float, stop, on_bad, hopeless=None):
    """Send one request on a DEALER ``socket`` and resend it with the same id every RESEND_S until answered,
    ``timeout_s`` has passed, the ``stop`` event is set or ``hopeless()`` (asked before each send) is true.
    (ok, result, error); ok is None when never answered. An answer that cannot be read is dropped and
    counted by calling ``on_bad()``."""
    frame = request(request_id, cmd, args)
    waited = 0.0
    while waited < timeout_s and not stop.is_set() and not (hopeless is not None and hopeless()):
        try:  # never block: once a handshake fails (a CurveZMQ key refused) there is no peer to queue to
            socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            pass  # not queued; the poll below waits out this round and the request is sent again
        if socket.poll(int(min(RESEND_S, timeout_s - waited) * 1000)):
            while socket.poll(0):
                try:
                    answer = unpack(socket.recv())
                except ProtocolError:
                    on_bad()
                    continue
                if answer.get("id") == request_id:
                    return bool(answer.get("ok")), answer.get("result") or {}, str(answer.get("error", ""))
                if answer.get("id") == "":  # the recorder could not read our request at all
                    return False, {}, str(answer.get("error", ""))
        waited += RESEND_S
    return None, {}, ""


def parse_request(frame: bytes) -> tuple[str, str, dict]:
    """(id, cmd, args) of a request frame; ProtocolError naming what is wrong."""
    if len(frame) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"request of {len(frame)} bytes; at most {MAX_REQUEST_BYTES} are accepted")
    payload = unpack(frame)
    if payload.get("v") != VERSION:
        raise ProtocolError(f"protocol version {payload.get('v')!r}; this recorder speaks {VERSION}")
    request_id, cmd, args = payload.get("id"), payload.get("cmd"), payload.get("args", {})
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_NAME_CHARS:
        raise ProtocolError(f"missing request id (a non-empty string of at most {MAX_NAME_CHARS} characters)")
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}")
    if not isinstance(args, dict):
        raise ProtocolError("args must be a map")
    return request_id, cmd, args


def checked_args(cmd: str, args: dict) -> dict:
    """The arguments of a known command, each checked (docs/control.md, "Limits"); ValueError naming the
    first that does not fit. ``by``, ``via`` and ``onset_ns`` are allowed with every command."""
    allowed = {**ARGS[cmd], "by": _NAME, "via": (lambda f, v: checked_choice(f, v, VIA), False),
               "onset_ns": (checked_t_ns, False)}
    unknown = sorted(str(k)[:40] for k in args if k not in allowed)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; {cmd} takes {', '.join(sorted(allowed))}")
    out = {}
    for name, (check, required) in allowed.items():
        if name not in args:
            if required:
                raise ValueError(f"missing argument {name!r}")
            continue
        out[name] = check(name, args[name])
    return out


def reply(request_id: str, ok: bool, result: dict | None = None, error: str = "") -> bytes:
    return pack({"v": VERSION, "id": request_id, "ok": ok, "error": error, "result": result or {}})


def state_endpoint_for(control_endpoint: str) -> str:
    """The state feed's endpoint beside a control endpoint: ``ipc://X`` -> ``ipc://X.state``,
    ``tcp://host:PORT`` -> ``tcp://host:PORT+1``."""
    if control_endpoint.startswith("tcp://"):
        host, _, port = control_endpoint[len("tcp://"):].rpartition(":")
        return f"tcp://{host}:{int(port) + 1}"
    if control_endpoint.startswith(("ipc://", "inproc://")):
        return control_endpoint + ".state"
    raise ProtocolError(f"control endpoint {control_endpoint!r}: use ipc://PATH or tcp://HOST:PORT")
