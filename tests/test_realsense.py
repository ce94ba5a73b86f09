"""The RealSense driver through the real pyrealsense2 SDK, on recordings written by its software device
(tests/realsense_fixture.py): D435-like depth-colour offsets, dropped frames, timestamp domains, drift."""

from __future__ import annotations

import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from capture_app.rig.config import DriverConfig  # noqa: E402
from capture_app.core.clock import NS_PER_S  # noqa: E402
from capture_app.core.errors import ConfigError, DeviceNotFoundError, DeviceTimeoutError  # noqa: E402
from drivers.realsense import RealSenseCamera  # noqa: E402
from tests import realsense_fixture as fx  # noqa: E402


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("rs") / "top.db3"
    fx.write_recording(path, frames=30)
    return path


def _record(tmp_path_factory, name, **kwargs):
    path = tmp_path_factory.mktemp("rs") / f"{name}.db3"
    return path, fx.write_recording(path, rec=fx.Recording(**kwargs))


def _driver(**options):
    config = DriverConfig("top_camera", "realsense", "top_camera", 30, serial=fx.SERIAL, options=options)
    return RealSenseCamera(config, "inproc://unused")


def _play(driver, limit=1000, timeout_s=20):
    samples = []
    driver.open()
    try:
        deadline = time.monotonic() + timeout_s
        while not driver.playback_finished and time.monotonic() < deadline and len(samples) < limit:
            sample = driver.read()
            if sample is not None:
                samples.append(sample)
    finally:
        driver.close()
    return samples


def _frame_numbers(samples):
    return [int(s.arrays["color"][0, 0, 0]) for s in samples]


@pytest.mark.parametrize("offset_ms", [0, 4, 8, 16])
def test_every_colour_frame_is_published_once_with_its_own_depth(tmp_path_factory, offset_ms):
    path, rec = _record(tmp_path_factory, f"offset{offset_ms}", frames=60, depth_offset_ms=offset_ms)
    samples = _play(_driver(playback_file=str(path), real_time=False, width=fx.W, height=fx.H))
    ks = _frame_numbers(samples)
    assert len(samples) >= 59 and ks == sorted(set(ks)), f"{len(samples)} of 60 colour frames, {ks}"
    for k, s in zip(ks, samples):
        assert np.all(s.arrays["depth"] == fx.depth_value(k)), "depth paired with another frame"
        assert s.seq == k and s.tracking == "ok"
        assert s.meta["depth_dt_ms"] == pytest.approx(offset_ms)
        assert s.t_device_ns == pytest.approx(fx.frame_time_ms(rec, k) * 1e6, abs=1e3)


def test_dropped_frames_are_gaps_and_a_missing_depth_is_flagged(tmp_path_factory):
    path, _ = _record(tmp_path_factory, "drops", frames=40, depth_offset_ms=4, drop_color=frozenset({10, 11}),
                      drop_depth=frozenset({20}))
    driver = _driver(playback_file=str(path), real_time=False, width=fx.W, height=fx.H)
    samples = _play(driver)
    ks = _frame_numbers(samples)
    assert 10 not in ks and 11 not in ks and 20 in ks
    assert [s.seq for s in samples] == ks  # the colour frame number: a dropped frame is a sequence gap
    at20 = samples[ks.index(20)]
    assert at20.tracking == "degraded" and at20.meta["depth_missing"] and not at20.arrays["depth"].any()
    assert driver.unpaired_colors == 1
    assert all(np.all(s.arrays["depth"] == fx.depth_value(k)) for k, s in zip(ks, samples) if k != 20)


def test_depth_is_published_raw_so_no_pixel_is_zeroed(tmp_path_factory):
    path, rec = _record(tmp_path_factory, "holes", frames=20, depth_offset_ms=4, holes=True)
    samples = _play(_driver(playback_file=str(path), real_time=False, width=fx.W, height=fx.H))
    for k, s in zip(_frame_numbers(samples), samples):
        np.testing.assert_array_equal(s.arrays["depth"], fx.depth_image(rec, k))


@pytest.mark.parametrize("domain", ["hardware_clock", "system_time", "global_time"])
def test_the_timestamp_domain_is_reported(tmp_path_factory, domain):
    path, _ = _record(tmp_path_factory, domain, frames=8, domain=domain)
    driver = _driver(playback_file=str(path), real_time=False, width=fx.W, height=fx.H)
    assert _play(driver)
    assert driver.device_info["timestamp_domain"] == f"realsense:{domain}"


def test_device_info_carries_intrinsics_extrinsics_and_scale(recording):
    driver = _driver(playback_file=str(recording), real_time=False)
    _play(driver, limit=3)
    info = driver.device_info
    assert info["serial"] == fx.SERIAL
    assert info["color_intrinsics"]["fx"] == pytest.approx(fx.COLOR_FX)
    assert info["depth_intrinsics"]["fx"] == pytest.approx(fx.DEPTH_FX)
    assert info["color_intrinsics"]["cx"] == pytest.approx(fx.W / 2)
    assert info["T_color_depth"]["translation_m"] == pytest.approx(list(fx.DEPTH_TO_COLOR_M))
    assert info["depth_scale_m"] == pytest.approx(0.001) and info["depth_aligned_to_color"] is False
    assert info["clock"]["windows"] >= 1


def _live(monkeypatch, camera, **options):
    """A driver on its *live* path whose camera is ``camera`` (a recording played through the SDK's device API)."""
    monkeypatch.setattr(RealSenseCamera, "_find_camera", camera.find_camera)
    return _driver(width=fx.W, height=fx.H, **options)


