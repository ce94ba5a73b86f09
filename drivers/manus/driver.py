"""The MANUS gloves driver: both hands from one SDK session, in a process of its own.

The SDK calls back on its own thread: the callback stamps the host clock, copies the
nodes and queues them; it never raises (an error is kept and raised by ``read``).
Type ``manus``; stream ``left_glove`` with ``extra_streams = ["right_glove"]``.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field

import numpy as np

from capture_app.clock import now_ns
from capture_app.errors import DeviceError
from drivers.base import Driver, Sample
from drivers.manus.binding import ManusSDK, library_path
from drivers.manus.topology import canonical_indices, hand_side, wrist_frame_keypoints

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
        self._topology: dict[int, tuple[str, np.ndarray]] = {}
        self.dropped_in_callback = 0
        self._streams = {"left": "left_glove", "right": "right_glove"}

    def open(self) -> None:
        o = self.options
        sdk = ManusSDK(library_path(o.library))
        self._sdk = sdk
        sdk.initialize(o.mode)
        sdk.register_raw_skeleton_callback(self._on_raw_skeletons)
        sdk.set_coordinate_system(o.view, o.up, o.handedness, o.unit_scale)
        host = sdk.connect(o.host_wait_s)
        self.device_info.update({"model": "MANUS Quantum Metagloves", "sdk_major": sdk.major, "mode": o.mode,
                                 "host": host})

    def _on_raw_skeletons(self, info_pointer) -> None:
        """SDK thread: copy, stamp, queue. Never raises."""
        t_capture = now_ns()
        try:
            stream_info = info_pointer.contents
            for i in range(stream_info.skeletonsCount):
                info, nodes = self._sdk.raw_skeleton(i)
                positions = np.array([(n.transform.position.x, n.transform.position.y, n.transform.position.z)
                                      for n in nodes], dtype=np.float64)
                rotations = np.array([(n.transform.rotation.w, n.transform.rotation.x, n.transform.rotation.y,
                                       n.transform.rotation.z) for n in nodes], dtype=np.float64)
                try:
                    self._queue.put_nowait((t_capture, info.gloveId, int(info.publishTime.time), positions, rotations))
                except queue.Full:
                    self.dropped_in_callback += 1
        except BaseException as exc:  # kept for read(); raising into C would abort the process
            self._callback_error = exc

    def read(self) -> Sample | None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise DeviceError(f"MANUS raw skeleton callback failed: {error}")
        try:
            t_capture, glove_id, publish_time, positions, rotations = self._queue.get(timeout=0.2)
        except queue.Empty:
            return None
        if glove_id not in self._topology:
            infos = self._sdk.node_info(glove_id)
            self._topology[glove_id] = (hand_side(infos), canonical_indices(infos))
            self.device_info.setdefault("gloves", {})[self._topology[glove_id][0]] = glove_id
        side, order = self._topology[glove_id]
        R = self.options.R_wrist_sdk_left if side == "left" else self.options.R_wrist_sdk_right
        keypoints = wrist_frame_keypoints(positions, order, R).astype(np.float32)
        wrist_quat = rotations[order[0]]  # the hand root's orientation from the glove's IMU
        return Sample(t_capture, {"keypoints": keypoints, "wrist_quat": wrist_quat}, stream=self._streams[side],
                      t_device_ns=publish_time)

    def close(self) -> None:
        if self._sdk is not None:
            try:
                self._sdk.shutdown()
            except Exception:
                pass
            self._sdk = None
        self._topology.clear()
