"""ZED Mini (head-mounted ego camera): Stereolabs ``pyzed.sl`` when the ZED SDK is installed,
otherwise the camera as a plain UVC device through OpenCV.

UVC: the ZED Mini delivers one side-by-side stereo frame; we publish its left half. The
intrinsics then come from the calibration file. ``uvc_device`` may also be a video
file (played at the configured rate), which is how the path is tested without a camera.
Never install the PyPI package named ``pyzed``: it is unrelated and shadows ``pyzed.sl``.
ZED SDK image timestamps mark USB arrival, not exposure: the calibrated latency offset
of ``ego_camera`` accounts for the difference.

ZED SDK return codes (``sl.ERROR_CODE``, pyzed 5.x ``src/pyzed/sl.pyx`` and ``sl_c.pxd``): the
warnings (SENSOR_CONFIGURATION_CHANGED, POTENTIAL_CALIBRATION_ISSUE, CONFIGURATION_FALLBACK,
SENSORS_DATA_REQUIRED, CORRUPTED_FRAME, CAMERA_REBOOTING) are ordered *below* SUCCESS and the
errors above it. Ordering comparisons (``<``, ``>``) on ``ERROR_CODE`` exist only from zed-python-api
v5.0.5; on 4.x and 5.0.0-5.0.4 the enum compares only with ``==``/``!=`` and ``status > SUCCESS`` raises
``TypeError``. So codes are classified here by identity, name and value (``_severity``), never ordered:
as in Stereolabs' tutorials, an error (above SUCCESS) fails ``open`` and ``grab``, a warning (below
SUCCESS) still opens the camera / delivers an image.

``backend = "auto"`` uses the SDK when it imports *and* opens the camera; when the SDK path fails
for any reason (no CUDA GPU, a camera it does not detect, an SDK exception), the reason is kept in
the device info (``sdk_fallback``) and the camera is opened as a UVC device.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from capture_app.core.clock import NS_PER_S, now_ns, sleep_until_ns
from capture_app.core.clock_mapping import ClockMapper
from capture_app.core.errors import DeviceDisconnectedError, DeviceNotFoundError, SDKMissingError
from drivers.base import Driver, Sample, import_sdk

SDK_HINT = ("pyzed.sl comes only with the Stereolabs ZED SDK installer (needs CUDA); do not pip install 'pyzed' "
            "(an unrelated package). Without the SDK use backend = 'uvc'.")


def import_zed_sdk():
    """``pyzed.sl`` or SDKMissingError."""
    return import_sdk("pyzed.sl", SDK_HINT)


@dataclass(frozen=True)
class ZedOptions:
    backend: str = "auto"          # auto: the SDK if importable, else UVC
    uvc_device: int | str = 0      # /dev/video index, device path, or a video file
    width: int = 1280              # of the left image
    height: int = 720

    def __post_init__(self):
        if self.backend not in ("auto", "sdk", "uvc"):
            raise ValueError(f"option backend = {self.backend!r}: expected auto, sdk or uvc")


# sl.ERROR_CODE warnings (below SUCCESS in sl_c.pxd, 5.x); codes of a newer SDK with a negative value count too
WARNING_CODES = frozenset({"SENSOR_CONFIGURATION_CHANGED", "POTENTIAL_CALIBRATION_ISSUE", "CONFIGURATION_FALLBACK",
                           "SENSORS_DATA_REQUIRED", "CORRUPTED_FRAME", "CAMERA_REBOOTING"})


def _severity(sl, status) -> str:
    """``"ok"``, ``"warning"`` or ``"error"`` for an ``sl.ERROR_CODE``, without ordering comparisons (which
    pyzed < 5.0.5 does not support)."""
    if status == sl.ERROR_CODE.SUCCESS:
        return "ok"
    value = getattr(status, "value", None)
    if getattr(status, "name", None) in WARNING_CODES or (isinstance(value, int) and value < 0):
        return "warning"
    return "error"


def _timestamp_clock(sl) -> str:
    """The clock the SDK stamps images with (SDK 5.x: ``Camera.get_timestamp_clock()``; older: system clock)."""
    getter = getattr(sl.Camera, "get_timestamp_clock", None)
    return f"zed:{getter()}" if getter else "zed:system_clock"


def sdk_version(sl) -> str:
    """The ZED SDK version (``pyzed.sl`` has no ``__version__``; ``Camera.get_sdk_version()`` is static)."""
    return str(sl.Camera.get_sdk_version())


class ZedCamera(Driver):
    """The ego camera; type ``zed``."""

    Options = ZedOptions

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        self._sl = None
        self._camera = None
        self._capture = None
        self._mat = None
        self._clock = ClockMapper()
        self._is_file = False
        self._next_ns = 0
        self.playback_finished = False
        self.backend = ""
        self._runtime = None
        self.grab_warnings: dict[str, int] = {}

    # --- open ---------------------------------------------------------------------------
    def open(self) -> None:
        backend = self.options.backend
        if backend in ("auto", "sdk"):
            try:
                self._sl = import_zed_sdk()
            except SDKMissingError:
                if backend == "sdk":
                    raise
            if self._sl is not None:
                if backend == "sdk":
                    return self._open_sdk()
                try:
                    return self._open_sdk()
                except Exception as exc:  # auto: any failure of the SDK path falls back to UVC, saying why
                    self._close_sdk()
                    reason = str(exc) if isinstance(exc, DeviceNotFoundError) else f"{type(exc).__name__}: {exc}"
                    self.device_info["sdk_fallback"] = f"ZED SDK path failed, using UVC: {reason}"
                    try:
                        return self._open_uvc()
                    except DeviceNotFoundError as uvc_exc:
                        raise DeviceNotFoundError(f"{uvc_exc} The ZED SDK path failed first: {reason}") from None
        self._open_uvc()

    def _close_sdk(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.close()
            except Exception:
                pass

    def _open_sdk(self) -> None:
        sl = self._sl
        camera = sl.Camera()
        init = sl.InitParameters()
        init.camera_resolution = sl.RESOLUTION.HD720 if self.options.height <= 720 else sl.RESOLUTION.HD1080
        init.camera_fps = int(round(self.config.rate_hz))
        init.depth_mode = sl.DEPTH_MODE.NONE
        if self.config.serial:
            init.set_from_serial_number(int(self.config.serial))
        self._camera = camera  # closed by close() / _close_sdk() whatever happens next
        status = camera.open(init)
        severity = _severity(sl, status)
        if severity == "error":
            raise DeviceNotFoundError(f"ZED {self.config.serial or '(any)'} for {self.config.stream} could not be "
                                      f"opened: {status}. Plug it into a USB 3 port and run `capture-app doctor`.")
        if severity == "warning":  # opened, with a warning the engineer must see (e.g. a fallback)
            self.device_info["open_warning"] = str(status)
        self._mat, self._runtime, self.backend = sl.Mat(), sl.RuntimeParameters(), "sdk"
        information = camera.get_camera_information()
        left = information.camera_configuration.calibration_parameters.left_cam
        self.device_info.update({"model": f"{information.camera_model} (ZED SDK {sdk_version(sl)})",
                                 "serial": str(information.serial_number), "backend": "sdk",
                                 "timestamp_domain": _timestamp_clock(sl),
                                 "intrinsics": {"fx": left.fx, "fy": left.fy, "cx": left.cx, "cy": left.cy,
                                                "distortion": list(left.disto)}})

    def _open_uvc(self) -> None:
        device = self.options.uvc_device
        self._is_file = isinstance(device, str) and not device.startswith("/dev/")
        capture = cv2.VideoCapture(device)
        if not capture.isOpened():
            capture.release()
            raise DeviceNotFoundError(
                f"no video device {device!r} for {self.config.stream} (ZED Mini over UVC): plug the camera in, "
                f"check `ls /dev/video*` and options.uvc_device, or install the ZED SDK. ({SDK_HINT})")
        if not self._is_file:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, 2 * self.options.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.options.height)
            capture.set(cv2.CAP_PROP_FPS, self.config.rate_hz)
        self._capture, self.backend = capture, "uvc"
        self._next_ns = now_ns()
        self.device_info.update({"model": "ZED Mini (UVC, left half of the side-by-side frame)", "backend": "uvc",
                                 "intrinsics": "from the calibration file"})

    # --- read -----------------------------------------------------------------------------
    def read(self) -> Sample | None:
        return self._read_sdk() if self.backend == "sdk" else self._read_uvc()

    def _read_sdk(self) -> Sample | None:
        sl = self._sl
        status = self._camera.grab(self._runtime)
        arrival = now_ns()
        severity = _severity(sl, status)
        if severity == "error":
            raise DeviceDisconnectedError(f"ZED grab failed ({status}): check the USB cable; reconnecting")
        tracking, meta = "ok", None
        if severity == "warning":  # a warning: counted and shown; the image may still be usable
            self.grab_warnings[str(status)] = self.grab_warnings.get(str(status), 0) + 1
            self.device_info["grab_warnings"] = dict(self.grab_warnings)
            if status == sl.ERROR_CODE.CAMERA_REBOOTING:
                return None  # no new image while the camera reboots; the stream's rate shows the hole
            tracking, meta = "degraded", {"zed_warning": str(status)}
        self._camera.retrieve_image(self._mat, sl.VIEW.LEFT)
        bgra = self._mat.get_data()
        t_device = int(self._camera.get_timestamp(sl.TIME_REFERENCE.IMAGE).get_nanoseconds())
        self._clock.add(t_device, arrival)
        self.device_info["clock"] = self._clock.describe()
        rgb = cv2.cvtColor(np.asarray(bgra), cv2.COLOR_BGRA2RGB)
        return Sample(self._clock.to_host(t_device), {"color": rgb}, t_device_ns=t_device, tracking=tracking,
                      meta=meta)

    def _read_uvc(self) -> Sample | None:
        if self.playback_finished:
            self._stop.wait(0.2)
            return None
        if self._is_file:  # a file plays at the configured rate
            if not sleep_until_ns(self._next_ns, self._stop):
                return None
            self._next_ns += int(NS_PER_S / self.config.rate_hz)
        ok, frame = self._capture.read()
        t_capture = now_ns()
        if not ok:
            if self._is_file:
                self.playback_finished = True
                return None
            raise DeviceDisconnectedError(f"ZED Mini (UVC {self.options.uvc_device}) stopped delivering frames; "
                                          f"check the cable; reconnecting")
        left = frame[:, : frame.shape[1] // 2]
        return Sample(t_capture, {"color": cv2.cvtColor(left, cv2.COLOR_BGR2RGB)})

    def close(self) -> None:
        self._close_sdk()
        if self._capture is not None:
            self._capture.release()
            self._capture = None
