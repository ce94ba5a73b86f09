"""Drivers on other hosts: clock synchronisation (Lab Streaming Layer style) and CurveZMQ keys.

A driver started with ``capture-app driver NAME --publish tcp://HOST:PORT`` also answers
clock queries on ``tcp://HOST:PORT+1`` (ipc: ``PATH.clock``). The app asks every second:
offset = t_remote - (t_sent + t_received) / 2, with the round trip as its uncertainty. The
estimate used to map a remote capture time onto the app's clock is a line fitted through
the lowest-round-trip measurements of the recent windows (offset and drift). Every
measurement is kept and written into the episode (``/clock_sync/<driver>``).

TCP endpoints require CurveZMQ: ``capture-app keys DIR`` writes a key pair for the app, one for
drivers and one for monitors (secret files 0600 in a 0700 directory). Two trust domains: a driver
accepts only the app's key, a recorder's control channel only the monitors' key, and each client
checks the server's key; a peer without the right key gets nothing (docs/protocol.md, Trust model).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from capture_app.core.clock import NS_PER_S, now_ns, stamp_skew_ns
from capture_app.core.errors import ConfigError

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 1.0
WINDOW_S = 5.0


def clock_endpoint(endpoint: str) -> str:
    """Where a driver at ``endpoint`` answers clock queries."""
    if endpoint.startswith("tcp://"):
        host, port = endpoint[len("tcp://"):].rsplit(":", 1)
        return f"tcp://{host}:{int(port) + 1}"
    if endpoint.startswith("ipc://"):
        return endpoint + ".clock"
    raise ConfigError(f"no clock service for endpoint {endpoint!r} (tcp:// or ipc:// only)")


def is_loopback(endpoint: str) -> bool:
    return not endpoint.startswith("tcp://") or endpoint[len("tcp://"):].rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]")


# --- keys -----------------------------------------------------------------------------------
KEY_NAMES = ("app", "driver", "monitor")


def generate_keys(directory: str | Path) -> dict[str, Path]:
    """Write ``app``, ``driver`` and ``monitor`` CurveZMQ key pairs (public ``.key``, secret ``.key_secret``);
    the directory is made 0700 and each secret file is created 0600."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    out = {}
    umask = os.umask(0o077)  # no moment where a secret key is readable by others
    try:
        for name in KEY_NAMES:
            public, secret = zmq.auth.create_certificates(str(directory), name)
            os.chmod(secret, 0o600)
            os.chmod(public, 0o644)
            out[name], out[name + "_secret"] = Path(public), Path(secret)
    finally:
        os.umask(umask)
    return out


@dataclass(frozen=True)
class CurveKeys:
    """Keys for one side: its own key pair, and the peer's public key (client) or allowed clients (server)."""

    public: bytes
    secret: bytes
    server_public: bytes = b""
    allowed_clients: tuple = ()  # public keys (Z85) a server accepts; no other client gets through


def load_keys(secret_file: str, server_public_file: str = "", allowed_client_files: tuple = ()) -> CurveKeys:
    """One side's keys: ``secret_file`` (must be 0600 or stricter), the server's public key for a client,
    the public key files of the only clients a server accepts."""
    try:
        mode = stat.S_IMODE(os.stat(secret_file).st_mode)
        if mode & 0o077:
            raise ConfigError(f"secret key {secret_file} has mode {mode:03o}: other local users can read it; "
                              f"`chmod 600 {secret_file}` (and check who has read it)")
        public, secret = zmq.auth.load_certificate(secret_file)
        server = zmq.auth.load_certificate(server_public_file)[0] if server_public_file else b""
        allowed = tuple(zmq.auth.load_certificate(f)[0] for f in allowed_client_files)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load CurveZMQ keys ({exc}); create them with `capture-app keys DIR` (a directory "
                          f"from before monitor keys has no monitor.key: create a new one)") from None
    if secret is None:
        raise ConfigError(f"{secret_file} holds no secret key; use the .key_secret file from `capture-app keys DIR`")
    return CurveKeys(public, secret, server, allowed)


