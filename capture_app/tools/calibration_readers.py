"""What the calibration procedures read from a calibration episode: a camera's intrinsics at its stored
image size, the glove's lag against its wrist tracker, and the top camera's depth geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calibration.board import BoardConfig
from calibration.data import angular_speed, corrected_times
from calibration.handeye import CalibrationFailed
from calibration.model import Calibration, CameraIntrinsics
from calibration.timing import estimate_lag_ns
from capture_app.core.geometry import quat_angle
from capture_app.episode.file import open_episode


def camera_intrinsics_for(path: Path, calibration: Calibration, camera: str) -> CameraIntrinsics:
    with open_episode(path) as f:
        height, width = list(f[f"streams/{camera}"].attrs["color_shape"])[:2]
    k = calibration.ego_intrinsics if camera == "ego_camera" else calibration.top_intrinsics
    return k if (k.width, k.height) == (width, height) else k.scaled(width, height)


def glove_lag_ns(f, hand: str, raw: Calibration) -> tuple[float, float] | None:
    """How much later the glove stamps the hand's rotation than its wrist tracker does (the angular speed of
    the glove's IMU orientation against the tracker's; independent of how the two are mounted)."""
    glove, tracker = f"{hand}_glove", f"{hand}_wrist_tracker"
    if f"streams/{glove}/wrist_quat" not in f or f"streams/{tracker}" not in f:
        return None
    t_g = corrected_times(f, glove, raw)
    q_g = f[f"streams/{glove}/wrist_quat"][:]
    step = 4  # ~33 ms at 120 Hz, like the tracker's baseline below
    speed_g = quat_angle(q_g[step:], q_g[:-step]) / ((t_g[step:] - t_g[:-step]) / 1e9)
    t_t, speed_t = angular_speed(f, tracker, raw, baseline_s=step / 120.0)
    lag, score = estimate_lag_ns((t_g[step:] + t_g[:-step]) / 2, speed_g, t_t, speed_t)
    if score < 0.5:
        raise CalibrationFailed(f"the {hand} glove's and wrist tracker's rotations correlate poorly ({score:.2f}); "
                                f"rotate the {hand} wrist briskly back and forth")
    return lag, score


def depth_geometry(group, color_intrinsics: CameraIntrinsics) -> tuple[CameraIntrinsics, np.ndarray] | None:
    """The top camera's depth intrinsics and ``T_color_depth`` from its device record (a RealSense gives
    both; a camera that aligns depth to colour, like the simulated one, gives neither: the colour
    intrinsics and identity). None when the stream has no depth."""
    from calibration.plane import depth_geometry_from_device
    if "depth" not in group:
        return None
    return depth_geometry_from_device(json.loads(group.attrs.get("device", "{}")), color_intrinsics)


def board_on_depth_plane(group, row: int, T_cam_board: np.ndarray, board: BoardConfig, depth_geometry
                          ) -> np.ndarray | None:
    """PnP's board pose with its tilt taken from the depth image's plane (PnP pins a far, face-on board's
    tilt to ~0.5 deg only), or None when there is no usable depth."""
    from calibration.plane import board_points_from_depth, fit_board_plane, snap_to_plane
    if depth_geometry is None:
        return None
    depth_k, T_color_depth = depth_geometry
    depth_m = group["depth"][row].astype(np.float64) * float(group.attrs.get("depth_scale_m", 0.001))
    if depth_m.shape != (depth_k.height, depth_k.width):
        return None
    points = board_points_from_depth(depth_m, depth_k, T_color_depth, T_cam_board, board.width_m, board.height_m)
    plane = fit_board_plane(points, T_cam_board)
    return None if plane is None else snap_to_plane(T_cam_board, *plane)
