"""Values from outside, as an outsider sends them from docs/protocol.md and docs/control.md alone (#23):
a glove that sends only its required buffer, a replayed format-1.0 episode, hostile control arguments and
driver status fields, and a fuzz of every control command and status field during a take: the take always
completes with every sample, and each refusal is clear and counted."""

from __future__ import annotations

import contextlib
import time
import uuid

import h5py
import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture_app.rig.config import DriverConfig, parse_config, with_changes
from capture_app.recorder.control_server import ControlServer
from capture_app.episode.format import validate_and_summarize
from capture_app.recorder.session import CaptureSession
from capture_app.recorder.takes import Takes
from capture_app.recorder.writer import EpisodeMetadata, EpisodeWriter
from tests.conftest import small_sim_text
from tests.test_hostile_input import _bound_publisher, raw_frames

pytestmark = pytest.mark.slow


def _rig_with(stream: str, endpoint: str, driver_type: str, rate: float):
    base = parse_config(small_sim_text(), "<outside>")
    drivers = [d for d in base.drivers if d.stream != stream]
    drivers.append(DriverConfig(stream, driver_type, stream, rate, endpoint=endpoint))
    return with_changes(base, drivers=tuple(drivers))


def _publish_glove_until(socket, stop, sent: list, status=None):
    """left_glove at ~100 Hz with only the required buffer ``keypoints``; ``status()`` gives a status meta
    to publish every 10th sample (or None)."""
    k = len(sent)
    t = time.monotonic_ns()
    keypoints = np.full((25, 3), 0.01, np.float32)
    socket.send_multipart(raw_frames("left_glove", k, t, [("keypoints", keypoints)], sender=41))
    sent.append((k, t))
    if status is not None and k % 10 == 0:
        meta = status()
        if meta is not None:
            header = {"v": 1, "stream": "_status/left_glove", "seq": k, "t_capture_ns": t, "t_device_ns": None,
                      "t_publish_ns": t, "tracking": "ok", "sender": 41, "meta": meta, "buffers": []}
            socket.send_multipart([b"_status/left_glove", msgpack.packb(header, use_bin_type=True)])


def test_a_glove_sending_only_its_required_buffer_is_recorded_whole(tmp_path):
    endpoint = f"ipc://{tmp_path}/glove.sock"
    sent: list = []
    with _bound_publisher(endpoint) as glove:
        with CaptureSession(_rig_with("left_glove", endpoint, "sim_glove", 100)) as session:
            deadline = time.monotonic() + 60
            while session.stream_status()["left_glove"].state == "waiting" and time.monotonic() < deadline:
                _publish_glove_until(glove, None, sent)
                time.sleep(0.01)
            session.start_episode(tmp_path, name="glove")
            first = len(sent)
            for _ in range(150):
                _publish_glove_until(glove, None, sent)
                time.sleep(0.01)
            time.sleep(0.3)
            writer = session.writer
            path = session.stop_episode(finalize=False)
    assert writer.error is None, writer.error
    summary = validate_and_summarize(path)
    assert summary.status == "complete" and summary.problems == []
    with h5py.File(path, "r") as f:
        group = f["streams/left_glove"]
        seq = group["seq"][:].astype(np.int64)
        assert set(range(first + 5, len(sent) - 5)) <= set(seq.tolist())  # every sample of the take
        assert group["wrist_quat"].shape == (len(seq), 4) and np.isnan(group["wrist_quat"][:]).all()


