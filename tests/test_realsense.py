"""The RealSense driver through the real pyrealsense2 pipeline, on recordings written by a software device."""

from __future__ import annotations

import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from capture_app.config import DriverConfig  # noqa: E402
from capture_app.errors import DeviceNotFoundError  # noqa: E402
from drivers.realsense import RealSenseCamera  # noqa: E402
from tests import realsense_fixture as fx  # noqa: E402


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("rs") / "top.db3"
    fx.write_recording(path, frames=30)
    return path


def _driver(**options):
    config = DriverConfig("top_camera", "realsense", "top_camera", 30, serial=fx.SERIAL, options=options)
    return RealSenseCamera(config, "inproc://unused")


def _play(driver, limit=60):
    samples = []
    driver.open()
    try:
        deadline = time.monotonic() + 10
        while not driver.playback_finished and time.monotonic() < deadline and len(samples) < limit:
            sample = driver.read()
            if sample is not None:
                samples.append(sample)
    finally:
        driver.close()
    return samples


@pytest.mark.parametrize("align", [False, True])
def test_playback_gives_each_frame_once_with_its_own_depth_and_timestamps(recording, align):
    driver = _driver(playback_file=str(recording), real_time=False, align_depth_to_color=align, width=fx.W,
                     height=fx.H)
    samples = _play(driver)
    assert len(samples) >= 28  # playback through a pipeline may skip the very first frames
    ks = [int(s.arrays["color"][0, 0, 0]) for s in samples]
    assert ks == list(range(ks[0], ks[0] + len(ks))), "a frame was repeated or skipped"
    for k, s in zip(ks, samples):
        assert s.arrays["color"].shape == (fx.H, fx.W, 3)
        assert s.t_device_ns == pytest.approx((fx.FIRST_TIMESTAMP_MS + k * 1000 / fx.FPS) * 1e6, abs=1e3)
        if not align:  # aligned depth is resampled into the colour image: values move at the borders
            assert np.all(s.arrays["depth"] == fx.depth_value(k)), "depth paired with another frame"
        else:
            assert np.median(s.arrays["depth"][s.arrays["depth"] > 0]) == fx.depth_value(k)
        assert s.meta["depth_scale_m"] == pytest.approx(0.001)
    stamps = np.array([s.t_capture_ns for s in samples])
    assert np.all(np.diff(stamps) > 0)


def test_device_info_carries_intrinsics_extrinsics_and_scale(recording):
    driver = _driver(playback_file=str(recording), real_time=False)
    _play(driver, limit=3)
    info = driver.device_info
    assert info["serial"] == fx.SERIAL
    assert info["color_intrinsics"]["fx"] == pytest.approx(fx.COLOR_FX)
    assert info["depth_intrinsics"]["fx"] == pytest.approx(fx.DEPTH_FX)
    assert info["color_intrinsics"]["cx"] == pytest.approx(fx.W / 2)
    assert info["T_color_depth"]["translation_m"] == pytest.approx(list(fx.DEPTH_TO_COLOR_M))
    assert info["depth_scale_m"] == pytest.approx(0.001)
    assert info["clock"]["windows"] >= 1


def test_real_time_playback_maps_device_time_onto_the_host_clock(recording):
    driver = _driver(playback_file=str(recording), real_time=True)
    samples = _play(driver)
    stamps = np.array([s.t_capture_ns for s in samples]) / 1e9
    device = np.array([s.t_device_ns for s in samples]) / 1e9
    # mapped stamps advance with the device clock (33.3 ms per frame), not with arrival jitter
    np.testing.assert_allclose(np.diff(stamps), np.diff(device), atol=2e-3)
    assert abs(stamps[-1] - time.monotonic()) < 5


def test_missing_camera_or_recording_says_what_to_do(tmp_path):
    with pytest.raises(DeviceNotFoundError, match="not connected.*capture-app doctor"):
        _driver().open()
    with pytest.raises(DeviceNotFoundError, match="not found; fix options.playback_file"):
        _driver(playback_file=str(tmp_path / "nope.db3")).open()