def secure_server(socket: zmq.Socket, keys: CurveKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def secure_client(socket: zmq.Socket, keys: CurveKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public


class _AllowedKeys:
    """ZAP credentials provider: exactly these public keys (Z85), nothing else in any key directory."""

    def __init__(self, keys: tuple):
        self.keys = frozenset(bytes(k) for k in keys)

    def callback(self, domain: str, key: bytes) -> bool:  # pyzmq passes the Z85 form
        allowed = bytes(key) in self.keys
        if not allowed:
            log.warning("refused a CurveZMQ client whose key is not allowed here")
        return allowed


def start_authenticator(context: zmq.Context, allowed_clients: tuple) -> ThreadAuthenticator:
    """On CurveZMQ server sockets of ``context``, only clients holding one of ``allowed_clients`` (public keys)
    complete the handshake."""
    if not allowed_clients:
        raise ConfigError("no client key allowed: a CurveZMQ server would accept nobody")
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AllowedKeys(allowed_clients))
    return auth


# --- the clock service (driver side) --------------------------------------------------------------
class ClockServer:
    """Answers clock queries with this host's monotonic time (a thread)."""

    def __init__(self, endpoint: str, context: zmq.Context, keys: CurveKeys | None = None):
        self._socket = context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            secure_server(self._socket, keys)
        self._socket.bind(endpoint)
        from capture_app.bus.endpoint_trust import restrict_bound_socket
        restrict_bound_socket(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clock-server", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._socket.poll(100):
                self._socket.recv()
                self._socket.send(msgpack.packb({"t_ns": now_ns() + stamp_skew_ns()}))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._socket.close()


# --- the estimate (app side) ------------------------------------------------------------------
@dataclass(frozen=True)
class ClockMeasurement:
    t_local_ns: int    # midpoint of the query on the app's clock
    offset_ns: int     # remote - local
    rtt_ns: int


class ClockOffsetEstimator:
    """remote = local + offset(local): a line through the best (lowest round trip) measurement of each window."""

    def __init__(self, window_s: float = WINDOW_S, history: int = 60):
        self.window_ns = int(window_s * NS_PER_S)
        self.measurements: list[ClockMeasurement] = []
        self._best: deque[ClockMeasurement] = deque(maxlen=history)
        self._window: ClockMeasurement | None = None
        self._lock = threading.Lock()

    def add(self, m: ClockMeasurement) -> None:
        with self._lock:
            self.measurements.append(m)
            if self._window is None or m.t_local_ns - self._best_window_start() >= self.window_ns:
                if self._window is not None:
                    self._best.append(self._window)
                self._window = m
            elif m.rtt_ns < self._window.rtt_ns:
                self._window = m

    def _best_window_start(self) -> int:
        return self._best[-1].t_local_ns if self._best else (self._window.t_local_ns if self._window else 0)

    def offset_at(self, t_local_ns: int) -> int | None:
        """Estimated remote - local (ns) at local time ``t_local_ns``; None before the first measurement."""
        with self._lock:
            points = list(self._best) + ([self._window] if self._window else [])
        if not points:
            return None
        if len(points) < 3:
            return min(points, key=lambda p: p.rtt_ns).offset_ns
        t = np.array([p.t_local_ns for p in points], dtype=float)
        y = np.array([p.offset_ns for p in points], dtype=float)
        slope, intercept = np.polyfit(t - t[0], y, 1)
        return int(round(intercept + slope * (t_local_ns - t[0])))

    def describe(self) -> dict:
        with self._lock:
            best = list(self._best) + ([self._window] if self._window else [])
        if not best:
            return {}
        return {"offset_ns": self.offset_at(best[-1].t_local_ns), "best_rtt_ns": min(p.rtt_ns for p in best),
                "measurements": len(self.measurements)}


class ClockClient:
    """Queries a driver host's clock every second (a thread) and keeps the estimate."""

    def __init__(self, name: str, endpoint: str, context: zmq.Context, keys: CurveKeys | None = None,
                 interval_s: float = SYNC_INTERVAL_S):
        self.name = name
        self.endpoint = endpoint
        self.estimator = ClockOffsetEstimator()
        self._context, self._keys, self._interval = context, keys, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"clock-sync-{name}", daemon=True)
        self._thread.start()

    def _socket(self) -> zmq.Socket:
        socket = self._context.socket(zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        if self._keys is not None:
            secure_client(socket, self._keys)
        socket.connect(self.endpoint)
        return socket

    def _run(self) -> None:
        socket = self._socket()
        burst = 8  # a few quick queries first, then one per interval
        try:
            while not self._stop.is_set():
                t0 = now_ns()
                socket.send(b"t")
                if not socket.poll(1000):
                    socket.close()  # a REQ socket without a reply is stuck: start over
                    socket = self._socket()
                else:
                    t1 = now_ns()
                    remote = msgpack.unpackb(socket.recv())["t_ns"]
                    self.estimator.add(ClockMeasurement((t0 + t1) // 2, remote - (t0 + t1) // 2, t1 - t0))
                burst -= 1
                if self._stop.wait(0.05 if burst > 0 else self._interval):
                    break
        finally:
            socket.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(3)
