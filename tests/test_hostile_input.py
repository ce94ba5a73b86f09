"""Hostile and faulty input, as an outsider would send it: messages built from docs/protocol.md
with plain pyzmq + msgpack (not our encoder), schema mismatches, outliers, competing senders,
endpoints that do not own a stream, floods; the decoder fuzzed; full disks; kills and recovery."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture_app.bus.wire import Message, decode_message, decode_messages
from capture_app.cli import main
from capture_app.rig.config import DriverConfig, parse_config, to_toml, with_changes
from capture_app.episode.format import validate_and_summarize
from capture_app.core.errors import BusProtocolError
from capture_app.recorder.session import CaptureSession
from capture_app.bus.checks import MessageCheck, Plausibility
from tests.conftest import small_sim_text


def raw_frames(stream, seq, t_capture_ns, buffers, *, sender=7, tracking="ok", meta=None, header_buffers=None):
    """A message exactly as docs/protocol.md describes it: [topic, msgpack header, raw buffers]."""
    header = {"v": 1, "stream": stream, "seq": seq, "t_capture_ns": t_capture_ns, "t_device_ns": None,
              "t_publish_ns": time.monotonic_ns(), "tracking": tracking, "sender": sender, "meta": meta or {},
              "buffers": header_buffers if header_buffers is not None else
              [[name, array.dtype.str, list(array.shape), "raw"] for name, array in buffers]}
    return [stream.encode(), msgpack.packb(header), *[np.ascontiguousarray(a).tobytes() for _, a in buffers]]


def glove(seq, t, sender=7, keypoints=None, name="keypoints"):
    k = np.zeros((25, 3), np.float32) if keypoints is None else keypoints
    return decode_message(raw_frames("left_glove", seq, t, [(name, k)], sender=sender), t_receive_ns=t + 1_000_000)


# --- the decoder ----------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=5), st.dictionaries(st.sampled_from(
    ["v", "stream", "seq", "t_capture_ns", "t_publish_ns", "tracking", "buffers", "meta", "sender"]),
    st.one_of(st.integers(-2**63, 2**64 - 1), st.text(max_size=8), st.none(), st.lists(st.integers(-2**63, 2**63 - 1), max_size=4),
              st.lists(st.lists(st.one_of(st.text(max_size=4), st.integers(-5, 5)), max_size=4), max_size=3))))
def test_the_decoder_raises_only_protocol_errors_on_garbage(frames, header):
    for candidate in (frames, [b"left_glove", msgpack.packb(header, use_bin_type=True), *frames]):
        try:
            decode_message(candidate)
        except BusProtocolError:
            pass


_SCALARS = st.one_of(st.integers(-2**63, 2**64 - 1), st.text(max_size=8), st.none(), st.booleans(), st.floats())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(-2, 300), st.lists(_SCALARS, max_size=5), st.lists(st.sampled_from(["ok", "lost", "maybe", 3]), max_size=5),
       st.one_of(st.none(), st.lists(_SCALARS, max_size=5)), st.integers(0, 2**63 + 5),
       st.lists(st.tuples(st.sampled_from(["pose", "x"]), st.sampled_from(["<f8", "|u1", "object"]),
                          st.lists(st.integers(-1, 8), max_size=3), st.sampled_from(["raw", "jpeg"])), max_size=2),
       st.lists(st.binary(max_size=128), max_size=3))
def test_a_batch_decodes_whole_and_consistent_or_raises_a_protocol_error(n, stamps, tracking, device, seq, buffers, payloads):
    header = {"v": 2, "stream": "head_tracker", "n": n, "seq": seq, "t_capture_ns": stamps, "t_publish_ns": 1,
              "tracking": tracking, "t_device_ns": device, "buffers": [list(b) for b in buffers], "meta": {}}
    try:
        messages = decode_messages([b"head_tracker", msgpack.packb(header, use_bin_type=True), *payloads])
    except BusProtocolError:
        return
    assert len(messages) == n and [m.seq for m in messages] == list(range(seq, seq + n))
    assert [m.t_capture_ns for m in messages] == stamps and [m.tracking for m in messages] == tracking
    assert all(m.arrays[name].shape == tuple(shape[1:]) for m in messages for name, _, shape, _ in buffers)


# --- the check every message passes ---------------------------------------------------------------
def test_schema_mismatches_are_rejected_whole():
    check = MessageCheck(["left_glove", "top_camera"])
    t = 10**12
    assert check.check(glove(0, t)) is None
    assert check.check(glove(1, t + 1, name="kp")).startswith("missing-buffer")  # was stored as a shifted row
    empty = decode_message(raw_frames("left_glove", 2, t + 2, [], header_buffers=[]), t_receive_ns=t)
    assert check.check(empty) == "missing-buffer:keypoints"
    flat = decode_message(raw_frames("left_glove", 3, t + 3, [("keypoints", np.zeros(75, np.float32))]), t_receive_ns=t)
    assert check.check(flat) == "shape:keypoints"
    f8 = decode_message(raw_frames("left_glove", 4, t + 4, [("keypoints", np.zeros((25, 3)))]), t_receive_ns=t)
    assert check.check(f8) == "dtype:keypoints"
    extra = decode_message(raw_frames("left_glove", 5, t + 5, [("keypoints", np.zeros((25, 3), np.float32)),
                                                                  ("secret", np.zeros(3))]), t_receive_ns=t)
    assert check.check(extra) == "unknown-buffer:secret"
    rgbd = [("color", np.zeros((4, 6, 3), np.uint8)), ("depth", np.zeros((4, 6), np.uint16))]
    assert check.check(decode_message(raw_frames("top_camera", 0, t, rgbd), t_receive_ns=t)) is None
    bigger = [("color", np.zeros((5, 6, 3), np.uint8)), ("depth", np.zeros((5, 6), np.uint16))]
    assert check.check(decode_message(raw_frames("top_camera", 1, t + 1, bigger), t_receive_ns=t)) == "shape-changed:color"
    bad_scale = decode_message(raw_frames("top_camera", 2, t + 2, rgbd, meta={"depth_scale_m": "mm"}), t_receive_ns=t)
    assert check.check(bad_scale) == "meta:depth_scale_m"
    assert check.check(glove(6, t + 6)) is None  # the valid stream goes on
    assert check.rejected_by_stream()["left_glove"]["missing-buffer:keypoints"] == 2


def test_one_outlier_never_silences_a_stream():
    check = MessageCheck(["left_glove"])
    t = 10**12
    assert check.check(glove(0, t)) is None
    assert check.check(glove(1_000_000, t + 8_000_000)) == "seq-jump"
    assert check.check(glove(1, t + 16_000_000)) is None  # not adopted as the new reference
    future = glove(2, t + 24_000_000)
    future.t_capture_ns += 3600 * 10**9
    assert check.check(future) == "future-stamp"
    assert check.check(glove(3, t + 32_000_000)) is None
    assert check.check(glove(3, t + 40_000_000)) == "seq-backwards"
    assert check.check(glove(4, t + 30_000_000)) == "time-backwards"
    assert check.check(glove(5, t + 48_000_000)) is None


def test_a_real_renumbering_is_adopted_after_a_consistent_run():
    check = MessageCheck(["left_glove"], Plausibility(readopt_after=5))
    t = 10**12
    assert check.check(glove(0, t)) is None
    results = [check.check(glove(500_000 + k, t + (k + 1) * 8_000_000)) for k in range(7)]
    assert results == ["seq-jump"] * 4 + [None, None, None]


def test_a_second_live_sender_cannot_take_a_stream_over_but_a_restarted_driver_can():
    check = MessageCheck(["left_glove"])
    t = 10**12
    assert check.check(glove(0, t, sender=1)) is None
    assert check.check(glove(0, t + 8_000_000, sender=2)) == "competing-sender"  # sender 1 is alive
    assert check.check(glove(1, t + 16_000_000, sender=1)) is None
    check.note_idle(t + 2_100_000_000)  # the bus read up to date, sender 1 unheard for 2.1 s: gone
    restarted = glove(0, t + 2_100_000_000, sender=3)  # a restarted driver
    assert check.check(restarted) is None
    assert check.check(glove(2, t + 2_108_000_000, sender=1)) == "retired-sender"


# --- a live recorder under attack ---------------------------------------------------------------------
def _hostile_session(tmp_path, endpoint, stream="head_tracker"):
    """A small simulated rig whose ``stream`` (a tracker) is published at ``endpoint`` by the test."""
    base = parse_config(small_sim_text(), "<hostile>")
    drivers = [d for d in base.drivers if d.stream != stream]
    drivers.append(DriverConfig(stream, "sim_tracker", stream, 250, endpoint=endpoint))
    return CaptureSession(with_changes(base, drivers=tuple(drivers)))


@contextlib.contextmanager
def _bound_publisher(endpoint, unbounded=False):
    """A raw PUB socket bound at a driver's configured endpoint (no clock service: same host), closed after.
    ``unbounded``: no send high-water mark, so a whole burst leaves and the receiver's bounds decide."""
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    if unbounded:
        socket.setsockopt(zmq.SNDHWM, 0)
    socket.bind(endpoint)
    try:
        yield socket
    finally:
        socket.close()
        context.term()


