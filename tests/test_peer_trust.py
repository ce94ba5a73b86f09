"""Who may feed a stream or command a recorder (docs/protocol.md and docs/control.md, "Trust model"):
outliers inside the plausibility limits, a second sender on a live stream, status from an endpoint that
does not own its driver, and a second local user (``nobody``, when the tests run as root). Publishers and
control clients here are written from the docs: plain pyzmq + msgpack, only the fields the docs require."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
import time
import uuid

import h5py
import msgpack
import numpy as np
import pytest
import zmq

from capture_app.bus.wire import decode_message
from capture_app.rig.config import DriverConfig, parse_config, with_changes
from capture_app.core.errors import ConfigError
from capture_app.recorder.session import CaptureSession
from capture_app.bus.checks import MessageCheck
from tests.conftest import small_sim_text

NOBODY = 65534


def frames(stream, seq, t_capture_ns, buffers, *, sender=7, meta=None):
    """One version-1 message as docs/protocol.md describes it: [topic, msgpack header, raw buffers]."""
    header = {"v": 1, "stream": stream, "seq": seq, "t_capture_ns": t_capture_ns, "t_device_ns": None,
              "t_publish_ns": time.monotonic_ns(), "tracking": "ok", "sender": sender, "meta": meta or {},
              "buffers": [[name, a.dtype.str, list(a.shape), "raw"] for name, a in buffers]}
    return [stream.encode(), msgpack.packb(header), *[np.ascontiguousarray(a).tobytes() for _, a in buffers]]


def keypoints(value=0.0):
    return [("keypoints", np.full((25, 3), value, np.float32))]


def pose(x=0.1):
    return [("pose", np.array([x, 1.5, 0.0, 1.0, 0.0, 0.0, 0.0]))]


def status_frames(driver, stream, state, sender, last_error=""):
    """A ``_status/<driver>`` message (docs/protocol.md, "Driver health"), with the driver's sender id."""
    meta = {"name": driver, "stream": stream, "state": state, "expected_rate_hz": 250.0, "rate_hz": 250.0,
            "last_sample_age_s": 0.0, "samples": 1, "lost": 0, "errors": 1 if last_error else 0,
            "last_error": last_error, "tracking": "ok", "device": {}}
    return frames(f"_status/{driver}", 0, time.monotonic_ns(), [], sender=sender, meta=meta)


def private_dir(tmp_path, name="bus"):
    directory = tmp_path / name
    directory.mkdir(mode=0o700)
    return directory


def session_with_endpoints(endpoints: dict[str, str], rates: dict[str, float] | None = None,
                           **changes) -> CaptureSession:
    """The small simulated rig, with each stream of ``endpoints`` published by the test at its endpoint (and
    other rig config ``changes``)."""
    base = parse_config(small_sim_text(), "<trust>")
    drivers = [d for d in base.drivers if d.stream not in endpoints]
    for stream, endpoint in endpoints.items():
        rate = (rates or {}).get(stream, 250 if stream.endswith("tracker") else 120)
        drivers.append(DriverConfig(stream, "sim_tracker" if stream.endswith("tracker") else "sim_glove", stream, rate,
                                    endpoint=endpoint))
    return CaptureSession(with_changes(base, drivers=tuple(drivers), **changes))


@contextlib.contextmanager
def bound_publisher(endpoint):
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.bind(endpoint)
    try:
        yield socket
    finally:
        socket.close(0)
        context.term()


