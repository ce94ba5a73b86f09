"""ctypes binding of the MANUS SDK's raw-skeleton API (``CoreSdk_*``), SDK 2.x and 3.x.

The SDK is C++ behind an ``extern "C"`` API shipped as ``libManusSDK*.so`` with the
licensed SDK download; we never ship it. Everything here follows the public headers
``ManusSDK.h`` / ``ManusSDKTypes.h`` (as vendored in public SDK-client repositories):

Layouts (x86-64): ManusVec3 {float x,y,z}; ManusQuaternion {float w,x,y,z};
ManusTransform {position, rotation, scale}; SkeletonNode {uint32 id; ManusTransform} 44 B;
ManusTimestamp {uint64 time} (compressed: decode with ``CoreSdk_GetTimestampInfo``);
ManusTimestampInfo {uint16 fraction; uint8 second, minute, hour, day, month; uint32 year; bool timecode} 16 B;
RawSkeletonInfo {uint32 gloveId, uint32 nodesCount, ManusTimestamp publishTime} 16 B;
SkeletonStreamInfo {ManusTimestamp publishTime; uint32 skeletonsCount} 16 B;
NodeInfo {uint32 nodeId, parentId; ChainType; Side; FingerJointType} 20 B;
Version {uint32 major, minor, patch; char label[16], sha[16], tag[16]};
ManusHost {char hostName[256]; char ipAddress[40]; Version manusCoreVersion} 356 B (passed by value);
CoordinateSystemVUH {AxisView view; AxisPolarity up; Side handedness; float unitScale}.

A wrong layout would corrupt memory or segfault: the sizes are asserted when the library
loads (against the sizes gcc gives for those headers; the test suite compiles a fake SDK with
the same declarations and compares), and the driver runs in a process of its own.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_bool, c_char, c_float, c_int32, c_uint8, c_uint32,
                    c_uint64)

from capture_app.core.errors import DeviceError, DeviceNotFoundError, SDKMissingError

LIBRARY_ENV = "MANUS_SDK_LIB"


class ManusVec3(Structure):
    _fields_ = [("x", c_float), ("y", c_float), ("z", c_float)]


class ManusQuaternion(Structure):
    _fields_ = [("w", c_float), ("x", c_float), ("y", c_float), ("z", c_float)]


class ManusTransform(Structure):
    _fields_ = [("position", ManusVec3), ("rotation", ManusQuaternion), ("scale", ManusVec3)]


class SkeletonNode(Structure):
    _fields_ = [("id", c_uint32), ("transform", ManusTransform)]


class ManusTimestamp(Structure):
    _fields_ = [("time", c_uint64)]


class ManusTimestampInfo(Structure):
    _fields_ = [("fraction", ctypes.c_uint16), ("second", c_uint8), ("minute", c_uint8), ("hour", c_uint8),
                ("day", c_uint8), ("month", c_uint8), ("year", c_uint32), ("timecode", c_bool)]


class RawSkeletonInfo(Structure):
    _fields_ = [("gloveId", c_uint32), ("nodesCount", c_uint32), ("publishTime", ManusTimestamp)]


class SkeletonStreamInfo(Structure):
    _fields_ = [("publishTime", ManusTimestamp), ("skeletonsCount", c_uint32)]


class NodeInfo(Structure):
    _fields_ = [("nodeId", c_uint32), ("parentId", c_uint32), ("chainType", c_int32), ("side", c_int32),
                ("fingerJointType", c_int32)]


class Version(Structure):
    _fields_ = [("major", c_uint32), ("minor", c_uint32), ("patch", c_uint32), ("label", c_char * 16),
                ("sha", c_char * 16), ("tag", c_char * 16)]


class ManusHost(Structure):
    _fields_ = [("hostName", c_char * 256), ("ipAddress", c_char * 40), ("manusCoreVersion", Version)]


class CoordinateSystemVUH(Structure):
    _fields_ = [("view", c_int32), ("up", c_int32), ("handedness", c_int32), ("unitScale", c_float)]


# sizeof() of the header structs as gcc compiles them on x86-64 (measured from ManusSDKTypes.h)
EXPECTED_SIZES = {"SkeletonNode": 44, "RawSkeletonInfo": 16, "SkeletonStreamInfo": 16, "NodeInfo": 20,
                  "ManusHost": 356, "CoordinateSystemVUH": 16, "ManusTimestampInfo": 16}
STRUCTS = {"SkeletonNode": SkeletonNode, "RawSkeletonInfo": RawSkeletonInfo, "SkeletonStreamInfo": SkeletonStreamInfo,
           "NodeInfo": NodeInfo, "ManusHost": ManusHost, "CoordinateSystemVUH": CoordinateSystemVUH,
           "ManusTimestampInfo": ManusTimestampInfo}

# Enum values of the SDK headers
SIDE = {0: "invalid", 1: "left", 2: "right", 3: "center"}
CHAIN_HAND = 13
CHAIN_FINGERS = {5: "thumb", 6: "index", 7: "middle", 8: "ring", 9: "pinky"}
JOINTS = {1: "metacarpal", 2: "proximal", 3: "intermediate", 4: "distal", 5: "tip"}
AXIS_VIEW = {"z_from_viewer": 1, "y_from_viewer": 2, "x_from_viewer": 3, "x_to_viewer": 4, "y_to_viewer": 5,
             "z_to_viewer": 6}
AXIS_POLARITY = {"negative_z": 1, "negative_y": 2, "negative_x": 3, "positive_x": 4, "positive_y": 5, "positive_z": 6}
SESSION_TYPE_CORE_SDK = 3  # SessionType: Unknown 0, UnityPlugin 1, UnrealPlugin 2, CoreSDK 3
RETURN_CODES = {0: "Success", 1: "Error", 2: "InvalidArgument", 3: "ArgumentSizeMismatch", 4: "UnsupportedStringSizeEncountered",
                5: "SdkNotAvailable", 6: "HostFinderNotAvailable", 7: "DataNotAvailable", 8: "MemoryError",
                9: "InternalError", 10: "FunctionCalledAtWrongTime", 11: "NotConnected", 12: "ConnectionTimeout",
                13: "InvalidID", 14: "NullPointer", 15: "InvalidSequence", 16: "NoCoordinateSystemSet",
                17: "SdkIsTerminating", 18: "StubNullPointer", 19: "SkeletonNotLoaded", 20: "FunctionNotAvailable"}

RawSkeletonStreamCallback = CFUNCTYPE(None, POINTER(SkeletonStreamInfo))


class ManusABIError(SDKMissingError):
    """The library's structs do not match this binding: using it would corrupt memory."""


