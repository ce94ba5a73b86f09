"""The ZED driver: the UVC path through a video file, the SDK path through a fake of pyzed.sl
built from the ZED SDK Python API (tests/fake_pyzed.py): 5.4, and 4.x / 5.0.0-5.0.4 whose ``ERROR_CODE``
has no ordering comparisons (zed-python-api adds them in v5.0.5)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from capture_app.rig.config import DriverConfig
from capture_app.core.errors import DeviceDisconnectedError, DeviceNotFoundError, SDKMissingError
from drivers import zed
from tests import fake_pyzed

W, H = 64, 48  # of the left image


def _driver(**options):
    return zed.ZedCamera(DriverConfig("ego_camera", "zed", "ego_camera", 30, serial="12345", options=options),
                         "inproc://unused")


@pytest.fixture
def side_by_side_video(tmp_path):
    path = str(tmp_path / "zed.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (2 * W, H))
    assert writer.isOpened()
    for k in range(12):
        frame = np.zeros((H, 2 * W, 3), np.uint8)
        frame[:, :W] = (10 * k, 0, 200)      # left half: BGR, red-ish, brightness grows
        frame[:, W:] = (0, 255, 0)           # right half green
        writer.write(frame)
    writer.release()
    return path


def test_uvc_path_publishes_the_left_half_in_rgb(side_by_side_video, monkeypatch):
    monkeypatch.setattr(zed, "import_zed_sdk", lambda: (_ for _ in ()).throw(SDKMissingError("no sdk")))
    driver = _driver(uvc_device=side_by_side_video)  # backend auto: falls back to UVC
    driver.open()
    frames = []
    try:
        while not driver.playback_finished:
            sample = driver.read()
            if sample is not None:
                frames.append(sample)
    finally:
        driver.close()
    assert driver.backend == "uvc" and len(frames) == 12
    for k, sample in enumerate(frames):
        image = sample.arrays["color"]
        assert image.shape == (H, W, 3)
        r, g, b = image[H // 2, W // 2].astype(int)
        assert abs(r - 200) < 12 and g < 20 and abs(b - 10 * k) < 12  # RGB, left half only
    stamps = np.array([s.t_capture_ns for s in frames])
    assert np.median(np.diff(stamps)) == pytest.approx(1e9 / 30, rel=0.2)


def test_missing_uvc_device_says_what_to_check(monkeypatch):
    monkeypatch.setattr(zed, "import_zed_sdk", lambda: (_ for _ in ()).throw(SDKMissingError("no sdk")))
    with pytest.raises(DeviceNotFoundError, match="no video device .*ls /dev/video"):
        _driver(uvc_device="/dev/video97").open()


def test_sdk_backend_without_the_sdk_explains_the_pyzed_trap():
    with pytest.raises(SDKMissingError, match="do not pip install 'pyzed'"):
        _driver(backend="sdk").open()


SDK_VERSIONS = ["4.2.5", "5.0.3", "5.4.0"]  # ERROR_CODE without ordering (4.x, 5.0.0-5.0.4), with (>= 5.0.5)


@pytest.fixture(params=SDK_VERSIONS)
def sl(monkeypatch, request):
    fake = fake_pyzed.module(request.param)
    monkeypatch.setattr(zed, "import_zed_sdk", lambda: fake)
    return fake


def _grab(driver, n):
    return [driver.read() for _ in range(n)]


def test_sdk_path_publishes_left_images_with_device_time(sl):
    driver = _driver()
    driver.open()
    samples = _grab(driver, 5)
    driver.close()
    assert sl.Camera.last_init.serial == 12345 and sl.Camera.last_init.depth_mode == sl.DEPTH_MODE.NONE
    assert driver.backend == "sdk" and driver.device_info["intrinsics"]["fy"] == 701.0
    assert sl.Camera.get_sdk_version() in driver.device_info["model"] and driver.device_info["timestamp_domain"] == "zed:SYSTEM CLOCK"
    assert [int(s.arrays["color"][0, 0, 2]) for s in samples] == [1, 2, 3, 4, 5]  # blue -> RGB[2]
    assert [s.t_device_ns for s in samples] == [5_000_000_000_000 + k * 33_333_333 for k in range(1, 6)]


def test_open_warnings_open_the_camera_and_errors_say_what_failed(sl):
    sl.Camera.open_code = sl.ERROR_CODE.CONFIGURATION_FALLBACK  # a warning: below SUCCESS
    driver = _driver()
    driver.open()
    assert driver.device_info["open_warning"] == "CONFIGURATION FALLBACK"
    assert driver.read().arrays["color"].shape == (48, 64, 3)
    driver.close()
    sl.Camera.open_code = sl.ERROR_CODE.CAMERA_NOT_DETECTED
    with pytest.raises(DeviceNotFoundError, match="CAMERA NOT DETECTED"):
        _driver().open()


def test_grab_warnings_still_deliver_images_and_are_counted(sl):
    E = sl.ERROR_CODE
    sl.Camera.grab_script = [E.SUCCESS, E.CORRUPTED_FRAME, E.CAMERA_REBOOTING, E.POTENTIAL_CALIBRATION_ISSUE,
                             E.SUCCESS]
    driver = _driver()
    driver.open()
    samples = _grab(driver, 5)
    driver.close()
    assert samples[2] is None  # rebooting: no new image, no reconnect
    delivered = [s for s in samples if s is not None]
    assert [int(s.arrays["color"][0, 0, 2]) for s in delivered] == [1, 2, 3, 4]
    assert [s.tracking for s in delivered] == ["ok", "degraded", "degraded", "ok"]
    assert delivered[1].meta == {"zed_warning": "CORRUPTED FRAME"}
    assert driver.device_info["grab_warnings"] == {"CORRUPTED FRAME": 1, "CAMERA REBOOTING": 1,
                                                   "POTENTIAL CALIBRATION ISSUE": 1}


def test_grab_errors_reconnect(sl):
    sl.Camera.grab_script = [sl.ERROR_CODE.SUCCESS, sl.ERROR_CODE.FAILURE]
    driver = _driver()
    driver.open()
    assert driver.read() is not None
    with pytest.raises(DeviceDisconnectedError, match="ZED grab failed \\(FAILURE\\)"):
        driver.read()
    driver.close()


def test_sdk_version_comes_from_the_camera_class(sl):
    assert not hasattr(sl, "__version__")
    assert zed.sdk_version(sl) in SDK_VERSIONS


def test_the_fake_models_the_sdk_versions_without_ordering():
    """The contract the driver must live with: ``>`` raises TypeError before zed-python-api v5.0.5."""
    for version in ("4.2.5", "5.0.3"):
        E = fake_pyzed.module(version).ERROR_CODE
        assert E.FAILURE != E.SUCCESS
        with pytest.raises(TypeError):
            E.FAILURE > E.SUCCESS  # noqa: B015
    E = fake_pyzed.module("5.4.0").ERROR_CODE
    assert E.FAILURE > E.SUCCESS > E.CORRUPTED_FRAME


def test_auto_falls_back_to_uvc_when_the_sdk_path_fails(sl, side_by_side_video):
    sl.Camera.open_code = sl.ERROR_CODE.NO_GPU_COMPATIBLE  # the SDK imports but cannot run (no CUDA GPU)
    driver = _driver(uvc_device=side_by_side_video)
    driver.open()
    try:
        assert driver.backend == "uvc" and driver.read() is not None
        assert "NO GPU COMPATIBLE" in driver.device_info["sdk_fallback"]
    finally:
        driver.close()
    sl.Camera.open_code = sl.ERROR_CODE.CAMERA_NOT_DETECTED  # neither path works: both reasons are given
    with pytest.raises(DeviceNotFoundError, match="no video device.*ZED SDK path failed first.*CAMERA NOT DETECTED"):
        _driver(uvc_device="/dev/video97").open()
    with pytest.raises(DeviceNotFoundError, match="CAMERA NOT DETECTED"):  # backend sdk: no fallback
        _driver(backend="sdk", uvc_device=side_by_side_video).open()


def test_auto_falls_back_to_uvc_when_the_sdk_raises(sl, side_by_side_video, monkeypatch):
    def broken_open(self, init):
        raise RuntimeError("CUDA driver version is insufficient")
    monkeypatch.setattr(sl.Camera, "open", broken_open)
    driver = _driver(uvc_device=side_by_side_video)
    driver.open()
    driver.close()
    assert driver.backend == "uvc" and "RuntimeError: CUDA driver" in driver.device_info["sdk_fallback"]
