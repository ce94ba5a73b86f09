"""The control channel from the outside (docs/control.md): raw ZeroMQ peers, retries, refusals, attach mid-take."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import h5py
import msgpack
import pytest
import zmq

from capture_app.bus import control_protocol as protocol
from capture_app.episode.annotations import read_segments
from capture_app.rig.child_process import child_env
from capture_app.monitor.client import RecorderClient
from tests.recorder_fixture import running_recorder

pytestmark = pytest.mark.slow


def raw_request(endpoint: str, payload: dict | bytes, timeout_s: float = 30) -> dict:
    """One request from a peer written from docs/control.md alone: a DEALER, one msgpack frame."""
    context = zmq.Context.instance()
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.connect(endpoint)
    try:
        socket.send(payload if isinstance(payload, bytes) else msgpack.packb(payload, use_bin_type=True))
        assert socket.poll(int(timeout_s * 1000)), "the recorder did not answer"
        return msgpack.unpackb(socket.recv(), raw=False)
    finally:
        socket.close(0)


def labels_on_disk(path: str) -> list[str]:
    """The subtask labels another process reads from the file as it is on disk now."""
    code = ("import sys, h5py; from capture_app.episode.annotations import read_segments; "
            "f = h5py.File(sys.argv[1], 'r', locking=False); print(','.join(s.label for s in read_segments(f)))")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=child_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    return [x for x in out.stdout.strip().split(",") if x]


def test_commands_from_a_raw_peer_are_acknowledged_once_durable_and_never_run_twice(tmp_path):
    with running_recorder(tmp_path) as (endpoint, session, takes):
        started = raw_request(endpoint, {"v": 1, "id": "a1", "cmd": "start", "args": {"task": "pour"}})
        assert started["ok"] and started["result"]["path"].endswith(".h5.partial")
        t = session.latest_tick.t_eval_ns
        mark = {"v": 1, "id": "m1", "cmd": "mark_start", "args": {"label": "grasp", "t_ns": t, "hand": "right"}}
        first = raw_request(endpoint, mark)
        assert first["ok"] and first["result"]["current"] == "grasp"
        # acknowledged means on disk: another process reads the mark now, while the take records
        assert labels_on_disk(started["result"]["path"]) == ["grasp"]
        assert raw_request(endpoint, mark) == first  # a resend: same answer, not a second segment
        assert len(takes.annotator.segments) == 1
        stopped = raw_request(endpoint, {"v": 1, "id": "s1", "cmd": "stop", "args": {}})
        assert stopped["ok"]
        deadline = time.monotonic() + 120
        while takes.finishing and time.monotonic() < deadline:  # the final table is being written (docs/control.md)
            time.sleep(0.05)
        with h5py.File(stopped["result"]["path"], "r") as f:
            (segment,) = read_segments(f)
            assert segment.label == "grasp" and segment.end_ns > segment.start_ns
            assert f.attrs["outcome"] == "saved"


@pytest.mark.parametrize("payload, expected", [
    (b"\xc1garbage", "not a msgpack map"),
    ({"v": 9, "id": "x", "cmd": "hello"}, "protocol version 9"),
    ({"v": 1, "cmd": "hello"}, "missing request id"),
    ({"v": 1, "id": "x", "cmd": "format_disk"}, "unknown command 'format_disk'"),
    ({"v": 1, "id": "y", "cmd": "mark_start", "args": {"label": "grasp", "t_ns": 1}}, "no take is recording"),
    ({"v": 1, "id": "z", "cmd": "stop", "args": {"outcome": "maybe"}}, "outcome 'maybe'"),
    ({"v": 1, "id": "w", "cmd": "mark_end", "args": {}}, "missing argument 't_ns'"),
    ({"v": 1, "id": "u", "cmd": "start", "args": {"name": "../../etc/x"}}, "episode name"),
    ({"v": 1, "id": "a", "cmd": "hello", "args": ["not", "a", "map"]}, "args must be a map"),
])
def test_bad_requests_get_a_reason_and_change_nothing(tmp_path, payload, expected):
    with running_recorder(tmp_path) as (endpoint, session, takes):
        answer = raw_request(endpoint, payload)
        assert not answer["ok"] and expected in answer["error"]
        assert not session.recording
        assert raw_request(endpoint, {"v": 1, "id": "h", "cmd": "hello"})["ok"]  # still serving


def test_a_monitor_attaching_mid_take_sees_the_take_and_its_marks(tmp_path):
    with running_recorder(tmp_path) as (endpoint, session, takes):
        first = RecorderClient(endpoint, name="first")
        try:
            first.call("start", {"task": "pour"})
            first.call("mark_start", {"label": "grasp", "t_ns": session.latest_tick.t_eval_ns})
            late = RecorderClient(endpoint, name="late")
            try:
                state = late.status["takes"]
                assert state["recording"] and state["current"] == "grasp" and len(state["segments"]) == 1
                # the live feed reaches the late monitor (the take's first ~100 ms of ticks have no data yet:
                # the live table counts samples received after the start, docs/episode-format.md)
                deadline = time.monotonic() + 10
                while (late.view is None or "ego" not in late.view) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert late.view is not None and "ego" in late.view
            finally:
                late.close()
            first.call("stop")
        finally:
            first.close()


def test_no_recorder_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="no recorder answered at .*capture-app serve"):
        RecorderClient(f"ipc://{tmp_path / 'nobody'}", connect_timeout_s=0.5)


def test_state_endpoint_beside_the_control_endpoint():
    assert protocol.state_endpoint_for("tcp://127.0.0.1:5600") == "tcp://127.0.0.1:5601"
    assert protocol.state_endpoint_for("ipc:///run/x/control") == "ipc:///run/x/control.state"
    with pytest.raises(protocol.ProtocolError):
        protocol.state_endpoint_for("udp://x")


def test_a_monitor_on_another_host_needs_the_keys(tmp_path):
    """tcp with CurveZMQ (docs/control.md): a client with the key directory's pair is served, one without is not."""
    from capture_app.rig.config import parse_config
    from capture_app.recorder.control_server import ControlServer
    from capture_app.bus.remote import generate_keys, load_keys, secure_client
    from capture_app.recorder.session import CaptureSession
    from capture_app.recorder.takes import Takes
    from tests.conftest import small_sim_text
    from tests.test_remote import _free_port_pair
    keys = tmp_path / "keys"
    generate_keys(keys)
    endpoint = f"tcp://127.0.0.1:{_free_port_pair()}"
    with CaptureSession(parse_config(small_sim_text(), "<tcp recorder>")) as session:
        server_keys = load_keys(f"{keys}/app.key_secret", allowed_client_files=(f"{keys}/monitor.key",))
        server = ControlServer(session, Takes(session, tmp_path / "episodes"), endpoint, curve=server_keys).start()
        try:
            client = RecorderClient(endpoint, curve=load_keys(f"{keys}/monitor.key_secret", f"{keys}/app.key"))
            try:
                assert client.hello["protocol"] == 1
                deadline = time.monotonic() + 10
                while client.view is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert client.view is not None  # the state feed is reachable and decrypted too
            finally:
                client.close()
            stranger = tmp_path / "stranger"
            generate_keys(stranger)
            started = time.monotonic()
            with pytest.raises(Exception, match="refused this client's CurveZMQ key: use the monitor.key_secret"):
                RecorderClient(endpoint, connect_timeout_s=60,
                               curve=load_keys(f"{stranger}/driver.key_secret", f"{keys}/app.key"))
            assert time.monotonic() - started < 30  # said after the refusal (a resend), not after the 60 s
            # A request loop that does not watch the handshake (the command thread's) must not hang either:
            # resent past RESEND_S after the refusal, a DEALER with no peer left blocked for ever unless told not to.
            socket = zmq.Context.instance().socket(zmq.DEALER)
            socket.linger = 0
            secure_client(socket, load_keys(f"{stranger}/monitor.key_secret", f"{keys}/app.key"))
            socket.connect(endpoint)
            try:
                assert protocol.exchange(socket, "r1", "hello", {}, 5, threading.Event(),
                                         lambda: None) == (None, {}, "")
            finally:
                socket.close(0)
            with pytest.raises(Exception, match="no recorder answered"):
                RecorderClient(endpoint, connect_timeout_s=1)  # no encryption at all
            with pytest.raises(Exception, match="refused this client's CurveZMQ key"):  # a driver's key: another trust domain
                RecorderClient(endpoint, connect_timeout_s=10, curve=load_keys(f"{keys}/driver.key_secret", f"{keys}/app.key"))
            with pytest.raises(Exception, match="the server key given .app.key. is not this recorder's"):
                RecorderClient(endpoint, connect_timeout_s=10,
                               curve=load_keys(f"{keys}/monitor.key_secret", f"{stranger}/app.key"))
        finally:
            server.close()