def check_struct_sizes(expected: dict[str, int] = EXPECTED_SIZES, sdk_version: str = "?") -> None:
    """Refuse to run when a struct of this binding has another size than the SDK's."""
    wrong = {name: (ctypes.sizeof(STRUCTS[name]), size) for name, size in expected.items()
             if ctypes.sizeof(STRUCTS[name]) != size}
    if wrong:
        details = ", ".join(f"{n} is {got} B here but {want} B in the SDK" for n, (got, want) in wrong.items())
        raise ManusABIError(f"MANUS SDK {sdk_version}: struct layout mismatch ({details}); this binding does not "
                            f"support that SDK build. Use a supported SDK (2.x or 3.x) or update drivers/manus/binding.py.")


def library_path(configured: str = "") -> str:
    """The SDK library to load: the configured path, else $MANUS_SDK_LIB."""
    path = configured or os.environ.get(LIBRARY_ENV, "")
    if not path:
        raise SDKMissingError(f"no MANUS SDK library configured: set options.library or ${LIBRARY_ENV} to the "
                              f"libManusSDK*.so of your MANUS SDK download (licensed; capture-app does not ship it)")
    if not os.path.exists(path):
        raise SDKMissingError(f"MANUS SDK library {path} does not exist; fix options.library or ${LIBRARY_ENV}")
    return path


