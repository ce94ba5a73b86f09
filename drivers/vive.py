"""VIVE trackers through OpenVR (SteamVR): one driver per tracker role, found by serial.

All tracker drivers of a process share one OpenVR session. Poses are polled at the
driver's rate with absolute deadlines; a pose is "ok" when OpenVR says it is valid and
tracking runs normally, "degraded" when out of range, "lost" otherwise. When SteamVR
restarts or a tracker disappears, the driver reports it, shuts its session down and
finds the tracker again by serial.

SteamVR without a headset: recent releases stop delivering tracker poses unless the
null HMD driver is enabled (``requireHmd: false``, ``forcedDriver: null``, see README).

Contract followed (openvr.h, as bound by pyopenvr 1.26 / 2.12):
- A device just switched on may answer ``GetStringTrackedDeviceProperty`` with
  ``TrackedProp_NotYetAvailable`` ("the property value isn't known yet, but is expected soon. Call
  again later"); pyopenvr raises it. Such a slot is skipped (never stopping the other trackers) and
  named in the error when our own serial is not found, so the driver's open is retried.
- A tracker whose SteamVR role is "held in hand" reports ``TrackedDeviceClass_Controller``
  (openvr issues #1680, #902): trackers are searched among GenericTracker *and* Controller devices;
  the class found is device info (``openvr_class``).
- ``ETrackingResult``: ``Running_OK`` -> ok; ``Running_OutOfRange`` -> degraded;
  ``Fallback_RotationOnly`` (IMU only: the rotation is tracked, the position is not) -> degraded with
  ``meta = {"position_valid": False}`` and counted (device info ``rotation_only_samples``); anything
  else, or ``bPoseIsValid`` false -> lost.
- Time: ``GetDeviceToAbsoluteTrackingPose(..., 0 s)`` gives the pose "now", i.e. at some instant of
  the call. The stamp is the midpoint of host times read just before and just after the call; its
  uncertainty is half the call's duration, given per sample (``meta["stamp_uncertainty_ms"]``) and
  counted (``slow_pose_calls``) when over ``SLOW_POSE_CALL_NS``.
- Events (``PollNextEvent``): the shared session polls them and hands every driver a copy. Our tracker
  deactivated or SteamVR quitting -> ``DeviceDisconnectedError`` (reported, reconnected by serial);
  a role change -> the tracker is found again by serial (its class may change); the recent events are
  device info (``openvr_events``), so they reach the status messages.
- ``doctor`` never starts SteamVR: with ``start_runtime = False`` the session checks
  ``VR_IsRuntimeInstalled`` and initialises as ``VRApplication_Background`` ("should not start SteamVR
  if it's not already running"; ``InitError_Init_NoServerForBackgroundApp`` when it is not running).
"""

from __future__ import annotations

import threading
from collections import deque
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


SLOW_POSE_CALL_NS = 2_000_000  # a pose call longer than this: its stamp uncertainty is given per sample
RECENT_EVENTS = 10


class _Session:
    """One OpenVR session per process, shared by the tracker drivers (reference counted). Events are polled
    once for all and copied to each driver's queue, so no driver takes another's events."""

    lock = threading.Lock()
    users = 0
    system = None
    queues: list = []
    event = None

    @classmethod
    def acquire(cls, openvr, start_runtime: bool = True):
        """(IVRSystem, this user's event queue). ``start_runtime`` False: never start SteamVR (doctor)."""
        with cls.lock:
            if cls.system is None:
                if not start_runtime and not openvr.isRuntimeInstalled():
                    raise DeviceNotFoundError(f"SteamVR is not installed (VR_IsRuntimeInstalled is false); "
                                              f"{STEAMVR_HINT}")
                application = openvr.VRApplication_Other if start_runtime else openvr.VRApplication_Background
                try:
                    cls.system = openvr.init(application)
                except openvr.error_code.InitError as exc:
                    raise DeviceNotFoundError(_init_message(openvr, exc)) from None
                cls.queues, cls.event = [], openvr.VREvent_t()
            cls.users += 1
            queue: deque = deque(maxlen=256)
            cls.queues.append(queue)
            return cls.system, queue

    @classmethod
    def release(cls, openvr, queue=None) -> None:
        with cls.lock:
            cls.queues = [q for q in cls.queues if q is not queue]
            cls.users = max(0, cls.users - 1)
            if cls.users == 0 and cls.system is not None:
                cls.system = None
                try:
                    openvr.shutdown()
                except Exception:
                    pass

    @classmethod
    def pump(cls) -> None:
        """Move the runtime's pending events (type, device index, age in s) into every user's queue."""
        with cls.lock:
            if cls.system is None:
                return
            while cls.system.pollNextEvent(cls.event):
                item = (int(cls.event.eventType), int(cls.event.trackedDeviceIndex), float(cls.event.eventAgeSeconds))
                for queue in cls.queues:
                    queue.append(item)