@pytest.mark.slow
def test_a_live_recorder_keeps_every_valid_sample_and_counts_every_bad_one(tmp_path):
    """A peer on the app's own bus and a peer at a configured ipc endpoint, both hostile."""
    endpoint = f"ipc://{tmp_path}/head.sock"
    with _bound_publisher(endpoint) as remote:  # the configured head_tracker endpoint
        with _hostile_session(tmp_path, endpoint) as session:
            peer = session._context.socket(zmq.PUB)  # a peer on the in-process bus shares the session's context
            peer.connect(session.config.bus_endpoint)
            waiting = session.wait_for_streams(4)
            assert waiting == ["head_tracker"]
            session.start_episode(tmp_path, name="hostile")
            t0 = time.monotonic_ns()
            for k in range(200):
                t = time.monotonic_ns()
                head = np.array([0.1, 1.5, 0.0, 1.0, 0.0, 0.0, 0.0])
                remote.send_multipart(raw_frames("head_tracker", k, t, [("pose", head)], sender=99))
                remote.send_multipart(raw_frames("right_glove", k, t, [("keypoints", np.ones((25, 3), np.float32))]))
                if k % 10 == 0:
                    peer.send_multipart(raw_frames("left_glove", k, t, [("kp", np.zeros((25, 3), np.float32))]))
                    peer.send_multipart(raw_frames("left_glove", 10**7 + k, t, [("keypoints", np.full((25, 3), 9, np.float32))],
                                                   sender=5))
                    peer.send_multipart([b"left_glove", b"\xc1garbage"])
                time.sleep(0.005)
            time.sleep(0.3)
            status = session.stream_status()
            path = session.stop_episode()
            peer.close()
    assert status["left_glove"].rejected >= 20
    summary = validate_and_summarize(path)
    assert summary.problems == [] and summary.status == "complete"
    with h5py.File(path, "r") as f:
        head = f["streams/head_tracker"]
        assert len(head["seq"]) >= 190 and np.all(head["clock_offset_ns"][:] == 0)  # ipc: stamps kept as sent
        glove_group = f["streams/left_glove"]
        lengths = {len(d) for d in glove_group.values() if isinstance(d, h5py.Dataset)}
        assert len(lengths) == 1 and "kp" not in glove_group
        assert not np.any(glove_group["keypoints"][:] == 9)  # the competing sender's data is nowhere
        assert np.all(glove_group["sender_epoch"][:] == 0)
        assert not np.any(f["streams/right_glove/keypoints"][:] == 1)  # not from an endpoint that does not own it
        rejected = json_attr(glove_group, "rejected")
        assert rejected.get("missing-buffer:keypoints", 0) >= 15 and rejected.get("competing-sender", 0) >= 15
        assert json_attr(f["streams/right_glove"], "rejected").get("not-owner", 0) >= 150
        messages = [m.decode() for m in f["events/message"][:]]
        assert any("rejected left_glove" in m for m in messages)
        assert any("malformed messages dropped" in m for m in messages)
        assert f.attrs["bus_malformed"] >= 15