class ManusSDK:
    """The loaded SDK. Methods raise DeviceError with the SDK's return code name."""

    def __init__(self, path: str):
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as exc:
            raise SDKMissingError(f"cannot load the MANUS SDK library {path}: {exc}") from None
        self.major = 3 if hasattr(self.lib, "CoreSdk_InitializeIntegrated") else 2
        check_struct_sizes(sdk_version=f"{self.major}.x ({os.path.basename(path)})")
        self._callbacks = []  # keep CFUNCTYPE objects alive as long as the SDK may call them
        L = self.lib
        for name, args in {
            "CoreSdk_RegisterCallbackForRawSkeletonStream": [RawSkeletonStreamCallback],
            "CoreSdk_InitializeCoordinateSystemWithVUH": [CoordinateSystemVUH, c_bool],
            "CoreSdk_LookForHosts": [c_uint32, c_bool],
            "CoreSdk_GetNumberOfAvailableHostsFound": [POINTER(c_uint32)],
            "CoreSdk_GetAvailableHostsFound": [POINTER(ManusHost), c_uint32],
            "CoreSdk_ConnectToHost": [ManusHost],
            "CoreSdk_GetRawSkeletonInfo": [c_uint32, POINTER(RawSkeletonInfo)],
            "CoreSdk_GetRawSkeletonData": [c_uint32, POINTER(SkeletonNode), c_uint32],
            "CoreSdk_GetRawSkeletonNodeCount": [c_uint32, POINTER(c_uint32)],
            "CoreSdk_GetRawSkeletonNodeInfoArray": [c_uint32, POINTER(NodeInfo), c_uint32],
            "CoreSdk_GetTimestampInfo": [ManusTimestamp, POINTER(ManusTimestampInfo)],
            "CoreSdk_ShutDown": [],
        }.items():
            try:
                function = getattr(L, name)
            except AttributeError:
                raise ManusABIError(f"the MANUS SDK library has no {name}: not a supported SDK build") from None
            function.argtypes, function.restype = args, c_int32

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            raise DeviceError(f"MANUS SDK {what} failed: {RETURN_CODES.get(code, f'code {code}')}")

    def initialize(self, mode: str) -> None:
        """mode 'integrated' (the USB dongle directly) or 'remote' (MANUS Core on another machine)."""
        if self.major >= 3:
            function = self.lib.CoreSdk_InitializeIntegrated if mode == "integrated" else self.lib.CoreSdk_InitializeCore
            function.argtypes, function.restype = [], c_int32
            self._check(function(), f"initialise ({mode})")
            if mode == "integrated" and hasattr(self.lib, "CoreSdk_SetSessionType"):
                self.lib.CoreSdk_SetSessionType.argtypes = [c_int32]
                self.lib.CoreSdk_SetSessionType.restype = c_int32
                self._check(self.lib.CoreSdk_SetSessionType(SESSION_TYPE_CORE_SDK), "set session type")
        else:
            self.lib.CoreSdk_Initialize.argtypes, self.lib.CoreSdk_Initialize.restype = [c_int32, c_bool], c_int32
            self._check(self.lib.CoreSdk_Initialize(SESSION_TYPE_CORE_SDK, mode == "remote"), f"initialise ({mode})")

    def register_raw_skeleton_callback(self, function) -> None:
        callback = RawSkeletonStreamCallback(function)
        self._callbacks.append(callback)
        self._check(self.lib.CoreSdk_RegisterCallbackForRawSkeletonStream(callback), "register raw skeleton callback")

    def set_coordinate_system(self, view: str, up: str, handedness: str, unit_scale: float, world: bool) -> None:
        """``world``: node transforms in the SDK's world frame; False: each relative to its parent node."""
        side = {v: k for k, v in SIDE.items()}[handedness]
        vuh = CoordinateSystemVUH(AXIS_VIEW[view], AXIS_POLARITY[up], side, unit_scale)
        self._check(self.lib.CoreSdk_InitializeCoordinateSystemWithVUH(vuh, world), "set coordinate system")

    def connect(self, mode: str, wait_s: int = 1) -> str:
        """Connect: in integrated mode to the local dongle (an empty ManusHost, as the official SDKClient
        does, no host discovery); in remote mode to the first MANUS Core host found."""
        if mode == "integrated":
            code = self.lib.CoreSdk_ConnectToHost(ManusHost())
            if code == 11:  # NotConnected
                raise DeviceNotFoundError("MANUS dongle not found (integrated mode): plug it in, check the udev rules "
                                          "(`capture-app doctor`) and the license's integrated flag; it retries")
            self._check(code, "connect (integrated)")
            return "integrated"
        self._check(self.lib.CoreSdk_LookForHosts(wait_s, False), "look for hosts")
        count = c_uint32(0)
        self._check(self.lib.CoreSdk_GetNumberOfAvailableHostsFound(ctypes.byref(count)), "count hosts")
        if count.value == 0:
            raise DeviceNotFoundError("no MANUS host found (remote mode): start MANUS Core on the host and check the "
                                      "network, or use mode = 'integrated' for a dongle on this machine; it retries")
        hosts = (ManusHost * count.value)()
        self._check(self.lib.CoreSdk_GetAvailableHostsFound(hosts, count.value), "list hosts")
        self._check(self.lib.CoreSdk_ConnectToHost(hosts[0]), "connect to host")
        return hosts[0].hostName.decode(errors="replace")

    def raw_skeleton(self, index: int) -> tuple[RawSkeletonInfo, ctypes.Array]:
        """The info and nodes of skeleton ``index`` of the current stream callback."""
        info = RawSkeletonInfo()
        self._check(self.lib.CoreSdk_GetRawSkeletonInfo(index, ctypes.byref(info)), "get raw skeleton info")
        nodes = (SkeletonNode * info.nodesCount)()
        self._check(self.lib.CoreSdk_GetRawSkeletonData(index, nodes, info.nodesCount), "get raw skeleton data")
        return info, nodes

    def node_info(self, glove_id: int) -> ctypes.Array:
        count = c_uint32(0)
        self._check(self.lib.CoreSdk_GetRawSkeletonNodeCount(glove_id, ctypes.byref(count)), "count skeleton nodes")
        infos = (NodeInfo * count.value)()
        self._check(self.lib.CoreSdk_GetRawSkeletonNodeInfoArray(glove_id, infos, count.value), "get node info")
        return infos

    def timestamp_ns(self, stamp: ManusTimestamp) -> int | None:
        """A compressed ManusTimestamp as UTC nanoseconds since the epoch (millisecond resolution);
        None for a timecode timestamp (frames, not a date) or one the SDK cannot decode."""
        if stamp.time == 0:  # never set (the per-skeleton field, which the official SDKClients overwrite)
            return None
        info = ManusTimestampInfo()
        if self.lib.CoreSdk_GetTimestampInfo(stamp, ctypes.byref(info)) != 0 or info.timecode:
            return None
        import calendar
        try:
            seconds = calendar.timegm((info.year, info.month, info.day, info.hour, info.minute, info.second))
        except (ValueError, OverflowError):
            return None
        return seconds * 1_000_000_000 + info.fraction * 1_000_000

    def shutdown(self) -> None:
        self.lib.CoreSdk_ShutDown()
