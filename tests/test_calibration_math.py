"""Pure calibration math: latency by cross-correlation, roles by motion, hand-eye against truth."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.timing import assign_roles, estimate_lag_ns
from capture_app.core.errors import CalibrationError


def _motion(t):
    return np.abs(np.sin(2 * np.pi * 0.7 * t) + 0.5 * np.sin(2 * np.pi * 1.9 * t + 1) + 0.3 * np.sin(2 * np.pi * 3.1 * t))


@pytest.mark.parametrize("lag_ms", [-37.0, 0.0, 12.5, 41.3])
def test_lag_between_a_30fps_and_a_250hz_signal_is_found_within_a_millisecond(lag_ms):
    rng = np.random.default_rng(2)
    t_b = np.arange(0, 20, 1 / 250)
    t_a = np.arange(0, 20, 1 / 30) + rng.uniform(-0.002, 0.002, 600)
    a = _motion(t_a) + rng.normal(0, 0.02, len(t_a))
    b = _motion(t_b) + rng.normal(0, 0.02, len(t_b))
    lag, score = estimate_lag_ns((t_a + lag_ms / 1000) * 1e9, a, t_b * 1e9, b)
    assert lag / 1e6 == pytest.approx(lag_ms, abs=1.0) and score > 0.9


def test_too_short_overlap_is_refused():
    t = np.arange(0, 1, 0.01) * 1e9
    with pytest.raises(CalibrationError, match="overlap too briefly"):
        estimate_lag_ns(t, np.ones_like(t), t, np.ones_like(t))


def test_roles_by_motion_and_ambiguity():
    t = np.arange(0, 9, 0.01) * 1e9
    window = lambda a, b: ((t >= a * 1e9) & (t < b * 1e9)).astype(float)  # noqa: E731
    motion = {"A": (t, 0.01 + window(3, 6)), "B": (t, 0.01 + window(0, 3)), "C": (t, 0.01 + window(6, 9))}
    windows = [("head", 0, 3e9), ("left_wrist", 3e9, 6e9), ("right_wrist", 6e9, 9e9)]
    assert assign_roles(motion, windows) == {"head": "B", "left_wrist": "A", "right_wrist": "C"}
    motion["C"] = (t, 0.01 + window(0, 3) + window(6, 9))
    with pytest.raises(CalibrationError, match="ambiguous head: .* move only the head tracker"):
        assign_roles(motion, windows)


def test_the_simulated_camera_draws_the_board_where_its_true_pose_puts_it():
    """Board corners detected in rendered images sit on the true pose's projection, without bias
    (a half-pixel texture offset once moved every corner 0.3 px and the head-camera result 0.1 deg)."""
    from calibration.board import BoardConfig, BoardDetector
    from capture_app.core.geometry import invert_transform
    from drivers.sim.calibration import EGO_INTRINSICS_720P as k
    from drivers.sim.motion import MotionModel, T_world_board
    from drivers.sim.render import SceneRenderer
    board = BoardConfig()
    motion = MotionModel(0, 1.0, "survey", "static", "work")
    renderer, detector = SceneRenderer(k, motion, 0, board=board), BoardDetector(board)
    offsets = []
    for t in np.linspace(0.0, 40.0, 25):
        T_world_cam = motion.T_world_cam(t)
        found = detector.corners(renderer.render(t, T_world_cam))
        if found is None:
            continue
        object_points, image_points = found
        T_cam_board = invert_transform(T_world_cam) @ T_world_board(board.width_m, board.height_m)
        p = object_points @ T_cam_board[:3, :3].T + T_cam_board[:3, 3]
        offsets.append(image_points - (p @ k.K.T)[:, :2] / p[:, 2:3])
    assert len(offsets) >= 15
    offsets = np.concatenate(offsets)
    assert np.all(np.abs(offsets.mean(axis=0)) < 0.05)       # no systematic shift (was -0.33, -0.23 px)
    assert np.sqrt(np.mean(offsets ** 2)) < 0.3              # and each corner within a fraction of a pixel


def test_the_board_plane_from_depth_corrects_pnp_tilt_and_ignores_hands_on_it():
    from calibration.model import CameraIntrinsics
    from calibration.plane import board_points_from_depth, fit_board_plane, snap_to_plane
    from capture_app.core.geometry import axis_angle_to_matrix, make_transform, rotation_angle
    k = CameraIntrinsics(640, 480, 600.0, 600.0, 320.0, 240.0)
    true = make_transform(axis_angle_to_matrix(np.array([0.2, -0.1, 0.3])), np.array([-0.2, -0.15, 1.5]))
    # the depth image of the board's plane (mm steps, as a RealSense gives), a "hand" 4 cm above part of it
    v, u = np.mgrid[0:480, 0:640]
    rays = np.stack([(u - 320.0) / 600.0, (v - 240.0) / 600.0, np.ones_like(u, float)], -1)
    n, c = true[:3, 2], true[:3, 2] @ true[:3, 3]
    depth = np.round(c / (rays @ n) * 1000) / 1000
    depth[200:260, 300:380] -= 0.04
    pnp = true.copy()
    pnp[:3, :3] = true[:3, :3] @ axis_angle_to_matrix(np.radians([0.5, -0.4, 0.0]))  # PnP's typical tilt error
    points = board_points_from_depth(depth, k, np.eye(4), pnp, 0.4, 0.3)
    normal, offset = fit_board_plane(points, pnp)
    assert np.degrees(np.arccos(min(1.0, normal @ n))) < 0.02 and abs(offset - c) < 0.001
    snapped = snap_to_plane(pnp, normal, offset)
    assert np.degrees(rotation_angle(snapped[:3, :3], true[:3, :3])) < 0.05
    assert np.linalg.norm(snapped[:3, 3] - true[:3, 3]) < 0.002
    assert fit_board_plane(points[:50], pnp) is None  # too little depth on the board: PnP's pose stays