def raw_batch(stream, first_seq, stamps, name, rows, *, sender=7, tracking=None):
    """A batch exactly as docs/protocol.md "Batches" describes it: version 2, lists per sample, buffers with a
    leading n."""
    rows = np.ascontiguousarray(rows)
    header = {"v": 2, "stream": stream, "n": len(stamps), "seq": first_seq, "t_capture_ns": list(stamps),
              "t_device_ns": None, "t_publish_ns": time.monotonic_ns(), "tracking": tracking or ["ok"] * len(stamps),
              "sender": sender, "meta": {}, "buffers": [[name, rows.dtype.str, list(rows.shape), "raw"]]}
    return [stream.encode(), msgpack.packb(header), rows.tobytes()]


@pytest.mark.slow
def test_an_outsiders_batches_are_stored_sample_by_sample_and_bad_ones_refused(tmp_path):
    """A head-tracker publisher written from docs/protocol.md sends batches of 5 poses; one batch is malformed
    (refused whole) and one batch holds a sample whose stamp goes backwards (refused alone)."""
    endpoint = f"ipc://{tmp_path}/head.sock"
    sent = {}  # seq -> (t_capture_ns, x) of every sample that should be stored
    with _bound_publisher(endpoint) as remote:
        with _hostile_session(tmp_path, endpoint) as session:
            session.wait_for_streams(4)
            session.start_episode(tmp_path, name="batches")
            for b in range(40):
                t = time.monotonic_ns()
                seqs = range(5 * b, 5 * b + 5)
                stamps = [t - (4 - i) * 4_000_000 for i in range(5)]
                poses = np.array([[0.001 * s, 1.5, 0.0, 1.0, 0.0, 0.0, 0.0] for s in seqs])
                if b == 10:
                    frames = raw_batch("head_tracker", 5 * b, stamps[:4], "pose", poses)  # 4 stamps for 5 rows
                else:
                    if b == 20:
                        stamps[2] = stamps[1] - 1  # backwards: that sample alone is refused
                    frames = raw_batch("head_tracker", 5 * b, stamps, "pose", poses)
                    sent.update({s: (t_s, 0.001 * s) for s, t_s in zip(seqs, stamps) if not (b == 20 and s == 5 * b + 2)})
                remote.send_multipart(frames)
                time.sleep(0.02)
            time.sleep(0.3)
            path = session.stop_episode()
    with h5py.File(path, "r") as f:
        head = f["streams/head_tracker"]
        stored = dict(zip(head["seq"][:].tolist(), zip(head["t_capture_ns"][:].tolist(), head["pose"][:, 0].tolist())))
        assert json_attr(head, "rejected") == {"time-backwards": 1}
        assert f.attrs["bus_malformed"] >= 1
    first = min(stored)  # the recording may start after the first batches
    assert {s: v for s, v in sent.items() if s >= first} == stored  # stamps as sent, poses bit for bit
    assert first < 50 and 50 not in stored and 102 not in stored and len(stored) >= 150