def _init_message(openvr, exc) -> str:
    codes = openvr.error_code
    name = type(exc).__name__
    if isinstance(exc, getattr(codes, "InitError_Init_PathRegistryNotFound", ())) or \
            isinstance(exc, getattr(codes, "InitError_Init_InstallationCorrupt", ())):
        return f"SteamVR is not installed or its installation is broken ({name}); {STEAMVR_HINT}"
    if isinstance(exc, getattr(codes, "InitError_Init_HmdNotFound", ())):
        return f"SteamVR found no headset ({name}); enable the null HMD driver (README) or connect the headset"
    if isinstance(exc, getattr(codes, "InitError_Init_NoServerForBackgroundApp", ())):
        return (f"SteamVR is not running ({name}); `capture-app doctor` does not start it: start SteamVR, "
                f"then run doctor again")
    return f"OpenVR could not start ({name}): is SteamVR running? {STEAMVR_HINT}"


@dataclass(frozen=True)
class OpenVROptions:
    universe: str = "standing"

    def __post_init__(self):
        if self.universe not in ("standing", "seated", "raw"):
            raise ValueError(f"option universe = {self.universe!r}: expected standing, seated or raw")


def _class_names(openvr) -> dict[int, str]:
    return {openvr.TrackedDeviceClass_HMD: "HMD", openvr.TrackedDeviceClass_Controller: "Controller",
            openvr.TrackedDeviceClass_GenericTracker: "GenericTracker",
            openvr.TrackedDeviceClass_TrackingReference: "TrackingReference (base station)",
            openvr.TrackedDeviceClass_DisplayRedirect: "DisplayRedirect"}


