"""A fake of Stereolabs' ``pyzed.sl`` (it installs only with the ZED SDK, which needs CUDA).

Built from the real contract, not from our driver: ``stereolabs/zed-python-api`` at 5.4,
``src/pyzed/sl.pyx`` and ``src/pyzed/sl_c.pxd``:

- ``ERROR_CODE`` is an ``enum.Enum`` whose values follow the C++ ``sl::ERROR_CODE``
  (``sl_c.pxd`` declares SENSOR_CONFIGURATION_CHANGED .. CAMERA_REBOOTING before SUCCESS = 0,
  i.e. -6 .. -1, then FAILURE = 1, ...); ``str()`` gives the SDK's text. Stereolabs' tutorials:
  ``open() > SUCCESS`` fails, ``grab() <= SUCCESS`` gives a new image.
- Ordering: ``sl.pyx`` defines ``__lt__``/``__le__``/``__gt__``/``__ge__`` on ``ERROR_CODE`` only from
  tag v5.0.5 on (checked over every tag, /work/shared/reference/devices.md); on 4.x and 5.0.0-5.0.4
  it is a plain ``enum.Enum``: ``==``/``!=`` work, ``status > SUCCESS`` raises ``TypeError``.
  ``module(version)`` gives either (``version`` as ``Camera.get_sdk_version()`` reports it). The
  members are the same in every version here: this fake models the ordering, not which warning
  codes each release added.
- ``Camera.get_sdk_version()`` is a static method (the module has no ``__version__``);
  ``Camera.get_timestamp_clock()`` (5.x) returns a ``TIMESTAMP_CLOCK``.
- ``Camera.get_timestamp(TIME_REFERENCE.IMAGE)`` returns a ``Timestamp`` with ``get_nanoseconds()``.
- ``retrieve_image(mat, VIEW.LEFT)`` fills a BGRA ``Mat``; ``get_camera_information()`` has
  ``serial_number``, ``camera_model`` and ``camera_configuration.calibration_parameters.left_cam``.
"""

from __future__ import annotations

import enum
import types

import numpy as np


class _Named(enum.Enum):
    def __str__(self):
        return self.name.replace("_", " ")


class _Ordered(_Named):
    def __lt__(self, other):
        return self.value < other.value if isinstance(other, type(self)) else NotImplemented

    def __le__(self, other):
        return self.value <= other.value if isinstance(other, type(self)) else NotImplemented

    def __gt__(self, other):
        return self.value > other.value if isinstance(other, type(self)) else NotImplemented

    def __ge__(self, other):
        return self.value >= other.value if isinstance(other, type(self)) else NotImplemented


ERROR_CODE_VALUES = {  # sl_c.pxd
    "SENSOR_CONFIGURATION_CHANGED": -6,
    "POTENTIAL_CALIBRATION_ISSUE": -5,
    "CONFIGURATION_FALLBACK": -4,
    "SENSORS_DATA_REQUIRED": -3,
    "CORRUPTED_FRAME": -2,
    "CAMERA_REBOOTING": -1,
    "SUCCESS": 0,
    "FAILURE": 1,
    "NO_GPU_COMPATIBLE": 2,
    "NOT_ENOUGH_GPU_MEMORY": 3,
    "CAMERA_NOT_DETECTED": 4,
    "SENSORS_NOT_INITIALIZED": 5,
    "SENSORS_NOT_AVAILABLE": 6,
    "INVALID_RESOLUTION": 7,
    "LOW_USB_BANDWIDTH": 8,
}
ERROR_CODE = _Ordered("ERROR_CODE", ERROR_CODE_VALUES)  # as from v5.0.5 (module() builds each version's own)


class TIMESTAMP_CLOCK(_Ordered):
    SYSTEM_CLOCK = 0
    MONOTONIC_CLOCK = 1
    MONOTONIC_RAW_CLOCK = 2


class RESOLUTION(_Ordered):
    HD2K = 0
    HD1080 = 1
    HD1200 = 2
    HD720 = 3


