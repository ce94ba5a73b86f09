"""The ZED driver: the UVC path through a video file, the SDK path through a fake of pyzed.sl."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from capture_app.config import DriverConfig
from capture_app.errors import DeviceNotFoundError, SDKMissingError
from drivers import zed

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


class FakeSl:
    """Just enough of pyzed.sl: a camera whose frames are BGRA with a counter in the blue channel."""

    class ERROR_CODE:
        SUCCESS = "SUCCESS"
        CAMERA_NOT_DETECTED = "CAMERA NOT DETECTED"

    RESOLUTION = types.SimpleNamespace(HD720="HD720", HD1080="HD1080")
    DEPTH_MODE = types.SimpleNamespace(NONE="NONE")
    VIEW = types.SimpleNamespace(LEFT="LEFT")
    TIME_REFERENCE = types.SimpleNamespace(IMAGE="IMAGE")
    present = True

    class InitParameters:
        def set_from_serial_number(self, serial):
            self.serial = serial

    class RuntimeParameters:
        pass

    class Mat:
        def get_data(self):
            return self.data

    class Camera:
        def __init__(self):
            self.k = 0

        def open(self, init):
            assert init.serial == 12345 and init.depth_mode == "NONE"
            return FakeSl.ERROR_CODE.SUCCESS if FakeSl.present else FakeSl.ERROR_CODE.CAMERA_NOT_DETECTED

        def get_camera_information(self):
            left = types.SimpleNamespace(fx=700.0, fy=701.0, cx=640.0, cy=360.0, disto=[0.1, 0, 0, 0, 0])
            return types.SimpleNamespace(camera_configuration=types.SimpleNamespace(
                calibration_parameters=types.SimpleNamespace(left_cam=left)))

        def grab(self, runtime):
            self.k += 1
            return FakeSl.ERROR_CODE.SUCCESS

        def retrieve_image(self, mat, view):
            mat.data = np.zeros((H, W, 4), np.uint8)
            mat.data[..., 0] = self.k  # blue

        def get_timestamp(self, reference):
            return types.SimpleNamespace(get_nanoseconds=lambda: 5_000_000_000_000 + self.k * 33_333_333)

        def close(self):
            pass


def test_sdk_path_with_a_fake_camera(monkeypatch):
    monkeypatch.setattr(zed, "import_zed_sdk", lambda: FakeSl)
    driver = _driver()
    driver.open()
    samples = [driver.read() for _ in range(5)]
    driver.close()
    assert driver.backend == "sdk" and driver.device_info["intrinsics"]["fy"] == 701.0
    assert [int(s.arrays["color"][0, 0, 2]) for s in samples] == [1, 2, 3, 4, 5]  # blue -> RGB[2]
    assert [s.t_device_ns for s in samples] == [5_000_000_000_000 + k * 33_333_333 for k in range(1, 6)]
    FakeSl.present = False
    try:
        with pytest.raises(DeviceNotFoundError, match="CAMERA NOT DETECTED"):
            driver.open()
    finally:
        FakeSl.present = True