def test_a_bug_while_handling_one_message_drops_that_message_only(tmp_path, caplog):
    """The dispatcher survives an exception in receiving and in handling a message: the stream goes on."""
    with CaptureSession(parse_config(small_sim_text(), "<bug>")) as session:
        assert session.wait_for_streams(10) == []
        subscriber = session.intake._subscribers[0]
        # the intake takes batch messages whole (recv_waiting_block) and ingests a clean batch with ingest_block
        receive, ingest = subscriber.recv_waiting_block, session.synchronizer.ingest_block
        faults = {"receive": 1, "ingest": 1}
        fault_times = []

        def failing_receive(*args, **kwargs):
            if faults["receive"]:
                faults["receive"] -= 1
                fault_times.append(time.monotonic_ns())
                raise RuntimeError("a bug while receiving")
            return receive(*args, **kwargs)

        def failing_ingest(block):
            if block.stream == "head_tracker" and faults["ingest"]:
                faults["ingest"] -= 1
                fault_times.append(time.monotonic_ns())
                raise RuntimeError("a bug while ingesting")
            return ingest(block)

        session.start_episode(tmp_path, name="bug")
        time.sleep(0.3)
        subscriber.recv_waiting_block, session.synchronizer.ingest_block = failing_receive, failing_ingest
        time.sleep(1.0)
        assert session.intake.dispatcher_alive
        path = session.stop_episode()
    assert faults == {"receive": 0, "ingest": 0} and len(fault_times) == 2
    assert sum("bus dispatcher: message dropped" in r.getMessage() for r in caplog.records) == 2
    with h5py.File(path, "r") as f:
        head = f["streams/head_tracker/t_receive_ns"][:]
        assert np.sum(head > max(fault_times)) >= 150  # ~1 s at 250 Hz went on being stored after both faults


def read_whole(name, item):
    if isinstance(item, h5py.Dataset):
        item[...]


def json_attr(group, name):
    import json
    return json.loads(group.attrs.get(name, "{}"))


