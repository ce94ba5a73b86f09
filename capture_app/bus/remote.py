"""Drivers on other hosts: clock synchronisation (Lab Streaming Layer style) and CurveZMQ keys.

A driver started with ``capture-app driver NAME --publish tcp://HOST:PORT`` also answers
clock queries on ``tcp://HOST:PORT+1`` (ipc: ``PATH.clock``). The app asks every second:
offset = t_remote - (t_sent + t_received) / 2, with the round trip as its uncertainty. The
estimate used to map a remote capture time onto the app's clock is a line fitted through
the lowest-round-trip measurements of the recent windows (offset and drift). Every
measurement is kept and written into the episode (``/clock_sync/<driver>``).

TCP endpoints require CurveZMQ: ``capture-app keys DIR`` writes a key pair for the app and
one for drivers; a peer without the right key gets nothing.
"""

from __future__ import annotations

import logging
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
def generate_keys(directory: str | Path) -> dict[str, Path]:
    """Write ``app`` and ``driver`` CurveZMQ key pairs (public ``.key``, secret ``.key_secret``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("app", "driver"):
        public, secret = zmq.auth.create_certificates(str(directory), name)
        out[name], out[name + "_secret"] = Path(public), Path(secret)
    return out


@dataclass(frozen=True)
class CurveKeys:
    """Keys for one side: its own key pair, and the peer's public key (client) or allowed clients (server)."""

    public: bytes
    secret: bytes
    server_public: bytes = b""
    allowed_clients_dir: str = ""


def load_keys(secret_file: str, server_public_file: str = "", allowed_clients_dir: str = "") -> CurveKeys:
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
        server = zmq.auth.load_certificate(server_public_file)[0] if server_public_file else b""
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load CurveZMQ keys ({exc}); create them with `capture-app keys DIR`") from None
    return CurveKeys(public, secret, server, allowed_clients_dir)


def secure_server(socket: zmq.Socket, keys: CurveKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def secure_client(socket: zmq.Socket, keys: CurveKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public


def start_authenticator(context: zmq.Context, allowed_clients_dir: str) -> ThreadAuthenticator:
    """Only clients whose public keys are in ``allowed_clients_dir`` may connect."""
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=allowed_clients_dir)
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