def test_a_replayed_format_1_0_episode_without_wrist_quat_records(tmp_path):
    config = parse_config(small_sim_text(), "<source>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(30) == []
        session.start_episode(tmp_path, name="source")
        time.sleep(1.5)
        source = session.stop_episode(finalize=False)
    with h5py.File(source, "r+") as f:  # as format 1.0 wrote it: no wrist_quat column
        f.attrs["format_version"] = "1.0"
        for hand in ("left", "right"):
            del f[f"streams/{hand}_glove/wrist_quat"]
    replayed = [DriverConfig(d.name, "replay", d.stream, d.rate_hz, options={"episode": str(source), "loop": True})
                if d.stream.endswith("glove") else d for d in config.drivers]
    with CaptureSession(with_changes(config, drivers=tuple(replayed))) as session:
        assert session.wait_for_streams(30) == []
        writer = session.start_episode(tmp_path, name="replayed")
        time.sleep(1.0)
        path = session.stop_episode(finalize=False)
    assert writer.error is None, writer.error
    with h5py.File(path, "r") as f:
        group = f["streams/left_glove"]
        assert len(group["seq"]) > 20 and np.isnan(group["wrist_quat"][:]).all()


# --- the control channel, from docs/control.md ---------------------------------------------------------
class RawControl:
    """A control client written from docs/control.md: a DEALER, one msgpack frame per request."""

    def __init__(self, endpoint: str):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(endpoint)

    def send_frame(self, frame: bytes, timeout_s: float = 60) -> dict | None:
        self.socket.send(frame)
        if not self.socket.poll(int(timeout_s * 1000)):
            return None
        return msgpack.unpackb(self.socket.recv(), raw=False)

    def call(self, cmd, args=None, timeout_s: float = 60) -> dict | None:
        request = {"v": 1, "id": uuid.uuid4().hex, "cmd": cmd, "args": {} if args is None else args}
        return self.send_frame(msgpack.packb(request, use_bin_type=True), timeout_s)

    def close(self):
        self.socket.close()
        self.context.term()


@contextlib.contextmanager
def _recorder_with_outside_glove(tmp_path):
    """A recorder whose left glove is published by the test at a configured ipc endpoint; yields
    (raw control client, glove PUB socket, sent samples list, session, takes)."""
    endpoint = f"ipc://{tmp_path}/glove.sock"
    sent: list = []
    with _bound_publisher(endpoint) as glove:
        with CaptureSession(_rig_with("left_glove", endpoint, "sim_glove", 100)) as session:
            takes = Takes(session, tmp_path / "episodes")
            server = ControlServer(session, takes, f"ipc://{tmp_path}/control").start()
            client = RawControl(server.control_endpoint)
            try:
                deadline = time.monotonic() + 60
                while session.stream_status()["left_glove"].state == "waiting" and time.monotonic() < deadline:
                    _publish_glove_until(glove, None, sent)
                    time.sleep(0.01)
                yield client, glove, sent, session, takes
            finally:
                client.close()
                server.close()
                if session.recording:
                    takes.stop("saved")
                takes.wait_finalized()


HOSTILE = [
    ("note", {"text": "a\x00b"}), ("note", {"text": "x" * (5 << 20)}), ("note", {"text": 12}),
    ("note", {"text": "ok", "by": "eve\x00"}), ("mark_start", {"label": "grasp\x00", "t_ns": 1}),
    ("mark_start", {"label": "grasp", "t_ns": 2 ** 63}), ("mark_start", {"label": "grasp", "t_ns": -5}),
    ("mark_start", {"label": "grasp", "t_ns": 1.5}), ("mark_start", {"label": "grasp", "t_ns": True}),
    ("mark_start", {"label": "grasp", "t_ns": 1, "hand": "banana"}),
    ("mark_start", {"label": "l" * (5 << 20), "t_ns": 1}),
    ("mark_start", {"label": "grasp", "t_ns": 1, "description": "d\x00"}),
    ("mark_start", {"label": ["grasp"], "t_ns": 1}), ("mark_end", {"t_ns": -1}), ("mark_end", {"t_ns": 2 ** 64 - 1}),
    ("mark_end", {"t_ns": "now"}), ("stop", {"outcome": "banana"}), ("start", {"operator": "a\x00"}),
    ("note", {"text": "fine", "extra": 1}),
]


def test_hostile_control_values_are_refused_clearly_and_the_take_goes_on(tmp_path):
    with _recorder_with_outside_glove(tmp_path) as (client, glove, sent, session, takes):
        assert client.call("start", {"task": "pour", "by": "test"})["ok"]
        first = len(sent)
        for cmd, args in HOSTILE:
            _publish_glove_until(glove, None, sent)
            answer = client.call(cmd, args)
            assert answer is not None and answer["ok"] is False, (cmd, args, answer)
            assert "refused" in answer["error"], answer["error"]
        answer = client.send_frame(b"\x81" + msgpack.packb("v") + msgpack.packb("z" * (20 << 20)))  # 20 MB
        assert answer is not None and not answer["ok"] and "bytes" in answer["error"]
        t = session.latest_tick.t_eval_ns
        assert client.call("mark_start", {"label": "grasp", "t_ns": t, "hand": "left"})["ok"]
        assert client.call("mark_end", {"t_ns": t + 1})["ok"]
        assert client.call("note", {"text": "still recording\twell\n"})["ok"]
        for _ in range(50):
            _publish_glove_until(glove, None, sent)
            time.sleep(0.01)
        assert session.writer.error is None
        stop = client.call("stop", {"by": "test"})
        assert stop["ok"], stop
    with h5py.File(stop["result"]["path"], "r") as f:
        seq = set(f["streams/left_glove/seq"][:].astype(np.int64).tolist())
        assert set(range(first + 5, len(sent) - 5)) <= seq
        messages = [m.decode() for m in f["events/message"][:]]
        assert any("still recording" in m for m in messages)
        assert any("refused a control request" in m for m in messages)


def test_the_writer_stores_any_event_value_and_counts_the_repairs(tmp_path):
    writer = EpisodeWriter(tmp_path, EpisodeMetadata("values")).start()
    writer.log_event("info", "operator", "a\x00b \udc80 " + "x" * 10_000, t_ns=2 ** 63)
    writer.log_event("warn\x00", "src\ud800", "fine", t_ns=-1)
    writer.log_event("info", "operator", "plain")
    assert writer.make_durable()
    path = writer.finish({})
    assert writer.error is None and writer.stats().values_repaired == 2
    with h5py.File(path, "r") as f:
        messages = [m.decode() for m in f["events/message"][:]]
        assert len(messages) == 3 and "made storable" in messages[0] and len(messages[0]) < 4500
        assert "\\x00" in messages[0] and messages[2] == "plain"
        assert np.all(f["events/t_ns"][:] > 0) and f.attrs["writer_values_repaired"] == 2


# --- the fuzz ------------------------------------------------------------------------------------------
_ANY = st.one_of(
    st.text(max_size=20), st.sampled_from(["\x00", "a\x00b", "\ud800", "x" * (1 << 20), "", "banana", "left"]),
    st.integers(-2 ** 64, 2 ** 64), st.sampled_from([2 ** 63, 2 ** 63 - 1, -1, 0]), st.floats(allow_nan=True),
    st.none(), st.booleans(), st.binary(max_size=16), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
_COMMANDS = ["note", "mark_start", "mark_end", "undo", "status", "hello", "start", "discard", "stop"]
_ARG_NAMES = ["text", "label", "t_ns", "description", "hand", "by", "name", "task", "instruction", "operator",
              "outcome"]
_STATUS_FIELDS = ["name", "stream", "streams", "state", "expected_rate_hz", "rate_hz", "last_sample_age_s",
                  "samples", "lost", "errors", "last_error", "tracking", "device"]


def test_fuzzed_control_commands_and_status_fields_never_lose_the_take(tmp_path):
    valid_status = {"name": "left_glove", "stream": "left_glove", "streams": ["left_glove"], "state": "running",
                    "expected_rate_hz": 100.0, "rate_hz": 100.0, "last_sample_age_s": 0.01, "samples": 1, "lost": 0,
                    "errors": 0, "last_error": "", "tracking": "ok", "device": {}}
    with _recorder_with_outside_glove(tmp_path) as (client, glove, sent, session, takes):
        assert client.call("start", {"task": "pour"})["ok"]
        first = len(sent)
        answered = []

        @settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.sampled_from(_COMMANDS), st.dictionaries(st.sampled_from(_ARG_NAMES), _ANY, max_size=4),
               st.dictionaries(st.sampled_from(_STATUS_FIELDS), _ANY, max_size=4))
        def one(cmd, args, status_fields):
            if cmd in ("stop", "discard", "start"):
                args = {**args, "bogus": 1}  # always refused: the take must go on
            _publish_glove_until(glove, None, sent, status=lambda: {**valid_status, **status_fields})
            try:
                frame = msgpack.packb({"v": 1, "id": uuid.uuid4().hex, "cmd": cmd, "args": args}, use_bin_type=True)
            except (TypeError, ValueError, UnicodeEncodeError):  # msgpack cannot carry it (a lone surrogate)
                return
            answer = client.send_frame(frame)
            assert answer is not None, (cmd, args)
            answered.append(answer["ok"])

        one()
        for _ in range(100):
            _publish_glove_until(glove, None, sent)
            time.sleep(0.01)
        assert session.writer is not None and session.writer.error is None
        stop = client.call("stop", {"by": "fuzz"})
        assert stop["ok"], stop
        assert client.call("status")["ok"]  # the recorder still serves
    assert len(answered) > 100
    summary = validate_and_summarize(stop["result"]["path"])
    assert summary.status == "complete" and summary.problems == []
    with h5py.File(stop["result"]["path"], "r") as f:
        seq = set(f["streams/left_glove/seq"][:].astype(np.int64).tolist())
        assert set(range(first + 5, len(sent) - 5)) <= seq  # every sample of the take
        assert len(f["streams/left_glove/wrist_quat"]) == len(f["streams/left_glove/seq"])