@pytest.mark.slow
def test_a_flood_on_one_stream_costs_the_others_nothing(tmp_path):
    """20,000 valid messages in one burst from the publisher that owns left_wrist_tracker."""
    endpoint = f"ipc://{tmp_path}/wrist.sock"
    with _bound_publisher(endpoint, unbounded=True) as owner:
        with _hostile_session(tmp_path, endpoint, "left_wrist_tracker") as session:
            session.wait_for_streams(3)
            session.start_episode(tmp_path, name="flood")
            time.sleep(0.3)
            t = time.monotonic_ns()
            pose = np.array([0.1, 1.5, 0.0, 1.0, 0.0, 0.0, 0.0])
            for k in range(20_000):
                owner.send_multipart(raw_frames("left_wrist_tracker", k, t + k * 1000, [("pose", pose)], sender=1234))
            # the publisher goes on at its rate until the recorder has worked through the burst (however busy the
            # machine): what the burst lost then shows as a gap before a stored sample
            k, deadline = 20_000, time.monotonic() + 60
            while time.monotonic() < deadline:
                t_last = time.monotonic_ns()
                owner.send_multipart(raw_frames("left_wrist_tracker", k, t_last, [("pose", pose)], sender=1234))
                k += 1
                time.sleep(0.05)
                if (session.stream_status()["left_wrist_tracker"].last_capture_ns or 0) >= t_last:
                    break
            sent = k
            path = session.stop_episode()
            # a simulated camera whose thread the burst starves loses frames at the device, as a real one does
            # (drivers/sim/devices.py): those gaps are the camera's, counted by its driver, not the recorder's
            lost_by_camera = {d.config.stream: d.health().lost for d in session.rig.drivers
                              if d.config.stream.endswith("camera")}
    with h5py.File(path, "r") as f:
        flooded = f["streams/left_wrist_tracker"]
        assert len(flooded["seq"]) + flooded.attrs["seq_gaps"] == sent  # every sample stored or counted lost
        for name in ("head_tracker", "right_wrist_tracker", "left_glove", "right_glove", "ego_camera", "top_camera"):
            assert f[f"streams/{name}"].attrs["writer_overflow"] == 0, name
            assert f[f"streams/{name}"].attrs["seq_gaps"] <= lost_by_camera.get(name, 0), name
    assert validate_and_summarize(path).problems == []


# --- the disk, kills and recovery ----------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_the_recording_cleanly_and_everything_before_it_reads(tmp_path, small_disk):
    rig = tmp_path / "rig.toml"
    rig.write_text(small_sim_text(drivers_in="process"))
    result = subprocess.run([sys.executable, "-m", "capture_app.cli", "record", "--config", str(rig), "--out",
                             str(small_disk), "--name", "full", "--duration", "60",
                             "--wait", "60"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr and "disk" in result.stderr and "nearly full" in result.stderr
    path = small_disk / "full.h5"
    summary = validate_and_summarize(path)
    assert summary.problems == [] and summary.status == "failed" and "Free space" in summary.failure
    with h5py.File(path, "r") as f:
        f.visititems(read_whole)  # every dataset reads back
        assert len(f["streams/left_glove/seq"]) > 100


def _record_and_kill(tmp_path, after_s, name):
    rig = tmp_path / "rig.toml"
    rig.write_text(small_sim_text(drivers_in="process"))
    command = [sys.executable, "-m", "capture_app.cli", "record", "--config", str(rig), "--out", str(tmp_path / "out"),
               "--name", name, "--duration", "60", "--wait", "60"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = tmp_path / "out" / f"{name}.h5.partial"
    try:
        deadline = time.monotonic() + 120  # a loaded machine starts the rig slowly
        while not partial.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert partial.exists(), "the recorder never started its episode"
        time.sleep(after_s)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    return partial


@pytest.mark.slow
def test_killed_before_the_first_flush_is_recovered_as_an_empty_episode(tmp_path):
    partial = _record_and_kill(tmp_path, 0.0, "early")
    assert main(["recover", str(partial)]) == 0
    summary = validate_and_summarize(tmp_path / "out" / "early.h5")
    assert summary.problems == [] and summary.status == "recovered"
    assert main(["inspect", str(tmp_path / "out" / "early.h5")]) == 0


@pytest.mark.slow
def test_recover_is_idempotent_survives_its_own_kill_and_takes_an_h5_still_recording(tmp_path):
    partial = _record_and_kill(tmp_path, 1.3, "twice")
    final = tmp_path / "out" / "twice.h5"
    shutil.copy(partial, final)  # as if a crash happened after the rename of a finished file's copy
    with h5py.File(final, "r") as f:
        assert f.attrs["status"] == "recording"
    assert main(["recover", str(final)]) == 0 and main(["recover", str(final)]) == 0
    with h5py.File(final, "r") as f:
        assert f.attrs["status"] == "recovered"
        f.visititems(read_whole)
    final.unlink()
    killed = subprocess.Popen([sys.executable, "-m", "capture_app.cli", "recover", str(partial)])
    time.sleep(0.05)
    killed.kill()
    killed.wait(10)
    target = partial if partial.exists() else final
    assert main(["recover", str(target)]) == 0
    summary = validate_and_summarize(final)
    assert summary.problems == [] and summary.status == "recovered"
