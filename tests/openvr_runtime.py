"""A stand-in for the SteamVR runtime behind the *real* pyopenvr ``IVRSystem``.

SteamVR cannot run here, but pyopenvr's ``IVRSystem`` only calls C function pointers in
its ``function_table`` (an ``openvr.IVRSystem_FnTable``). We fill the entries a tracker
driver uses with ctypes callbacks, so every call goes through the binding's own
marshalling (pose arrays, string buffers, error out-parameters), exactly as on a rig.

Contract followed (openvr.h, IVRSystem, as bound by pyopenvr 1.26 / 2.12):
- ``GetDeviceToAbsoluteTrackingPose(origin, secondsToPhotons, TrackedDevicePose_t* array, uint32 count)``
  fills ``count`` entries of the caller's array; pyopenvr passes NULL/0 for ``None``.
- ``GetStringTrackedDeviceProperty(index, prop, char* buf, uint32 size, ETrackedPropertyError* err)``
  returns the size needed including the NUL; with a buffer too small it sets
  ``TrackedProp_BufferTooSmall`` (pyopenvr first calls with size 0, then again).
- ``GetTrackedDeviceClass(index)``: ``TrackedDeviceClass_Invalid`` (0) for an empty slot. A tracker whose
  SteamVR role is "held in hand" is ``TrackedDeviceClass_Controller`` (2) (openvr issues #1680, #902):
  give it that class in ``devices``.
- ``IsTrackedDeviceConnected(index)``.
- ``TrackedProp_NotYetAvailable`` (9; openvr.h: "The property value isn't known yet, but is expected soon.
  Call again later"): what a device just switched on answers; slots in ``not_yet_available`` answer it
  (with 0 and no string) until removed from that set.
- ``PollNextEvent(VREvent_t* event, uint32 size)``: true and fills ``eventType``, ``trackedDeviceIndex``,
  ``eventAgeSeconds`` with the oldest queued event (``events``), false when none is left.
- ``ETrackingResult`` ``TrackingResult_Fallback_RotationOnly`` (300) with ``bPoseIsValid``: openvr.h's
  "rotation only" fallback (IMU): the rotation is tracked, the position is not.
"""

from __future__ import annotations

import ctypes
from collections import deque

import numpy as np


class StubRuntime:
    """Devices and poses the stub "runtime" reports; ``system`` is a real ``openvr.IVRSystem``."""

    def __init__(self, openvr):
        self.openvr = openvr
        self.devices: dict[int, tuple[int, str]] = {}   # index -> (TrackedDeviceClass, serial)
        self.poses: dict[int, dict] = {}                # index -> {"T", "valid", "connected", "result"}
        self.pose_calls: list[int] = []                 # the array count of each pose call (0 = NULL array)
        self.not_yet_available: set[int] = set()        # slots answering TrackedProp_NotYetAvailable
        self.events: deque = deque()                    # (eventType, trackedDeviceIndex, eventAgeSeconds)
        self.during_pose_call = None                    # called inside each pose call (e.g. to make it slow)
        self._keep = []
        table = openvr.IVRSystem_FnTable()
        types = dict(openvr.IVRSystem_FnTable._fields_)

        def install(name, prototype, function):
            callback = prototype(function)
            self._keep.append(callback)
            setattr(table, name, ctypes.cast(callback, types[name]))

        install("getDeviceToAbsoluteTrackingPose",
                ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.c_float, ctypes.c_void_p, ctypes.c_uint), self._poses)
        install("getTrackedDeviceClass", ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_uint),
                lambda i: self.devices.get(i, (openvr.TrackedDeviceClass_Invalid, ""))[0])
        install("isTrackedDeviceConnected", ctypes.CFUNCTYPE(ctypes.c_ubyte, ctypes.c_uint),
                lambda i: int(i in self.devices and self.poses.get(i, {}).get("connected", True)))
        install("getStringTrackedDeviceProperty",
                ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_uint,
                                 ctypes.POINTER(ctypes.c_uint)), self._string_property)
        install("pollNextEvent", ctypes.CFUNCTYPE(ctypes.c_ubyte, ctypes.c_void_p, ctypes.c_uint32), self._poll_event)
        self.table = table
        self.system = object.__new__(openvr.IVRSystem)  # the real class; __init__ would ask the runtime
        self.system.function_table = table

    def set_pose(self, index: int, T=None, *, valid=True, connected=True, result=None) -> None:
        """The pose the runtime reports for ``index``: a 4x4 ``T_world_device`` (metres)."""
        self.poses[index] = {"T": np.eye(4) if T is None else np.asarray(T, float), "valid": valid,
                             "connected": connected,
                             "result": self.openvr.TrackingResult_Running_OK if result is None else result}

    def _poll_event(self, event_address, size):
        if not self.events or size < ctypes.sizeof(self.openvr.VREvent_t):
            return 0
        event = ctypes.cast(event_address, ctypes.POINTER(self.openvr.VREvent_t))[0]
        event.eventType, event.trackedDeviceIndex, event.eventAgeSeconds = self.events.popleft()
        return 1

    def _poses(self, origin, seconds, array_address, count):
        self.pose_calls.append(count)
        if self.during_pose_call is not None:
            self.during_pose_call()
        if not array_address:
            return
        array = ctypes.cast(array_address, ctypes.POINTER(self.openvr.TrackedDevicePose_t))
        for i in range(count):
            pose = array[i]
            state = self.poses.get(i) if i in self.devices else None
            if state is None:
                pose.bPoseIsValid, pose.bDeviceIsConnected = 0, 0
                pose.eTrackingResult = self.openvr.TrackingResult_Uninitialized
                continue
            for r in range(3):
                for c in range(4):
                    pose.mDeviceToAbsoluteTracking.m[r][c] = state["T"][r, c]
            pose.bPoseIsValid, pose.bDeviceIsConnected = int(state["valid"]), int(state["connected"])
            pose.eTrackingResult = state["result"]

    def _string_property(self, index, prop, buffer_address, size, error):
        openvr = self.openvr
        if index not in self.devices:
            error[0] = openvr.TrackedProp_InvalidDevice
            return 0
        if index in self.not_yet_available:
            error[0] = openvr.TrackedProp_NotYetAvailable
            return 0
        if prop != openvr.Prop_SerialNumber_String:
            error[0] = openvr.TrackedProp_UnknownProperty
            return 0
        value = self.devices[index][1].encode() + b"\0"
        if size < len(value):
            error[0] = openvr.TrackedProp_BufferTooSmall
            return len(value)
        ctypes.memmove(buffer_address, value, len(value))
        error[0] = openvr.TrackedProp_Success
        return len(value)