def _drain(driver, idle_reads=5, timeout_s=30):
    """Read until ``idle_reads`` reads in a row give nothing."""
    samples, idle, deadline = [], 0, time.monotonic() + timeout_s
    while idle < idle_reads and time.monotonic() < deadline:
        sample = driver.read()
        idle = idle + 1 if sample is None else 0
        if sample is not None:
            samples.append(sample)
    return samples


def test_a_backlog_of_20_frames_after_a_stall_keeps_every_depth(tmp_path_factory, monkeypatch):
    """The consumer stalls while a live camera delivers 20 colour+depth pairs (40 frames, within the 64 the
    queue holds); then read() gets the whole backlog at once. Every colour frame keeps its own depth."""
    path, _ = _record(tmp_path_factory, "backlog", frames=20, depth_offset_ms=4, paced=False)
    camera = fx.RecordedCamera(path, real_time=False)  # frames as fast as the callback takes them
    driver = _live(monkeypatch, camera)
    driver.open()
    camera.play()
    try:
        assert camera.wait_until_played(), "the recording did not play"
        samples = _drain(driver)
    finally:
        driver.close()
    ks = _frame_numbers(samples)
    assert driver.dropped_frames == 0 and ks == list(range(20)), ks
    assert [s.tracking for s in samples] == ["ok"] * len(samples), f"{driver.unpaired_colors} depths lost"
    for k, s in zip(ks, samples):
        assert np.all(s.arrays["depth"] == fx.depth_value(k)) and s.meta["depth_dt_ms"] == pytest.approx(4)


def test_a_silent_live_camera_times_out_after_timeout_ms(tmp_path_factory, monkeypatch):
    path, _ = _record(tmp_path_factory, "silent", frames=5, paced=False)
    camera = fx.RecordedCamera(path, real_time=False)
    driver = _live(monkeypatch, camera, timeout_ms=300)
    driver.open()
    camera.play()
    try:
        assert camera.wait_until_played()
        with pytest.raises(DeviceTimeoutError, match="no frame for 300 ms \\(option timeout_ms\\)"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                driver.read()
    finally:
        driver.close()
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ConfigError, match="timeout_ms"):
            _driver(timeout_ms=bad)


def test_a_drifting_device_clock_is_mapped_onto_the_host_clock_of_arrival(tmp_path_factory, monkeypatch):
    """Frames of a camera whose clock runs 1000 ppm fast arrive at host times the test chooses (capture time on
    the host clock + a 4 ms minimum transport delay + jitter, through the driver's live path and the real SDK
    frames). The mapped stamps must follow the host capture times, not the device clock: ignoring the drift
    would be 10 ms off after 10 s; arrival stamps would carry the jitter."""
    from drivers import realsense as driver_module
    drift_ppm, frames, period_ns, delay_ns = 1000.0, 300, NS_PER_S / fx.FPS, 4_000_000
    path, rec = _record(tmp_path_factory, "drift", frames=frames, drift_ppm=drift_ppm, paced=False)
    host0 = 7_000_000_000_000

    def host_capture(k):
        return host0 + int(round(k * period_ns))

    def jitter(k):  # 0 .. 6 ms, 0 once every 13 frames (the lower envelope the mapping follows)
        return (k * 7919 % 13) * 500_000

    clock = {"now": host0}
    monkeypatch.setattr(driver_module, "now_ns", lambda: clock["now"])
    camera = fx.RecordedCamera(path, real_time=False)
    driver = _live(monkeypatch, camera)
    original = driver._on_frame

    def on_frame(frame):  # the SDK's thread: this frame arrives now; hold the camera while the queue is half full
        while len(driver._frames) >= 32:
            time.sleep(0.002)
        k = frame.get_frame_number()
        clock["now"] = max(clock["now"], host_capture(k) + delay_ns + jitter(k))
        original(frame)
    driver._on_frame = on_frame
    driver.open()
    camera.play()
    samples = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(samples) < frames - 1:
            sample = driver.read()
            if sample is not None:
                samples.append(sample)
    finally:
        driver.close()
    ks = _frame_numbers(samples)
    assert len(ks) >= frames - 2
    late = [(k, s) for k, s in zip(ks, samples) if k >= frames // 2]  # once the fit has several windows
    errors_ms = np.array([(s.t_capture_ns - host_capture(k) - delay_ns) / 1e6 for k, s in late])
    assert np.abs(errors_ms).max() < 1.0, f"mapped stamps off the host capture times by up to {errors_ms} ms"
    device_per_host = 1 + drift_ppm * 1e-6  # the mapping's drift: host runs slower than the device clock
    assert driver.device_info["clock"]["drift_ppm"] == pytest.approx((1 / device_per_host - 1) * 1e6, abs=50)


def test_a_recording_fed_faster_than_real_time_plays_at_its_recorded_pace(tmp_path_factory):
    path, _ = _record(tmp_path_factory, "fast", frames=30, paced=False)  # written in a few ms
    start = time.monotonic()
    samples = _play(_driver(playback_file=str(path), real_time=True, width=fx.W, height=fx.H))
    elapsed = time.monotonic() - start
    assert len(samples) >= 29
    assert elapsed > 0.9, f"29 frame periods of a 30 Hz recording played in {elapsed:.2f} s"


def test_missing_camera_or_recording_says_what_to_do(tmp_path):
    with pytest.raises(DeviceNotFoundError, match="not connected.*capture-app doctor"):
        _driver().open()
    with pytest.raises(DeviceNotFoundError, match="not found; fix options.playback_file"):
        _driver(playback_file=str(tmp_path / "nope.db3")).open()


def test_depth_alignment_is_not_an_option_any_more():
    with pytest.raises(ConfigError, match="align_depth_to_color"):
        _driver(align_depth_to_color=True)
