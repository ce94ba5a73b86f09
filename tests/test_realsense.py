"""The RealSense driver through the real pyrealsense2 SDK, on recordings written by its software device
(tests/realsense_fixture.py): D435-like depth-colour offsets, dropped frames, timestamp domains, drift."""

from __future__ import annotations

import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from capture_app.rig.config import DriverConfig  # noqa: E402
from capture_app.core.errors import ConfigError, DeviceNotFoundError  # noqa: E402
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


def test_real_time_playback_maps_a_drifting_device_clock_onto_the_host_clock(tmp_path_factory):
    path, rec = _record(tmp_path_factory, "drift", frames=45, drift_ppm=200.0)
    driver = _driver(playback_file=str(path), real_time=True, width=fx.W, height=fx.H)
    samples = _play(driver)
    stamps = np.array([s.t_capture_ns for s in samples]) / 1e9
    device = np.array([s.t_device_ns for s in samples]) / 1e9
    # mapped stamps advance with the device clock (33.3 ms per frame), not with arrival jitter
    np.testing.assert_allclose(np.diff(stamps), np.diff(device), atol=3e-3)
    assert abs(stamps[-1] - time.monotonic()) < 5
    assert driver.device_info["clock"]["residual_p95_ms"] < 50


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