class DEPTH_MODE(_Ordered):
    NONE = 0
    PERFORMANCE = 1


class VIEW(_Ordered):
    LEFT = 0
    RIGHT = 1


class TIME_REFERENCE(_Ordered):
    IMAGE = 0
    CURRENT = 1


class Timestamp:
    def __init__(self, ns: int):
        self._ns = ns

    def get_nanoseconds(self) -> int:
        return self._ns


class InitParameters:
    def __init__(self):
        self.camera_resolution = RESOLUTION.HD720
        self.camera_fps = 0
        self.depth_mode = DEPTH_MODE.PERFORMANCE
        self.serial = None

    def set_from_serial_number(self, serial: int) -> None:
        self.serial = serial


class RuntimeParameters:
    pass


class Mat:
    def __init__(self):
        self.data = None

    def get_data(self):
        return self.data


class Camera:
    """One scripted camera. Class attributes set by a test: what ``open`` returns and the
    sequence of ``grab`` codes (SUCCESS once the script is used up)."""

    open_code = ERROR_CODE.SUCCESS
    grab_script: list = []
    shape = (48, 64)
    last_init: InitParameters | None = None

    def __init__(self):
        self.k = 0
        self._grabs = list(type(self).grab_script)

    @staticmethod
    def get_sdk_version() -> str:
        return "5.4.0"

    @staticmethod
    def get_timestamp_clock() -> TIMESTAMP_CLOCK:
        return TIMESTAMP_CLOCK.SYSTEM_CLOCK

    def open(self, init: InitParameters) -> ERROR_CODE:
        type(self).last_init = init
        return type(self).open_code

    def get_camera_information(self):
        left = types.SimpleNamespace(fx=700.0, fy=701.0, cx=640.0, cy=360.0, disto=[0.1, 0, 0, 0, 0])
        return types.SimpleNamespace(serial_number=12345, camera_model="ZED Mini", camera_configuration=types.SimpleNamespace(
            calibration_parameters=types.SimpleNamespace(left_cam=left)))

    def grab(self, runtime: RuntimeParameters) -> ERROR_CODE:
        code = self._grabs.pop(0) if self._grabs else type(self).open_code.__class__.SUCCESS
        if code.value <= 0 and code.name != "CAMERA_REBOOTING":  # by value: every version's enum has it
            self.k += 1  # a new image
        return code

    def retrieve_image(self, mat: Mat, view: VIEW) -> ERROR_CODE:
        mat.data = np.zeros((*self.shape, 4), np.uint8)
        mat.data[..., 0] = self.k  # blue channel counts images
        return type(self).open_code.__class__.SUCCESS

    def get_timestamp(self, reference: TIME_REFERENCE) -> Timestamp:
        return Timestamp(5_000_000_000_000 + self.k * 33_333_333)

    def close(self) -> None:
        pass


def module(version: str = "5.4.0") -> types.ModuleType:
    """The fake as a module object, as ``import pyzed.sl`` of ZED SDK ``version`` would give it: from 5.0.5 on
    ``ERROR_CODE`` orders (``<``, ``>``), before it (4.x, 5.0.0-5.0.4) it only compares with ``==``/``!=``."""
    major, minor, patch = (int(x) for x in version.split(".")[:3])
    ordered = (major, minor, patch) >= (5, 0, 5)
    error_code = _Ordered("ERROR_CODE", ERROR_CODE_VALUES) if ordered else _Named("ERROR_CODE", ERROR_CODE_VALUES)
    camera = type("Camera", (Camera,), {"open_code": error_code.SUCCESS, "grab_script": [], "last_init": None,
                                        "get_sdk_version": staticmethod(lambda: version)})
    m = types.ModuleType("pyzed.sl")
    for name in ("TIMESTAMP_CLOCK", "RESOLUTION", "DEPTH_MODE", "VIEW", "TIME_REFERENCE", "Timestamp",
                 "InitParameters", "RuntimeParameters", "Mat"):
        setattr(m, name, globals()[name])
    m.ERROR_CODE, m.Camera = error_code, camera
    return m