def wait_until(condition, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def events_of(f) -> list[str]:
    return [m.decode() for m in f["events/message"][:]]


# --- plausibility: outliers inside the limits ------------------------------------------------------
def _glove(seq, t, sender=7):
    return decode_message(frames("left_glove", seq, t, keypoints(), sender=sender), t_receive_ns=t + 1_000_000)


def _tracker(seq, t, receive, sender=7):
    return decode_message(frames("head_tracker", seq, t, pose(), sender=sender), t_receive_ns=receive)


def test_an_outlier_inside_the_limits_is_refused_and_never_becomes_the_reference():
    check = MessageCheck({"left_glove": 120.0, "head_tracker": 250.0})
    t = 10**12
    assert check.check(_glove(0, t)) is None
    assert check.check(_glove(99_999, t + 8_000_000)) == "seq-jump"  # inside the 100,000 of docs before 2026-12-04
    assert [check.check(_glove(k, t + k * 8_000_000)) for k in range(1, 50)] == [None] * 49
    assert check.check(_tracker(0, t, t + 1_000_000)) is None
    outlier = _tracker(1, t + 4_900_000_000, t + 5_000_000)  # stamped 4.9 s ahead of its arrival (limit 5 s)
    assert check.check(outlier) == "time-jump"
    assert [check.check(_tracker(k, t + k * 4_000_000, t + k * 4_000_000 + 1_000_000)) for k in range(2, 50)] == [None] * 48
    assert check.rejected_by_stream() == {"left_glove": {"seq-jump": 1}, "head_tracker": {"time-jump": 1}}


def test_a_consistent_run_re_anchors_the_reference():
    """A device that really renumbered (or a clock that stepped): the run is adopted, its first samples refused."""
    check = MessageCheck({"left_glove": 120.0})
    t = 10**12
    assert check.check(_glove(0, t)) is None
    results = [check.check(_glove(5_000_000 + k, t + (k + 1) * 8_000_000)) for k in range(55)]
    assert results == ["seq-jump"] * 49 + [None] * 6
    assert check.check(_glove(1, t + 60 * 8_000_000)) == "seq-backwards"  # the old numbering is over


def test_a_gap_the_stream_could_have_produced_is_no_outlier():
    check = MessageCheck({"left_glove": 120.0})
    t = 10**12
    assert check.check(_glove(0, t)) is None
    assert check.check(_glove(1200, t + 10_000_000_000)) is None  # 10 s without samples, then 1199 lost: plausible


@pytest.mark.slow
def test_a_live_recorder_stores_every_valid_sample_around_in_limit_outliers(tmp_path):
    """Two trackers published by the test: one gets a sample with seq +99,999, the other one stamped 4.9 s
    ahead. (Trackers, not a glove: a glove sample without the optional wrist_quat is issue 23's point 2.)"""
    directory = private_dir(tmp_path)
    wrist_at, head_at = f"ipc://{directory}/wrist.sock", f"ipc://{directory}/head.sock"
    streams = ("left_wrist_tracker", "head_tracker")
    with bound_publisher(wrist_at) as wrist, bound_publisher(head_at) as head:
        with session_with_endpoints({"left_wrist_tracker": wrist_at, "head_tracker": head_at}) as session:
            k = 0
            while not all(s.samples for n, s in session.stream_status().items() if n in streams):
                t = time.monotonic_ns()  # until both are connected (a PUB drops messages before the subscription)
                wrist.send_multipart(frames("left_wrist_tracker", k, t, pose(), sender=1))
                head.send_multipart(frames("head_tracker", k, t, pose(), sender=2))
                k += 1
                time.sleep(0.01)
                assert k < 3000, "the session never received the test's trackers"
            session.start_episode(tmp_path, name="outliers")
            first, sent = k, []
            for k in range(first, first + 300):
                t = time.monotonic_ns()
                wrist.send_multipart(frames("left_wrist_tracker", k, t, pose(), sender=1))
                head.send_multipart(frames("head_tracker", k, t, pose(), sender=2))
                sent.append(k)
                if k == first + 100:
                    wrist.send_multipart(frames("left_wrist_tracker", k + 99_999, t + 1, pose(9.0), sender=1))
                    head.send_multipart(frames("head_tracker", k + 1, t + 4_900_000_000, pose(9.0), sender=2))
                time.sleep(0.004)
            path = session.stop_episode()
    with h5py.File(path, "r") as f:
        for stream in streams:
            seq = f[f"streams/{stream}/seq"][:]
            assert list(seq[seq >= first]) == sent, stream  # every valid sample, none refused after the outlier
            assert not np.any(f[f"streams/{stream}/pose"][:, 0] == 9.0)
        assert json.loads(f["streams/left_wrist_tracker"].attrs["rejected"]) == {"seq-jump": 1}
        assert json.loads(f["streams/head_tracker"].attrs["rejected"]) == {"time-jump": 1}
        report = json.loads(f.attrs["quality"])
    assert report["streams"]["left_wrist_tracker"]["seq_gaps"] == 0  # no invented loss of 100,000 samples


# --- sender takeover ----------------------------------------------------------------------------
def test_a_second_sender_takes_a_stream_only_once_the_first_is_gone():
    check = MessageCheck({"left_glove": 120.0})
    t = 10**12
    assert check.check(_glove(0, t, sender=1)) is None
    check.note_idle(t + 900_000_000)  # 0.9 s of real silence: a loaded driver, not a gone one
    assert check.check(_glove(0, t + 900_000_000, sender=2)) == "competing-sender"
    check.note_status(["left_glove"], 1, "running", t + 950_000_000)  # its own status: alive
    check.note_idle(t + 2_500_000_000)
    assert check.check(_glove(1, t + 2_500_000_000, sender=2)) == "competing-sender"
    check.note_status(["left_glove"], 1, "stopped", t + 2_600_000_000)
    assert check.check(_glove(2, t + 2_700_000_000, sender=2)) is None  # its driver said it stopped
    assert check.check(_glove(2, t + 2_710_000_000, sender=1)) == "retired-sender"
    check.note_idle(t + 4_800_000_000)
    assert check.check(_glove(0, t + 4_800_000_000, sender=3)) is None  # 2.1 s unheard with the bus read up to date
    assert check.sender_changes["left_glove"] == 2
    assert [(old, new) for _, old, new, _, _ in check.take_sender_changes()] == [(1, 2), (2, 3)]


@pytest.mark.slow
def test_a_second_sender_cannot_take_a_live_stream_and_a_change_is_an_event(tmp_path):
    """The real head tracker keeps publishing through a stalled dispatcher and a starved half second; a second
    sender on its endpoint is refused throughout. Once the real driver's status says stopped, the new one takes
    over, and the change is in /events and counted."""
    endpoint = f"ipc://{private_dir(tmp_path)}/head.sock"
    real, other = 0xA, 0xB
    with bound_publisher(endpoint) as socket:
        lock = threading.Lock()  # one PUB socket, two senders: sends must not interleave frames

        def send(message):
            with lock:
                socket.send_multipart(message)

        with session_with_endpoints({"head_tracker": endpoint}) as session:
            seq = {"n": 0}
            paused, stop = threading.Event(), threading.Event()

            def real_driver():
                next_status = 0.0
                while not stop.is_set():
                    if paused.is_set():
                        time.sleep(0.005)
                        continue
                    send(frames("head_tracker", seq["n"], time.monotonic_ns(), pose(0.1), sender=real))
                    seq["n"] += 1
                    if time.monotonic() >= next_status:
                        next_status = time.monotonic() + 0.5
                        send(status_frames("head_tracker", "head_tracker", "running", real))
                    time.sleep(0.004)

            driver = threading.Thread(target=real_driver, daemon=True)
            driver.start()
            try:
                wait_until(lambda: session.stream_status()["head_tracker"].samples > 20)
                session.start_episode(tmp_path, name="takeover")
                with session.synchronizer.lock:  # the dispatcher stalls; the real driver goes on publishing
                    time.sleep(0.5)
                    for k in range(3):
                        send(frames("head_tracker", k, time.monotonic_ns(), pose(9.0), sender=other))
                    time.sleep(0.5)
                wait_until(lambda: session.rejected_counts().get("head_tracker", {}).get("competing-sender", 0) >= 3)
                paused.set()  # the real driver's process is starved for 0.6 s
                time.sleep(0.4)
                for k in range(3, 10):
                    send(frames("head_tracker", k, time.monotonic_ns(), pose(9.0), sender=other))
                    time.sleep(0.03)
                paused.clear()
                time.sleep(0.5)
                wait_until(lambda: session.rejected_counts()["head_tracker"]["competing-sender"] >= 10)
            finally:
                stop.set()
                driver.join(5)
            send(status_frames("head_tracker", "head_tracker", "stopped", real))
            time.sleep(0.3)  # the status reaches the dispatcher before the new sender's first sample
            for k in range(10, 30):
                send(frames("head_tracker", k, time.monotonic_ns(), pose(0.2), sender=other))
                time.sleep(0.004)
            wait_until(lambda: session.loss_counts()["sender_changes"].get("head_tracker") == 1)
            path = session.stop_episode()
    with h5py.File(path, "r") as f:
        head = f["streams/head_tracker"]
        x = head["pose"][:, 0]
        assert not np.any(x == 9.0)  # nothing of the competing sender
        assert np.sum(x == 0.2) == 20  # everything of the sender that took over once the first had stopped
        rejected = json.loads(head.attrs["rejected"])
        assert rejected.get("competing-sender") == 10 and "retired-sender" not in rejected
        assert head.attrs["sender_changes"] == 1
        assert any("head_tracker: sender b replaces a" in m for m in events_of(f))


@pytest.mark.slow
def test_status_from_an_endpoint_that_does_not_own_the_driver_is_refused(tmp_path):
    endpoint = f"ipc://{private_dir(tmp_path)}/head.sock"
    with bound_publisher(endpoint) as socket:
        with session_with_endpoints({"head_tracker": endpoint}) as session:
            wait_until(lambda: "left_glove" in session.driver_health())  # the real glove driver reported
            session.start_episode(tmp_path, name="spoofed-status")
            for _ in range(40):  # a spoofed failure of a driver on the app's own bus, from head_tracker's endpoint
                socket.send_multipart(status_frames("left_glove", "left_glove", "failed", 7, "spoofed error"))
                socket.send_multipart(status_frames("head_tracker", "head_tracker", "running", 7))
                time.sleep(0.02)
            wait_until(lambda: session.loss_counts()["status_refused"] >= 10)
            health = session.driver_health()
            assert health["left_glove"].state != "failed" and "spoofed" not in health["left_glove"].last_error
            assert "head_tracker" in health  # its own endpoint's status is taken
            path = session.stop_episode()
    with h5py.File(path, "r") as f:
        messages = events_of(f)
    assert not any("spoofed error" in m for m in messages)
    assert any("refused a status for driver 'left_glove'" in m for m in messages)


# --- local users ---------------------------------------------------------------------------------
def test_keys_are_private_and_monitors_are_a_trust_domain_of_their_own(tmp_path):
    from capture_app.bus.remote import generate_keys, load_keys
    keys = generate_keys(tmp_path / "keys")
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    for name in ("app", "driver", "monitor"):
        assert stat.S_IMODE(os.stat(keys[f"{name}_secret"]).st_mode) == 0o600
    os.chmod(keys["app_secret"], 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keys(str(keys["app_secret"]))


def test_a_control_endpoint_other_users_can_reach_is_refused(tmp_path):
    from capture_app.recorder.control_server import check_control_endpoint
    from capture_app.bus.remote import generate_keys, load_keys
    with pytest.raises(ConfigError, match="tcp:// reaches every local user"):
        check_control_endpoint("tcp://127.0.0.1:5600", None)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    with pytest.raises(ConfigError, match="mode 755"):
        check_control_endpoint(f"ipc://{shared}/control", None)
    check_control_endpoint(f"ipc://{tmp_path}/new/control", None)  # created 0700
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    generate_keys(tmp_path / "keys")
    check_control_endpoint("tcp://127.0.0.1:5600", load_keys(f"{tmp_path}/keys/app.key_secret",
                                                             allowed_client_files=(f"{tmp_path}/keys/monitor.key",)))


@pytest.mark.parametrize("endpoints, bus, match", [
    ({"left_glove": "tcp://127.0.0.1:45619"}, None, "tcp:// needs CurveZMQ keys, on loopback too"),
    ({"left_glove": "ipc:///tmp/gloves.sock"}, None, "group or others can use it"),
    ({}, "tcp://127.0.0.1:45621", "the app's own bus takes inproc:// or ipc://"),
])
def test_a_bus_endpoint_other_users_can_bind_or_reach_is_refused_before_anything_starts(endpoints, bus, match):
    session = session_with_endpoints(endpoints, **({"bus_endpoint": bus} if bus else {}))
    try:
        with pytest.raises(ConfigError, match=match):
            session.start()
        assert not session.rig.drivers and not session.rig.hosts and not session.intake.dispatcher_alive
    finally:
        session.close()


def as_nobody(function, *args, timeout_s=60.0):
    """Run ``function(*args)`` in a forked child as the user nobody (no exec: the interpreter and its
    packages live under root's 0700 home); returns what it returned (JSON), or raises."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, report, never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = {"ok": function(*args)}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + timeout_s
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the nobody child did not finish")
        time.sleep(0.05)
    with os.fdopen(read_end, "rb") as pipe:
        result = json.loads(pipe.read() or b'{"error": "no result"}')
    if "error" in result:
        raise AssertionError(result["error"])
    return result["ok"]


def _command_recorder(endpoint: str) -> str:
    """A control client written from docs/control.md: ``discard`` the take; what came back ("" for nothing)."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        dealer.connect(endpoint)
    except zmq.ZMQError as exc:
        return f"connect refused: {exc}"
    request = {"v": 1, "id": uuid.uuid4().hex, "cmd": "discard", "args": {"by": "operator"}}
    answer = ""
    for _ in range(3):
        dealer.send(msgpack.packb(request))
        if dealer.poll(2000):
            answer = repr(msgpack.unpackb(dealer.recv()))
            break
    dealer.close(0)
    context.term()
    return answer


def _bind_and_publish(endpoint: str) -> str:
    """An impostor glove written from docs/protocol.md: bind the glove's endpoint first and publish."""
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.linger = 0
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as exc:
        socket.close(0)
        context.term()
        return f"bind refused: {exc}"
    t_end = time.monotonic() + 6
    k = 0
    while time.monotonic() < t_end:
        socket.send_multipart(frames("left_glove", k, time.monotonic_ns(), keypoints(9.0), sender=66))
        k += 1
        time.sleep(0.008)
    socket.close(0)
    context.term()
    return f"published {k}"


def _connect_and_publish(endpoint: str) -> str:
    """An impostor on the app's own bus: connect to its ipc socket and publish a glove for 3 s."""
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.linger = 0
    socket.connect(endpoint)
    t_end, k = time.monotonic() + 3, 0
    while time.monotonic() < t_end:
        socket.send_multipart(frames("left_glove", k, time.monotonic_ns(), keypoints(9.0), sender=66))
        k += 1
        time.sleep(0.008)
    socket.close(0)
    context.term()
    return f"published {k}"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a second local user needs root to switch to nobody")


@needs_root
@pytest.mark.slow
def test_another_local_user_cannot_command_a_recorder(tmp_path):
    from capture_app.recorder.control_server import ControlServer
    from capture_app.recorder.takes import Takes
    shared = tempfile.mkdtemp(prefix="capture-trust-", dir="/tmp")  # reachable by others, like a lab's /tmp dir
    os.chmod(shared, 0o755)
    private = tempfile.mkdtemp(prefix="capture-trust-", dir="/tmp")  # 0700
    umask = os.umask(0)  # the worst umask: before the fix, sockets were created world-writable
    try:
        with CaptureSession(parse_config(small_sim_text(), "<recorder>")) as session:
            takes = Takes(session, tmp_path / "episodes")
            with pytest.raises(ConfigError, match="Trust model"):
                ControlServer(session, takes, f"ipc://{shared}/control").start()
            with pytest.raises(ConfigError, match="Trust model"):
                ControlServer(session, takes, "tcp://127.0.0.1:45617").start()
            server = ControlServer(session, takes, f"ipc://{private}/control").start()
            try:
                takes.start(name="victim")
                answer = as_nobody(_command_recorder, f"ipc://{private}/control")
                assert session.recording, f"another user discarded the take: {answer}"
                assert answer == "" or answer.startswith("connect refused")
                assert stat.S_IMODE(os.stat(f"{private}/control").st_mode) == 0o600
            finally:
                server.close()
    finally:
        os.umask(umask)
        for directory in (shared, private):
            for name in os.listdir(directory):
                os.unlink(os.path.join(directory, name))
            os.rmdir(directory)


@needs_root
@pytest.mark.slow
def test_another_local_user_cannot_feed_a_stream(tmp_path):
    """ipc:///tmp/NAME.sock (the README's old example): another user can bind it first, so it is refused; in a
    private directory the other user cannot bind it, and the app's own bus is private too."""
    shared = f"ipc:///tmp/capture-trust-{uuid.uuid4().hex[:8]}-glove.sock"
    impostor = threading.Thread(target=lambda: results.append(as_nobody(_bind_and_publish, shared)))
    results: list[str] = []
    impostor.start()
    try:
        time.sleep(1.0)
        with pytest.raises(ConfigError, match="Trust model"):
            with session_with_endpoints({"left_glove": shared}) as session:
                session.wait_for_streams(3)
                stored = session.stream_status()["left_glove"].samples
                raise AssertionError(f"the app took {stored} samples from another user's socket")
    finally:
        impostor.join(30)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(shared[len("ipc://"):])
    private = f"ipc://{private_dir(tmp_path)}/glove.sock"
    assert as_nobody(_bind_and_publish, private).startswith("bind refused")
    # the app's own bus (drivers in a child process publish to an ipc socket in a private temporary directory)
    config = parse_config(small_sim_text(drivers_in="process"), "<own bus>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(60) == []
        session.start_episode(tmp_path, name="own-bus")
        answer = as_nobody(_connect_and_publish, session.rig.ipc_endpoint)
        path = session.stop_episode()
    assert answer.startswith("published")  # it tried: a connect to an unreachable ipc socket retries silently
    with h5py.File(path, "r") as f:
        assert len(f["streams/left_glove/seq"]) > 0 and not np.any(f["streams/left_glove/keypoints"][:] == 9.0)
        assert f["streams/left_glove/sender_epoch"][:].max() == 0  # one sender: the real driver


def test_refused_statuses_and_sender_changes_are_shown_live():
    from capture_app.monitor.window import losses_of
    shown = losses_of({"losses": {"status_refused": 2, "sender_changes": {"head_tracker": 1, "left_glove": 0}}})
    assert "status refused 2" in shown and "sender changed head_tracker 1x" in shown


def test_a_monitors_key_cannot_pose_as_a_driver_nor_a_drivers_key_subscribe_as_the_app(tmp_path):
    """Drivers and monitors are separate trust domains (docs/protocol.md, Trust model): the app only takes data
    from a server holding driver.key_secret, and a driver only serves the holder of app.key_secret."""
    from capture_app.bus.wire import BusPublisher, BusSubscriber
    from capture_app.bus.remote import generate_keys, load_keys, start_authenticator
    from tests.test_remote import _free_port_pair
    keys = tmp_path / "keys"
    generate_keys(keys)

    def received(server_secret: str, client_secret: str, client_server_key: str) -> int:
        endpoint = f"tcp://127.0.0.1:{_free_port_pair()}"
        context = zmq.Context()
        server_keys = load_keys(f"{keys}/{server_secret}", allowed_client_files=(f"{keys}/app.key",))
        auth = start_authenticator(context, server_keys.allowed_clients)
        publisher = BusPublisher(endpoint, bind=True, context=context, curve=server_keys)
        subscriber = BusSubscriber(connect=[endpoint], context=context,
                                   curve=load_keys(f"{keys}/{client_secret}", f"{keys}/{client_server_key}"))
        got = 0
        try:
            for k in range(150):  # 3 s: long enough for a handshake on a loaded machine
                publisher.send_frames(frames("head_tracker", k, time.monotonic_ns(), pose()))
                got += subscriber.recv(20) is not None
        finally:
            subscriber.close()
            publisher.close()
            auth.stop()
            context.term()
        return got

    assert received("driver.key_secret", "app.key_secret", "driver.key") > 0  # the real pair works
    assert received("monitor.key_secret", "app.key_secret", "driver.key") == 0  # a monitor posing as a driver
    assert received("driver.key_secret", "monitor.key_secret", "driver.key") == 0  # a monitor subscribing


@pytest.mark.parametrize("argv, says", [
    (["driver", "head_tracker", "--publish", "ipc:///tmp/capture-trust-head.sock", "--duration", "1"],
     "group or others can use it"),
    (["driver", "head_tracker", "--publish", "tcp://127.0.0.1:45623", "--duration", "1"], "loopback too"),
    (["serve", "--sim", "--control", "tcp://127.0.0.1:45625", "--out", "."], "tcp:// reaches every local user"),
])
def test_the_command_line_refuses_endpoints_other_users_can_reach_with_one_clear_line(argv, says, capsys):
    from capture_app.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Trust model" in err and "Traceback" not in err
