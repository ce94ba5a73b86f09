"""The MANUS gloves driver: both hands from one SDK session, in a process of its own.

The SDK calls back on its own thread: the callback stamps the host clock, copies the
nodes and queues them; it never raises (an error is kept and raised by ``read``).
Type ``manus``; stream ``left_glove`` with ``extra_streams = ["right_glove"]``.

Time: ``t_capture_ns`` is the host time at which the raw-skeleton callback ran; ``t_device_ns``
is the stream's ``publishTime`` (``SkeletonStreamInfo``, as both official SDKClients use it: they
overwrite each skeleton's own field with it) decoded by ``CoreSdk_GetTimestampInfo`` (UTC ns,
millisecond resolution); the per-skeleton field only when the stream's cannot be decoded. Samples
with neither (timecode mode, a zero stamp) have no ``t_device_ns``; they are counted in the device
info (``device_time_missing``), which also says so in ``timestamp_domain``. Its mapping onto the host clock is reported in the
device info (``clock``: offset, drift, residual = the callback jitter). Using that mapping for
the stamps (as the simulator's gloves do) waits for a check on real gloves (docs/devices.md).
The calibrated latency of the glove streams absorbs the constant part of the SDK's delay.

Keypoints: nodes are mapped by NodeInfo (chain, joint, parent), never by raw index. With
``world_coordinates`` (the default, as the official SDKClient) positions are in the SDK's
world and are brought into the hand root's frame with the root node's rotation; without it,
each node is relative to its parent and the root-frame positions come from forward kinematics.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field

import numpy as np

from capture_app.core.clock import now_ns
from capture_app.core.clock_mapping import ClockMapper
from capture_app.core.errors import DeviceError
from drivers.base import Driver, Sample
from drivers.manus.binding import ManusSDK, library_path
from drivers.manus.topology import (canonical_indices, hand_side, parent_indices, root_frame_positions,
                                    wrist_frame_keypoints)

_IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


@dataclass(frozen=True)
class ManusOptions:
    library: str = ""               # else $MANUS_SDK_LIB
    mode: str = "integrated"        # integrated (USB dongle) | remote (MANUS Core)
    host_wait_s: int = 1
    view: str = "x_from_viewer"     # CoordinateSystemVUH
    up: str = "positive_z"
    handedness: str = "right"
    unit_scale: float = 1.0         # metres
    world_coordinates: bool = True  # InitializeCoordinateSystemWithVUH(p_UseWorldCoordinates)
    R_wrist_sdk_left: list = field(default_factory=lambda: _IDENTITY)
    R_wrist_sdk_right: list = field(default_factory=lambda: _IDENTITY)

    def __post_init__(self):
        if self.mode not in ("integrated", "remote"):
            raise ValueError(f"option mode = {self.mode!r}: expected integrated or remote")
        for name in ("R_wrist_sdk_left", "R_wrist_sdk_right"):
            R = np.asarray(getattr(self, name), dtype=float)
            if R.shape != (3, 3) or not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
                raise ValueError(f"option {name} must be a 3x3 rotation matrix")


class ManusGloves(Driver):
    Options = ManusOptions
    isolated = True

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        self._sdk: ManusSDK | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=512)
        self._callback_error: BaseException | None = None
        self._topology: dict[int, tuple] = {}  # glove id -> (side, canonical order, parents, node ids)
        self._clock = ClockMapper()
        self.dropped_in_callback = 0
        self.device_time_missing = 0  # samples without a decodable publishTime (no t_device_ns)
        self._streams = {"left": "left_glove", "right": "right_glove"}

    def open(self) -> None:
        o = self.options
        sdk = ManusSDK(library_path(o.library))
        self._sdk = sdk
        sdk.initialize(o.mode)
        sdk.register_raw_skeleton_callback(self._on_raw_skeletons)
        sdk.set_coordinate_system(o.view, o.up, o.handedness, o.unit_scale, o.world_coordinates)
        host = sdk.connect(o.mode, o.host_wait_s)
        self.device_info.update({"model": "MANUS Quantum Metagloves", "sdk_major": sdk.major, "mode": o.mode,
                                 "host": host, "world_coordinates": o.world_coordinates,
                                 "timestamp_domain": "host callback time; manus:publishTime (UTC, ms) in t_device"})

    def _on_raw_skeletons(self, info_pointer) -> None:
        """SDK thread: copy, stamp, queue. Never raises."""
        t_capture = now_ns()
        try:
            stream_info = info_pointer.contents
            stream_ns = self._sdk.timestamp_ns(stream_info.publishTime)  # the SDKClients' publish time
            for i in range(stream_info.skeletonsCount):
                info, nodes = self._sdk.raw_skeleton(i)
                ids = tuple(n.id for n in nodes)
                positions = np.array([(n.transform.position.x, n.transform.position.y, n.transform.position.z)
                                      for n in nodes], dtype=np.float64)
                rotations = np.array([(n.transform.rotation.w, n.transform.rotation.x, n.transform.rotation.y,
                                       n.transform.rotation.z) for n in nodes], dtype=np.float64)
                publish_ns = stream_ns if stream_ns is not None else self._sdk.timestamp_ns(info.publishTime)
                try:
                    self._queue.put_nowait((t_capture, info.gloveId, publish_ns, ids, positions, rotations))
                except queue.Full:
                    self.dropped_in_callback += 1
        except BaseException as exc:  # kept for read(); raising into C would abort the process
            self._callback_error = exc

    def read(self) -> Sample | None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise DeviceError(f"MANUS raw skeleton callback failed: {error}")
        try:
            t_capture, glove_id, publish_ns, ids, positions, rotations = self._queue.get(timeout=0.2)
        except queue.Empty:
            return None
        if glove_id not in self._topology:
            infos = self._sdk.node_info(glove_id)
            self._topology[glove_id] = (hand_side(infos), canonical_indices(infos), parent_indices(infos),
                                        tuple(info.nodeId for info in infos))
            self.device_info.setdefault("gloves", {})[self._topology[glove_id][0]] = glove_id
        side, order, parents, info_ids = self._topology[glove_id]
        if ids != info_ids:  # the data's node order differs from NodeInfo's: match them by node id
            where = {node_id: i for i, node_id in enumerate(ids)}
            try:
                permutation = [where[node_id] for node_id in info_ids]
            except KeyError as exc:
                raise DeviceError(f"MANUS glove {glove_id}: node {exc} of its NodeInfo is missing from the data") from None
            positions, rotations = positions[permutation], rotations[permutation]
        R = self.options.R_wrist_sdk_left if side == "left" else self.options.R_wrist_sdk_right
        root = order[0]
        if self.options.world_coordinates:
            keypoints = wrist_frame_keypoints(positions, order, R, rotations[root])
        else:
            keypoints = wrist_frame_keypoints(root_frame_positions(positions, rotations, parents), order, R)
        wrist_quat = rotations[root]  # the hand root's orientation (the glove's IMU)
        if publish_ns is not None:  # how the SDK's publish clock relates to ours (reported, not used for stamps)
            self._clock.add(publish_ns, t_capture)
            self.device_info["clock"] = self._clock.describe()
        else:  # no device time for this sample: counted and said, never a silently empty clock report
            self.device_time_missing += 1
            self.device_info["device_time_missing"] = self.device_time_missing
            self.device_info["timestamp_domain"] = ("host callback time; manus:publishTime missing (timecode mode or "
                                                   "not set by the SDK): see device_time_missing")
        return Sample(t_capture, {"keypoints": keypoints.astype(np.float32), "wrist_quat": wrist_quat},
                      stream=self._streams[side], t_device_ns=publish_ns)

    def close(self) -> None:
        if self._sdk is not None:
            try:
                self._sdk.shutdown()
            except Exception:
                pass
            self._sdk = None
        self._topology.clear()
