"""Faults injected through the rig and the bus: bad values, backwards clocks, floods, foreign streams."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import h5py
import numpy as np
import pytest

from capture_app.bus.wire import BusPublisher
from capture_app.rig.config import DriverConfig, parse_config, with_changes
from capture_app.episode.format import validate_and_summarize
from capture_app.recorder.session import CaptureSession
from drivers.base import Driver, Sample
from drivers.registry import register
from tests.conftest import small_sim_text

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class FaultOptions:
    nan_from_s: float = 1e9
    nan_until_s: float = 1e9
    jump_back_at_s: float = 1e9
    jump_back_ms: float = 0.0
    flood_count: int = 0  # sent in one burst when FaultyTracker.flood_now is set
    stop_at_s: float = 1e9  # delivers nothing from then on (a tracker whose battery died)


@register("test_faulty_tracker")
class FaultyTracker(Driver):
    """A 250 Hz tracker that sends NaN poses, jumps its clock back, or floods, on schedule."""

    Options = FaultOptions
    flood_now = None  # a threading.Event the test sets while recording
    silent_now = None  # a threading.Event: while set, the tracker delivers nothing (its process starved, say)

    def open(self):
        self.start_ns = time.monotonic_ns()
        self.k = 0
        self.flooded = False
        self.jumped = False

    def read(self):
        o = self.options
        t = self.start_ns + int(self.k * 4e6)
        time.sleep(max(0.0, (t - time.monotonic_ns()) / 1e9))
        self.k += 1
        elapsed = (t - self.start_ns) / 1e9
        if elapsed >= o.stop_at_s or (FaultyTracker.silent_now is not None and FaultyTracker.silent_now.is_set()):
            return None
        if FaultyTracker.flood_now is not None and FaultyTracker.flood_now.is_set() and not self.flooded:
            self.flooded = True
            return [Sample(t + i, {"pose": np.array([0, 1, 0, 1, 0, 0, 0.0])}) for i in range(o.flood_count)]
        if elapsed >= o.jump_back_at_s and not self.jumped:
            self.jumped = True
            self.start_ns -= int(o.jump_back_ms * 1e6)
        pose = np.array([0.1, 1.5, 0.0, 1.0, 0.0, 0.0, 0.0])
        if o.nan_from_s <= elapsed < o.nan_until_s:
            pose[0] = np.nan
        return Sample(self.start_ns + int((self.k - 1) * 4e6), {"pose": pose})

    def _publish(self, publisher, sample):  # a list means a burst
        for s in sample if isinstance(sample, list) else [sample]:
            super()._publish(publisher, s)


def _session(tmp_path, **options):
    base = parse_config(small_sim_text(), "<faults>")
    faulty = DriverConfig("head_tracker", "test_faulty_tracker", "head_tracker", 250, options=options)
    return CaptureSession(with_changes(base, drivers=tuple([d for d in base.drivers if d.stream != "head_tracker"]
                                                           + [faulty])))


def _record(session, tmp_path, seconds):
    assert session.wait_for_streams(5) == []
    session.start_episode(tmp_path, name="faults")
    time.sleep(seconds)
    return session.stop_episode()


def test_nan_poses_are_kept_flagged_and_never_used(tmp_path):
    with _session(tmp_path, nan_from_s=2.2, nan_until_s=2.6) as session:
        path = _record(session, tmp_path, 2.5)
        assert session.non_finite_messages >= 90
    with h5py.File(path, "r") as f:
        head = f["streams/head_tracker"]
        nan_rows = np.isnan(head["pose"][:, 0])
        assert nan_rows.sum() >= 90 and np.all(head["tracking"][:][nan_rows] == 2)  # stored, flagged lost
        valid = f["synced/action_valid"][:, :2]
        assert not np.isnan(f["synced/action"][:][valid[:, 0], :9]).any()  # never a NaN marked valid
        assert (~valid[:, 0]).sum() >= 6
        assert any("non-finite values in head_tracker" in m.decode() for m in f["events/message"][:])
    assert validate_and_summarize(path).problems == []


def test_a_clock_jumping_back_is_reported_and_the_rest_kept(tmp_path):
    with _session(tmp_path, jump_back_at_s=2.3, jump_back_ms=200) as session:
        path = _record(session, tmp_path, 2.0)
    with h5py.File(path, "r") as f:
        head = f["streams/head_tracker"]
        assert json.loads(head.attrs["rejected"])["time-backwards"] >= 40
        assert np.all(np.diff(head["t_capture_ns"][:]) > 0)
        assert any("rejected head_tracker" in m.decode() and "time-backwards" in m.decode()
                   for m in f["events/message"][:])
        assert f["streams/left_glove"].attrs["seq_gaps"] == 0  # other streams unaffected
    assert validate_and_summarize(path).problems == []


def test_a_flooding_publisher_is_survived_and_counted(tmp_path):
    import threading
    FaultyTracker.flood_now = threading.Event()
    with _session(tmp_path, flood_count=5_000) as session:
        assert session.wait_for_streams(5) == []
        session.start_episode(tmp_path, name="flood")
        FaultyTracker.flood_now.set()          # 5,000 messages in one burst, while recording
        deadline = time.monotonic() + 60
        received = session.stream_status()["head_tracker"].samples
        while session.stream_status()["head_tracker"].samples < received + 5_000 + 250 and time.monotonic() < deadline:
            time.sleep(0.1)                    # the app has the burst and a second of normal samples after it
        glove = session.stream_status()["left_glove"]  # the rest goes on (a loaded machine may delay it)
        assert glove.state != "lost" and glove.seq_gaps == 0, glove
        path = session.stop_episode()
    FaultyTracker.flood_now = None
    summary = validate_and_summarize(path)
    assert summary.problems == []
    head = next(s for s in summary.streams if s.name == "head_tracker")
    glove = next(s for s in summary.streams if s.name == "left_glove")
    with h5py.File(path, "r") as f:
        attrs = dict(f["streams/head_tracker"].attrs)
    assert head.samples + head.seq_gaps >= 5_000, attrs  # every burst sample is either stored or counted lost
    assert glove.seq_gaps == 0


def test_a_foreign_stream_on_the_bus_is_dropped_and_counted(tmp_path):
    config = parse_config(small_sim_text(), "<foreign>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(5) == []
        session.start_episode(tmp_path, name="foreign")
        publisher = BusPublisher(config.bus_endpoint, context=session._context)
        time.sleep(0.2)
        for seq in range(50):
            publisher.publish("elbow_tracker", seq, time.monotonic_ns(), {"pose": np.zeros(7)})
        time.sleep(0.3)
        publisher.close()
        path = session.stop_episode()
        assert session.unexpected_messages >= 45  # the first may go before the subscription arrives
    with h5py.File(path, "r") as f:
        assert "elbow_tracker" not in f["streams"]
    assert validate_and_summarize(path).problems == []


def test_a_stream_that_stops_mid_take_leaves_events_and_one_that_never_delivers_is_flagged(tmp_path):
    with _session(tmp_path, stop_at_s=2.5) as session:
        path = _record(session, tmp_path, 2.5)  # streams ~1.5 s into the take, then nothing
    with h5py.File(path, "r") as f:
        events = [(s.decode(), m.decode()) for s, m in zip(f["events/source"][:], f["events/message"][:])]
    assert any(source == "head_tracker" and "-> lost" in m and "no data for" in m for source, m in events), events
    with _session(tmp_path, stop_at_s=0.0) as session:
        assert session.wait_for_streams(1.0) == ["head_tracker"]
        session.start_episode(tmp_path, name="silent")
        time.sleep(1.0)
        path = session.stop_episode()
    with h5py.File(path, "r") as f:
        messages = [m.decode() for m in f["events/message"][:]]
    assert "stream head_tracker delivered no sample during the episode (see the driver errors above)" in messages
    summary = validate_and_summarize(path)
    assert summary.problems == [] and summary.warnings == ["stream head_tracker is configured but recorded no sample"]


def test_a_stream_silent_at_the_stop_is_waited_for_then_named_in_the_episode(tmp_path):
    import threading
    FaultyTracker.silent_now = threading.Event()
    try:
        with _session(tmp_path) as session:
            assert session.wait_for_streams(5) == []
            session.start_episode(tmp_path, name="late")
            time.sleep(1.5)
            FaultyTracker.silent_now.set()  # live until 0.3 s before the stop, then nothing
            time.sleep(0.3)
            started = time.monotonic()
            path = session.stop_episode(finalize=False)
            waited = time.monotonic() - started
    finally:
        FaultyTracker.silent_now = None
    assert waited >= 3.0  # the drain gave the silent stream its STOP_DRAIN_S
    with h5py.File(path, "r") as f:
        events = [(lvl.decode(), m.decode()) for lvl, m in zip(f["events/level"][:], f["events/message"][:])]
        assert len(f["streams/left_wrist_tracker/seq"]) > 300  # the others were recorded through the wait
    assert ("warning", "stopped without waiting longer for head_tracker: nothing published after the stop "
                       "within 3.0 s, so its last samples before the stop may be missing") in events, events