HELD_IN_HAND = ("SteamVR reports this tracker as a Controller because its role is 'Held in hand'; it is used all the "
                "same. To see it as a tracker, give it another role in SteamVR Settings > Controllers > Manage Trackers")


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
        self._events: deque | None = None
        self._recent_events: deque = deque(maxlen=RECENT_EVENTS)
        self.start_runtime = True  # False (doctor): never start SteamVR, only use a running one
        self.rotation_only_samples = 0
        self.slow_pose_calls = 0

    def open(self) -> None:
        openvr = self._openvr = import_openvr()
        self._system, self._events = _Session.acquire(openvr, self.start_runtime)
        self._find()
        self.device_info.update({"model": "VIVE Tracker (OpenVR)"})
        # pyopenvr 1.26/2.12 IVRSystem.getDeviceToAbsoluteTrackingPose: a None array is sent as NULL with
        # count 0 and None comes back; it fills (and returns) an array of TrackedDevicePose_t we give it.
        self._poses = (openvr.TrackedDevicePose_t * openvr.k_unMaxTrackedDeviceCount)()
        self._next_ns = now_ns()

    def _find(self) -> None:
        """Find our serial among the GenericTracker and Controller devices; a slot whose serial is not yet
        available (just switched on) is skipped and named, never fatal for the others."""
        openvr, system = self._openvr, self._system
        names = _class_names(openvr)
        wanted = (openvr.TrackedDeviceClass_GenericTracker, openvr.TrackedDeviceClass_Controller)
        found: dict[str, list[str]] = {}
        not_yet: list[str] = []
        self._index = None
        for i in range(openvr.k_unMaxTrackedDeviceCount):
            device_class = system.getTrackedDeviceClass(i)
            if device_class == openvr.TrackedDeviceClass_Invalid:
                continue
            name = names.get(device_class, f"class {device_class}")
            try:
                serial = system.getStringTrackedDeviceProperty(i, openvr.Prop_SerialNumber_String)
            except openvr.error_code.TrackedProp_NotYetAvailable:
                not_yet.append(f"slot {i} ({name})")
                continue
            except openvr.error_code.TrackedPropertyError as exc:  # any other property error: that slot only
                found.setdefault(name, []).append(f"slot {i}: {type(exc).__name__}")
                continue
            found.setdefault(name, []).append(serial)
            if serial == self.config.serial and device_class in wanted and self._index is None:
                self._index, self._class = i, device_class
        if self._index is None:
            seen = "; ".join(f"{name}: {', '.join(serials)}" for name, serials in sorted(found.items())) or "nothing"
            elsewhere = [name for name, serials in found.items() if self.config.serial in serials]
            message = (f"VIVE tracker {self.config.serial or '(no serial configured)'} for {self.config.stream} not "
                       f"found; SteamVR sees {seen}.")
            if elsewhere:
                message += f" That serial is a {elsewhere[0]}, not a tracker: fix the serial in the rig config."
            if not_yet:
                message += (f" {len(not_yet)} device(s) have no serial yet ({', '.join(not_yet)}: "
                            f"TrackedProp_NotYetAvailable, just switched on): trying again.")
            message += (" Turn the tracker on and pair it, or fix its serial (`capture-app calibrate roles` assigns "
                        "serials by motion).")
            raise DeviceNotFoundError(message)
        held = self._class == openvr.TrackedDeviceClass_Controller
        self.device_info.update({"openvr_index": self._index, "openvr_class": names[self._class]})
        if held:
            self.device_info["openvr_role_note"] = HELD_IN_HAND
        else:
            self.device_info.pop("openvr_role_note", None)

    def _handle_events(self) -> None:
        """This driver's copy of the runtime's events: the ones about our tracker, or the whole runtime."""
        openvr = self._openvr
        _Session.pump()
        while self._events:
            kind, index, age_s = self._events.popleft()
            if kind == openvr.VREvent_Quit:
                self._note_event("SteamVR quitting")
                raise DeviceDisconnectedError(f"SteamVR is quitting; VIVE tracker {self.config.serial} "
                                              f"({self.config.stream}) reconnects when SteamVR runs again")
            if kind == openvr.VREvent_TrackedDeviceRoleChanged:
                self._note_event("role changed")
                self._find()  # found again by serial: its class (Controller / GenericTracker) may have changed
            elif index == self._index and kind == openvr.VREvent_TrackedDeviceDeactivated:
                self._note_event("deactivated")
                raise DeviceDisconnectedError(
                    f"VIVE tracker {self.config.serial} ({self.config.stream}) deactivated (SteamVR event): switched "
                    f"off, battery or dongle; it is found again by serial when it comes back")
            elif kind == openvr.VREvent_TrackedDeviceActivated:
                self._note_event(f"device {index} activated")

    def _note_event(self, text: str) -> None:
        self._recent_events.append(text)
        self.device_info["openvr_events"] = list(self._recent_events)

    def read(self) -> Sample | None:
        if not sleep_until_ns(self._next_ns, self._stop):
            return None
        self._next_ns += self._period_ns
        if now_ns() - self._next_ns > NS_PER_S:  # fell far behind (machine stalled): skip ahead
            self._next_ns = now_ns()
        openvr = self._openvr
        universe = {"standing": openvr.TrackingUniverseStanding, "seated": openvr.TrackingUniverseSeated,
                    "raw": openvr.TrackingUniverseRawAndUncalibrated}[self.options.universe]
        self._handle_events()
        before = now_ns()
        self._system.getDeviceToAbsoluteTrackingPose(universe, 0, self._poses)
        after = now_ns()
        # no device clock: the pose is "now" (0 s prediction) at some instant of the call
        t_capture, half_call_ns = (before + after) // 2, (after - before) // 2
        pose = self._poses[self._index]
        if not pose.bDeviceIsConnected:
            raise DeviceDisconnectedError(
                f"VIVE tracker {self.config.serial} ({self.config.stream}) disconnected: battery, dongle or "
                f"power; it is found again by serial when it comes back")
        meta = None
        if pose.bPoseIsValid and pose.eTrackingResult == openvr.TrackingResult_Running_OK:
            tracking = "ok"
        elif pose.bPoseIsValid and pose.eTrackingResult == openvr.TrackingResult_Running_OutOfRange:
            tracking = "degraded"
        elif pose.bPoseIsValid and pose.eTrackingResult == openvr.TrackingResult_Fallback_RotationOnly:
            tracking, meta = "degraded", {"position_valid": False}  # IMU only: rotation tracked, position not
            self.rotation_only_samples += 1
            self.device_info["rotation_only_samples"] = self.rotation_only_samples
        else:
            tracking = "lost"
        if 2 * half_call_ns > SLOW_POSE_CALL_NS:
            self.slow_pose_calls += 1
            self.device_info["slow_pose_calls"] = self.slow_pose_calls
            meta = {**(meta or {}), "stamp_uncertainty_ms": half_call_ns / 1e6}
        return Sample(t_capture, {"pose": pose_from_matrix34(pose.mDeviceToAbsoluteTracking.m)}, tracking=tracking,
                      meta=meta)

    def close(self) -> None:
        if self._system is not None:
            self._system = None
            self._index = None
            _Session.release(self._openvr, self._events)
            self._events = None