@pytest.mark.parametrize("argv", [["serve", "--control", "udp://x"], ["monitor", "--connect", "foo"],
                                  ["monitor", "--connect", "tcp://host:notaport"]])
def test_a_bad_endpoint_on_the_command_line_is_one_clear_line(argv, capsys):
    from capture_app.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "use ipc://PATH or tcp://HOST:PORT" in capsys.readouterr().err


def test_a_refused_request_during_a_take_is_counted_live_and_stored_in_the_take(tmp_path):
    from capture_app.monitor.window import losses_of
    with running_recorder(tmp_path) as (endpoint, session, takes):
        client = RecorderClient(endpoint, name="annotator")
        try:
            client.call("start", {"task": "pour"})
            assert not raw_request(endpoint, b"\xc1garbage")["ok"]
            status = client.call("status")
            assert status["losses"]["control_refused"] == 1
            assert "control refused 1" in losses_of(status)
            path = client.call("stop")["path"]
        finally:
            client.close()
    with h5py.File(path, "r") as f:
        messages = [m.decode() if isinstance(m, bytes) else m for m in f["events/message"][:]]
    assert any("refused a control request: not a msgpack map" in m for m in messages), messages


def test_the_next_take_starts_at_once_and_the_verdict_follows_as_a_take_message_and_a_log_line(tmp_path, caplog):
    """The stop's answer comes once the file is closed; a start right after it is taken while the stopped take's
    final table is still written; the verdict then arrives on the state feed, in takes.history and in the log."""
    caplog.set_level("INFO", logger="capture_app.recorder.takes")
    with running_recorder(tmp_path) as (endpoint, session, takes):
        client = RecorderClient(endpoint)
        try:
            assert raw_request(endpoint, {"v": 1, "id": "a", "cmd": "start", "args": {"name": "first"}})["ok"]
            time.sleep(1.0)
            assert raw_request(endpoint, {"v": 1, "id": "b", "cmd": "stop", "args": {}})["ok"]
            again = raw_request(endpoint, {"v": 1, "id": "c", "cmd": "start", "args": {"name": "second"}})
            assert again["ok"], again
            deadline = time.monotonic() + 120
            while not client.takes_finished and time.monotonic() < deadline:  # the `take` message
                time.sleep(0.1)
            (take,) = [t for t in client.takes_finished if t["name"] == "first"]
            assert take["report"]["verdict"] in ("ok", "redo") and take["verdict_after_s"] >= 0
            (known,) = [t for t in takes.history if t["name"] == "first"]
            assert known["verdict_after_s"] == take["verdict_after_s"] and not known["checking"]
            assert session.recording  # the second take records on
            assert any(r.getMessage().startswith("take first saved: quality ") and "s after the stop" in r.getMessage()
                       for r in caplog.records), [r.getMessage() for r in caplog.records]
        finally:
            client.close()
