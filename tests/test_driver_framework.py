"""Driver lifecycle: start, stop, reconnect with back-off, errors reaching the consumer; config validation."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import zmq

from capture_app.bus.wire import BusSubscriber
from capture_app.rig.config import DEFAULT_BATCH_MS, DriverConfig, parse_config
from capture_app.core.errors import ConfigError, DeviceDisconnectedError, DeviceNotFoundError, SDKMissingError
from drivers import base
from drivers.base import Driver, Sample
from drivers.registry import create_driver, driver_class, register


@dataclass(frozen=True)
class FlakyOptions:
    fail_opens: int = 0
    fail_after_samples: int = -1


@register("test_flaky")
class FlakyDriver(Driver):
    """Fails to open ``fail_opens`` times, then streams; loses its device once after N samples."""

    Options = FlakyOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.opens = 0
        self.closes = 0
        self.sent = 0
        self.failed_once = False

    def open(self):
        self.opens += 1
        if self.opens <= self.options.fail_opens:
            raise DeviceNotFoundError(f"flaky device {self.config.serial} not found (attempt {self.opens}); plug it in")

    def read(self):
        time.sleep(0.005)
        if self.sent == self.options.fail_after_samples and not self.failed_once:
            self.failed_once = True
            raise DeviceDisconnectedError("flaky device unplugged; reconnect the cable")
        self.sent += 1
        return Sample(time.monotonic_ns(), {"pose": np.zeros(7)})

    def close(self):
        self.closes += 1


@register("test_no_sdk")
class NoSdkDriver(Driver):
    def open(self):
        raise SDKMissingError("the test SDK is not installed; pip install test-sdk")


def _config(type_name="test_flaky", **options):
    return DriverConfig(name="flaky", type=type_name, stream="head_tracker", rate_hz=200, serial="F1", options=options)


@pytest.fixture
def bus():
    context = zmq.Context()
    subscriber = BusSubscriber(bind=["inproc://drivers"], context=context)
    yield context, subscriber
    subscriber.close()
    context.term()


def _collect(subscriber, seconds):
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = subscriber.recv(50)
        if message is not None:
            out.append(message)
    return out


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(base, "BACKOFF_START_S", 0.02)


def test_start_stream_and_stop(bus):
    context, subscriber = bus
    driver = create_driver(_config(), "inproc://drivers", context=context)
    with driver:
        subscriber.poll(100)
        messages = _collect(subscriber, 0.6)
        assert driver.is_alive()
    assert not driver.is_alive()
    data = [m for m in messages if m.stream == "head_tracker"]
    assert len(data) > 20
    seqs = [m.seq for m in data]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert driver.health().state == "stopped" and driver.closes >= 1


def test_failed_opens_are_retried_with_backoff_and_reported(bus):
    context, subscriber = bus
    driver = create_driver(_config(fail_opens=3), "inproc://drivers", context=context)
    with driver:
        subscriber.poll(100)
        messages = _collect(subscriber, 1.0)
    assert driver.opens >= 4
    statuses = [m.meta for m in messages if m.is_status]
    assert any(s["state"] == "reconnecting" and "not found (attempt" in s["last_error"] for s in statuses)
    assert any(m.stream == "head_tracker" for m in messages), "the driver never recovered"
    assert driver.health().errors == 3


def test_error_inside_a_running_driver_reaches_the_consumer_and_it_resumes(bus):
    context, subscriber = bus
    driver = create_driver(_config(fail_after_samples=20), "inproc://drivers", context=context)
    with driver:
        subscriber.poll(100)
        messages = _collect(subscriber, 1.0)
    errors = [m.meta for m in messages if m.is_status and m.meta["errors"]]
    assert errors and errors[0]["last_error"] == "flaky device unplugged; reconnect the cable"
    data = [m for m in messages if not m.is_status]
    assert data[-1].seq > 20, "streaming did not resume after the reconnect"
    assert driver.opens == 2


def test_missing_sdk_fails_once_without_retrying(bus):
    context, subscriber = bus
    driver = create_driver(_config("test_no_sdk"), "inproc://drivers", context=context)
    driver.start()
    subscriber.poll(100)
    messages = _collect(subscriber, 0.5)
    driver.stop()
    assert driver.health().state == "failed"
    assert any(m.is_status and "pip install test-sdk" in m.meta["last_error"] for m in messages)


def test_unknown_driver_type_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown driver type 'nope'.*sim_glove"):
        driver_class("nope")


def test_unknown_or_bad_driver_option_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['colour'\]"):
        create_driver(DriverConfig("cam", "sim_ego_camera", "ego_camera", 30, options={"colour": 1}), "inproc://x")
    with pytest.raises(ConfigError, match="drop_probability"):
        create_driver(DriverConfig("g", "sim_glove", "left_glove", 120, options={"drop_probability": 2.0}), "inproc://x")


@pytest.mark.parametrize("text, fragment", [
    ('version = 1\n[[drivers]]\nname = "a"\ntype = "sim_glove"\nstream = "elbow"\nrate_hz = 1', "field 'stream'"),
    ('version = 1\n[[drivers]]\nname = "a"\ntype = "sim_glove"\nstream = "left_glove"\nrate_hz = -3', "'rate_hz'"),
    ('version = 1\n[[drivers]]\nname = "a"\ntype = "sim_glove"\nstream = "left_glove"', "missing field(s) ['rate_hz']"),
    ('version = 2', "field 'version'"),
    ('version = 1\n[sync]\nrate_hz = 200\n[[drivers]]\nname="a"\ntype="x"\nstream="left_glove"\nrate_hz=1', "1 to 60"),
    ('version = 1\n[sync]\nbogus = 1\n[[drivers]]\nname="a"\ntype="x"\nstream="left_glove"\nrate_hz=1', "bogus"),
    ('version = 1\n[writer]\nflush_interval_s = 5\n[[drivers]]\nname="a"\ntype="x"\nstream="left_glove"\nrate_hz=1',
     "within a second"),
    ('version = 1', "no [[drivers]]"),
    ('version = 1\n[bus]\nbatch_ms = 80\n[[drivers]]\nname="a"\ntype="x"\nstream="left_glove"\nrate_hz=1', "'batch_ms'"),
    ('version = 1\n[bus]\nbatch_ms = "20"\n[[drivers]]\nname="a"\ntype="x"\nstream="left_glove"\nrate_hz=1', "0..50"),
    ('version = 1\n[sync]\ndelay_ms = 30\n[bus]\nbatch_ms = 20\n[[drivers]]\nname="a"\ntype="x"\nstream="left_glove"\n'
     'rate_hz=1', "'batch_ms' = 20 is invalid; allowed: milliseconds 0..15"),
    ('version = [', "not valid TOML"),
])
def test_invalid_rig_config_is_refused_naming_the_field(text, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "rig.toml")
    assert fragment in str(info.value) and "rig.toml" in str(info.value)


def test_config_written_as_toml_reads_back_equal():
    from capture_app.rig.config import load_config, to_toml, with_changes
    config = with_changes(load_config(), {"*": {"speed": 1.5}, "head_tracker": {"drop_spells_s": [[1.0, 2.0]]}},
                          sim_seed=7, name='lab "2"', bus_batch_ms=5.0)
    again = parse_config(to_toml(config))
    assert again.bus_batch_ms == 5.0 and load_config().bus_batch_ms == DEFAULT_BATCH_MS
    assert again.drivers == config.drivers and again.sync == config.sync and again.writer == config.writer
    assert (again.sim_seed, again.name, again.drivers_in) == (7, 'lab "2"', "process")
    assert again.driver("head_tracker").options["drop_spells_s"] == [[1.0, 2.0]]
    assert "speed" in again.driver("ground_truth").options and "latency_ms" not in again.driver("ground_truth").options
    assert parse_config(config.source_text).sim_seed == 7


@register("test_camera")
class CameraDriver(Driver):
    """A camera giving raw RGB frames (a gradient, so JPEG keeps it recognisable)."""

    def read(self):
        time.sleep(0.01)
        image = np.zeros((48, 64, 3), np.uint8)
        image[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 4
        return Sample(time.monotonic_ns(), {"color": image})


@pytest.mark.parametrize("quality", [None, 80])
def test_a_driver_encodes_its_colour_frames_when_given_a_jpeg_quality(bus, quality):
    from capture_app.episode.image_codec import decode_jpeg
    context, subscriber = bus
    config = DriverConfig(name="cam", type="test_camera", stream="ego_camera", rate_hz=30)
    with create_driver(config, "inproc://drivers", context=context, jpeg_quality=quality) as driver:
        subscriber.poll(100)
        frames = [m for m in _collect(subscriber, 0.5) if m.stream == "ego_camera"]
        encoder_cpu = driver.health().encoder_cpu
    assert frames
    # the encoder's own CPU, for the benchmarks' floor (docs/protocol.md, Driver health: encoder_cpu)
    assert encoder_cpu == {} if quality is None else (encoder_cpu["ego_camera"][0] >= len(frames)
                                                      and encoder_cpu["ego_camera"][1] > 0)
    message = frames[-1]
    if quality is None:  # the writer encodes (encode_in = "writer")
        assert message.encodings["color"] == "raw" and message.arrays["color"].shape == (48, 64, 3)
    else:                # encoded in the driver's own thread: the recorder only moves bytes
        assert message.encodings["color"] == "jpeg" and message.shapes["color"] == (48, 64, 3)
        decoded = decode_jpeg(message.arrays["color"])
        assert np.abs(decoded[..., 0].astype(int) - np.arange(64)[None, :] * 4).max() < 12


def test_a_repeated_sim_frame_is_published_like_any_other(bus):
    """The simulated camera repeats frames (duplicate_probability): a repeat of a frame already published
    was sent raw, as the 1-D JPEG bytes the driver had put in its place, and the recorder rejected it
    (encoding-changed:color)."""
    from capture_app.bus.checks import MessageCheck
    context, subscriber = bus
    config = DriverConfig(name="cam", type="sim_ego_camera", stream="ego_camera", rate_hz=60,
                          options={"width": 64, "height": 48, "duplicate_probability": 0.9})
    with create_driver(config, "inproc://drivers", context=context, jpeg_quality=80):
        subscriber.poll(2000)
        frames = [m for m in _collect(subscriber, 1.0) if m.stream == "ego_camera"]
    assert len(frames) >= 30  # batches of 15 frames: a repeat at the start of each of the 2+ later batches
    check = MessageCheck(["ego_camera"])
    assert [(m.encodings["color"], check.check(m)) for m in frames] == [("jpeg", None)] * len(frames)


def test_encode_in_picks_where_colour_frames_are_encoded():
    from capture_app.rig.config import load_config, with_changes
    from drivers.host import driver_jpeg_quality
    config = load_config()
    assert driver_jpeg_quality(config) == config.writer.jpeg_quality
    import dataclasses
    writer_side = with_changes(config, writer=dataclasses.replace(config.writer, encode_in="writer"))
    assert driver_jpeg_quality(writer_side) is None
    with pytest.raises(ConfigError, match="encode_in"):
        dataclasses.replace(config.writer, encode_in="gpu")


def test_the_recorder_raises_its_priority_or_says_why_not(monkeypatch, caplog):
    import os

    from capture_app.rig import priority
    monkeypatch.setattr(os, "getpriority", lambda *_: 0)
    calls = []
    monkeypatch.setattr(os, "setpriority", lambda *args: calls.append(args))
    assert priority.raise_priority(-5) and calls == [(os.PRIO_PROCESS, 0, -5)]

    def refuse(*_):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "setpriority", refuse)
    with caplog.at_level("INFO"):
        assert not priority.raise_priority(-5)
    assert "normal priority" in caplog.text and "README, 'Priority'" in caplog.text


def test_the_ticking_thread_runs_real_time_where_permitted_and_says_why_not(monkeypatch, caplog):
    import os
    import threading

    from capture_app.rig import priority
    calls = []
    monkeypatch.setattr(os, "sched_setscheduler", lambda *args: calls.append(args))
    assert priority.make_this_thread_realtime(10) == "SCHED_FIFO 10"
    assert calls[0][:2] == (threading.get_native_id(), os.SCHED_FIFO) and calls[0][2].sched_priority == 10
    assert priority.make_this_thread_realtime(0) == "normal (realtime_priority = 0)" and len(calls) == 1

    def refuse(*_):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level("INFO"):
        assert priority.make_this_thread_realtime(10) == "normal (SCHED_FIFO 10 refused: Operation not permitted)"
    assert "README, 'Priority'" in caplog.text


def test_the_synchronizer_records_how_its_ticks_were_scheduled():
    import os
    import time

    from capture_app.rig.config import load_config
    from capture_app.recorder.session import default_calibration
    from capture_app.recorder.synchronizer import Synchronizer
    config = load_config()
    synchronizer = Synchronizer(config.sync, default_calibration(config)).start()
    try:
        deadline = time.monotonic() + 5
        while synchronizer.scheduling == "not started" and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduling = synchronizer.describe()["scheduling"]
        native_id = synchronizer._thread.native_id
        policy = os.sched_getscheduler(native_id) & ~os.SCHED_RESET_ON_FORK
    finally:
        synchronizer.stop()
    # the policy the thread really has is the one recorded (root in CI may or may not hold CAP_SYS_NICE)
    if policy == os.SCHED_FIFO:
        assert scheduling == "SCHED_FIFO 10"
    else:
        assert scheduling.startswith("normal (SCHED_FIFO 10 refused")


def test_the_recorder_threads_that_share_the_tick_gil_run_real_time_below_the_ticks():
    import os
    import threading

    from capture_app.rig.config import parse_config
    from capture_app.recorder.session import CaptureSession
    from tests.conftest import small_sim_text
    config = parse_config(small_sim_text(), "<test>")
    with CaptureSession(config) as session:
        ids = {t.name: t.native_id for t in threading.enumerate()}
        policies = {name: (os.sched_getscheduler(ids[name]) & ~os.SCHED_RESET_ON_FORK,
                           os.sched_getparam(ids[name]).sched_priority)
                    for name in ("bus-dispatcher", "synchronizer")}
    if session.synchronizer.scheduling.startswith("SCHED_FIFO"):  # permitted here
        assert policies == {"bus-dispatcher": (os.SCHED_FIFO, 5), "synchronizer": (os.SCHED_FIFO, 10)}
    else:
        assert policies["bus-dispatcher"][0] == os.SCHED_OTHER
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the thread that started the session is unchanged


def test_a_process_started_from_a_real_time_recorder_thread_is_ordinary():
    import os
    import subprocess
    import sys
    import threading

    from capture_app.rig import priority
    seen = {}

    def recorder_thread():
        seen["thread"] = priority.make_this_thread_realtime(3, reset_on_fork=True)
        seen["child"] = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                                       capture_output=True, text=True).stdout.strip()
    thread = threading.Thread(target=recorder_thread)
    thread.start()
    thread.join(30)
    if seen["thread"].startswith("SCHED_FIFO"):  # permitted here: the child must not inherit it
        assert seen["child"] == str(os.SCHED_OTHER)
    else:
        assert seen["thread"].startswith("normal (SCHED_FIFO 3 refused")


def test_a_status_encoder_cpu_is_read_when_well_formed_and_ignored_when_not():
    from capture_app.bus.driver_status import DriverHealth
    base = {"name": "cam", "stream": "ego_camera"}
    assert DriverHealth.from_dict({**base, "encoder_cpu": {"ego_camera": [30, 0.05]}}).encoder_cpu == \
        {"ego_camera": [30, 0.05]}
    for bad in ([1, 2], {"ego_camera": [1]}, {"ego_camera": ["a", 1]}, {"ego_camera": [True, 1.0]}):
        assert DriverHealth.from_dict({**base, "encoder_cpu": bad}).encoder_cpu == {}


def test_an_unset_batch_hold_fits_a_short_sync_delay():
    """A rig that shortens [sync] delay_ms without naming [bus] batch_ms gets half the delay, not a refusal."""
    text = 'version = 1\n[sync]\ndelay_ms = {}\n[[drivers]]\nname="a"\ntype="x"\nstream="left_glove"\nrate_hz=1'
    assert parse_config(text.format(30), "rig.toml").bus_batch_ms == 15.0
    assert parse_config(text.format(100), "rig.toml").bus_batch_ms == DEFAULT_BATCH_MS
    assert parse_config(text.format(100) + '\n[bus]\nbatch_ms = 0', "rig.toml").bus_batch_ms == 0.0
