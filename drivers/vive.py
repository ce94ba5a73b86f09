"""VIVE trackers through OpenVR (SteamVR): one driver per tracker role, found by serial.

All tracker drivers of a process share one OpenVR session. Poses are polled at the
driver's rate with absolute deadlines; a pose is "ok" when OpenVR says it is valid and
tracking runs normally, "degraded" when out of range, "lost" otherwise. When SteamVR
restarts or a tracker disappears, the driver reports it, shuts its session down and
finds the tracker again by serial.

SteamVR without a headset: recent releases stop delivering tracker poses unless the
null HMD driver is enabled (``requireHmd: false``, ``forcedDriver: null``, see README).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from capture_app.core.clock import NS_PER_S, now_ns, sleep_until_ns
from capture_app.core.errors import DeviceDisconnectedError, DeviceNotFoundError
from capture_app.core.geometry import matrix_to_quat
from drivers.base import Driver, Sample, import_sdk

STEAMVR_HINT = ("install SteamVR and run it; without a headset enable the null HMD driver "
                "(README: 'VIVE trackers without a headset')")


def import_openvr():
    """The openvr module, or SDKMissingError saying how to install it."""
    return import_sdk("openvr", "pip install openvr (or: pip install 'capture-app[vive]')")


class _Session:
    """One OpenVR session per process, shared by the tracker drivers (reference counted)."""

    lock = threading.Lock()
    users = 0
    system = None

    @classmethod
    def acquire(cls, openvr):
        with cls.lock:
            if cls.system is None:
                try:
                    cls.system = openvr.init(openvr.VRApplication_Other)
                except openvr.error_code.InitError as exc:
                    raise DeviceNotFoundError(_init_message(openvr, exc)) from None
            cls.users += 1
            return cls.system

    @classmethod
    def release(cls, openvr) -> None:
        with cls.lock:
            cls.users = max(0, cls.users - 1)
            if cls.users == 0 and cls.system is not None:
                cls.system = None
                try:
                    openvr.shutdown()
                except Exception:
                    pass


def _init_message(openvr, exc) -> str:
    codes = openvr.error_code
    name = type(exc).__name__
    if isinstance(exc, getattr(codes, "InitError_Init_PathRegistryNotFound", ())) or \
            isinstance(exc, getattr(codes, "InitError_Init_InstallationCorrupt", ())):
        return f"SteamVR is not installed or its installation is broken ({name}); {STEAMVR_HINT}"
    if isinstance(exc, getattr(codes, "InitError_Init_HmdNotFound", ())):
        return f"SteamVR found no headset ({name}); enable the null HMD driver (README) or connect the headset"
    return f"OpenVR could not start ({name}): is SteamVR running? {STEAMVR_HINT}"


@dataclass(frozen=True)
class OpenVROptions:
    universe: str = "standing"

    def __post_init__(self):
        if self.universe not in ("standing", "seated", "raw"):
            raise ValueError(f"option universe = {self.universe!r}: expected standing, seated or raw")


def pose_from_matrix34(m) -> np.ndarray:
    """A 3x4 row-major OpenVR matrix (nested sequences) -> pose vector (x, y, z, qw, qx, qy, qz), metres."""
    M = np.array([[float(m[i][j]) for j in range(4)] for i in range(3)])
    R = M[:, :3]
    u, _, vt = np.linalg.svd(R)  # OpenVR matrices can be slightly non-orthonormal
    return np.concatenate([M[:, 3], matrix_to_quat(u @ vt)])


class OpenVRTracker(Driver):
    """A VIVE tracker (type ``openvr_tracker``); ``serial`` in the rig config picks which one."""

    Options = OpenVROptions

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        self._openvr = None
        self._system = None
        self._index = None
        self._period_ns = int(NS_PER_S / config.rate_hz)
        self._next_ns = 0
        self._poses = None  # the TrackedDevicePose_t array OpenVR fills (pyopenvr returns None for a None array)

    def open(self) -> None:
        openvr = self._openvr = import_openvr()
        self._system = _Session.acquire(openvr)
        found = []
        for i in range(openvr.k_unMaxTrackedDeviceCount):
            if self._system.getTrackedDeviceClass(i) != openvr.TrackedDeviceClass_GenericTracker:
                continue
            serial = self._system.getStringTrackedDeviceProperty(i, openvr.Prop_SerialNumber_String)
            found.append(serial)
            if serial == self.config.serial:
                self._index = i
        if self._index is None:
            raise DeviceNotFoundError(
                f"VIVE tracker {self.config.serial or '(no serial configured)'} for {self.config.stream} not found; "
                f"trackers SteamVR sees: {', '.join(found) or 'none'}. Turn it on and pair it, or fix its serial "
                f"(`capture-app calibrate roles` assigns serials by motion).")
        self.device_info.update({"model": "VIVE Tracker (OpenVR)", "openvr_index": self._index})
        # pyopenvr 1.26/2.12 IVRSystem.getDeviceToAbsoluteTrackingPose: a None array is sent as NULL with
        # count 0 and None comes back; it fills (and returns) an array of TrackedDevicePose_t we give it.
        self._poses = (openvr.TrackedDevicePose_t * openvr.k_unMaxTrackedDeviceCount)()
        self._next_ns = now_ns()

    def read(self) -> Sample | None:
        if not sleep_until_ns(self._next_ns, self._stop):
            return None
        self._next_ns += self._period_ns
        if now_ns() - self._next_ns > NS_PER_S:  # fell far behind (machine stalled): skip ahead
            self._next_ns = now_ns()
        openvr = self._openvr
        universe = {"standing": openvr.TrackingUniverseStanding, "seated": openvr.TrackingUniverseSeated,
                    "raw": openvr.TrackingUniverseRawAndUncalibrated}[self.options.universe]
        self._system.getDeviceToAbsoluteTrackingPose(universe, 0, self._poses)
        t_capture = now_ns()  # OpenVR has no per-pose device clock: the pose is "now" (0 s prediction)
        pose = self._poses[self._index]
        if not pose.bDeviceIsConnected:
            raise DeviceDisconnectedError(
                f"VIVE tracker {self.config.serial} ({self.config.stream}) disconnected: battery, dongle or "
                f"power; it is found again by serial when it comes back")
        if pose.bPoseIsValid and pose.eTrackingResult == openvr.TrackingResult_Running_OK:
            tracking = "ok"
        elif pose.bPoseIsValid and pose.eTrackingResult == openvr.TrackingResult_Running_OutOfRange:
            tracking = "degraded"
        else:
            tracking = "lost"
        return Sample(t_capture, {"pose": pose_from_matrix34(pose.mDeviceToAbsoluteTracking.m)}, tracking=tracking)

    def close(self) -> None:
        if self._system is not None:
            self._system = None
            self._index = None
            _Session.release(self._openvr)
