"""A board's plane from a depth image, to correct the tilt that PnP pins poorly.

Seen from far and nearly face-on (the top camera looking down on a board on the table), PnP
gets the board's position and in-plane rotation well but its tilt only to ~0.5 degrees; the
depth pixels over the board give its plane to a few hundredths of a degree. Pure: no I/O.
"""

from __future__ import annotations

import cv2
import numpy as np

from calibration.model import CameraIntrinsics
from capture_app.core.geometry import axis_angle_to_matrix, invert_transform, make_transform


def depth_geometry_from_device(device: dict, color_intrinsics: CameraIntrinsics) -> tuple[CameraIntrinsics, np.ndarray]:
    """The top camera's depth intrinsics and ``T_color_depth`` (4, 4: depth-camera points to colour-camera points,
    metres) from its device record: a RealSense gives both (its depth is not aligned to colour); a camera that
    aligns depth to colour, like the simulated one, gives neither: the colour intrinsics and identity."""
    k = device.get("depth_intrinsics")
    extrinsics = device.get("T_color_depth")
    if k is None or extrinsics is None:
        return color_intrinsics, np.eye(4)
    R = np.array(extrinsics["rotation_colmajor"], float).reshape(3, 3).T  # librealsense: column-major
    depth_k = CameraIntrinsics(int(k["width"]), int(k["height"]), float(k["fx"]), float(k["fy"]), float(k["cx"]),
                               float(k["cy"]))
    return depth_k, make_transform(R, np.array(extrinsics["translation_m"], float))


def board_points_from_depth(depth_m: np.ndarray, depth_intrinsics: CameraIntrinsics, T_color_depth: np.ndarray,
                            T_color_board: np.ndarray, width_m: float, height_m: float,
                            margin_m: float = 0.02) -> np.ndarray:
    """3-D points (n, 3), colour-camera frame, metres, of the valid depth pixels (0 = no depth) that fall
    inside the board's outline (as PnP places it, ``margin_m`` inside its edges). The depth camera sees
    the scene from ``T_color_depth`` (identity when depth is aligned to colour)."""
    outline = np.array([[margin_m, margin_m, 0], [width_m - margin_m, margin_m, 0],
                        [width_m - margin_m, height_m - margin_m, 0], [margin_m, height_m - margin_m, 0]])
    T_depth_board = invert_transform(T_color_depth) @ T_color_board
    in_depth = outline @ T_depth_board[:3, :3].T + T_depth_board[:3, 3]
    pixels = depth_intrinsics.project(in_depth)
    mask = np.zeros(depth_m.shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round(pixels).astype(np.int32), 1)
    v, u = np.nonzero(mask & (depth_m > 0))
    z = depth_m[v, u]
    k = depth_intrinsics
    points = np.column_stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z])
    return points @ T_color_depth[:3, :3].T + T_color_depth[:3, 3]


def fit_board_plane(points: np.ndarray, T_cam_board: np.ndarray, band_m: tuple[float, ...] = (0.01, 0.003)
                    ) -> tuple[np.ndarray, float] | None:
    """The plane (unit normal n along the board's +z, offset c: n . p = c) through the ``points`` that lie
    on the board: starting from the PnP pose, points farther than each ``band_m`` from the current plane
    (hands, objects on the board) are left out before refitting. None when too few points remain."""
    n = T_cam_board[:3, 2] / np.linalg.norm(T_cam_board[:3, 2])
    c = float(n @ T_cam_board[:3, 3])
    for band in band_m:
        inliers = points[np.abs(points @ n - c) < band]
        if len(inliers) < 100:
            return None
        centre = inliers.mean(axis=0)
        normal = np.linalg.svd(inliers - centre, full_matrices=False)[2][-1]
        n = normal if normal @ n > 0 else -normal
        c = float(n @ centre)
    return n, c


def snap_to_plane(T_cam_board: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """``T_cam_board`` turned (about the smallest axis) so that its +z is ``normal`` and moved along the
    normal onto the plane ``normal . p = offset``: the in-plane position and rotation stay PnP's."""
    z = T_cam_board[:3, 2]
    axis = np.cross(z, normal)
    angle = np.arctan2(np.linalg.norm(axis), z @ normal)
    R = axis_angle_to_matrix(axis / np.linalg.norm(axis) * angle) if angle > 1e-12 else np.eye(3)
    t = T_cam_board[:3, 3]
    return make_transform(R @ T_cam_board[:3, :3], t - (normal @ t - offset) * normal)
