"""Hand-eye calibration of the head camera: T_headtracker_cam from (tracker pose, board pose) pairs.

AX = XB with A = T_world_headtracker (OpenCV's gripper-to-base) and B = T_cam_board
(target-to-camera); X = T_headtracker_cam. OpenCV's methods give starting points; a
least-squares refinement over X and the board's world pose Y = T_world_board minimises
the reprojection error of every board corner in every view. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares

from calibration.board import BoardView
from calibration.model import CameraIntrinsics
from capture_app.core.errors import CalibrationError
from capture_app.core.geometry import invert_transform, make_transform, matrix_to_quat, quat_to_matrix, rotation_angle

METHODS = {"TSAI": cv2.CALIB_HAND_EYE_TSAI, "PARK": cv2.CALIB_HAND_EYE_PARK, "HORAUD": cv2.CALIB_HAND_EYE_HORAUD,
           "ANDREFF": cv2.CALIB_HAND_EYE_ANDREFF, "DANIILIDIS": cv2.CALIB_HAND_EYE_DANIILIDIS}
MIN_VIEWS = 8
MIN_ROTATION_SPREAD_DEG = 10.0   # each of two independent rotation axes must be exercised this much
MAX_REPROJECTION_PX = 2.0


class CalibrationFailed(CalibrationError):
    """The data cannot give a trustworthy result; the message says why and what to do."""


@dataclass
class HandEyeResult:
    T_headtracker_cam: np.ndarray
    T_world_board: np.ndarray
    reprojection_rms_px: float
    rotation_consistency_deg: float     # spread of the board's world pose across views, after refinement
    translation_consistency_mm: float
    methods: dict[str, tuple[float, float]]  # OpenCV method -> (deg, mm) from the refined result
    views: int

    def residuals(self) -> dict:
        return {"views": self.views, "reprojection_rms_px": round(self.reprojection_rms_px, 3),
                "rotation_consistency_deg": round(self.rotation_consistency_deg, 4),
                "translation_consistency_mm": round(self.translation_consistency_mm, 3),
                "opencv_methods_vs_refined": {k: {"deg": round(d, 4), "mm": round(m, 3)}
                                              for k, (d, m) in self.methods.items()}}


def _vector(T: np.ndarray) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(T[:3, :3])
    return np.concatenate([rvec.ravel(), T[:3, 3]])


def _transform(v: np.ndarray) -> np.ndarray:
    R, _ = cv2.Rodrigues(v[:3])
    return make_transform(R, v[3:6])


def rotation_spread(rotations: list[np.ndarray]) -> np.ndarray:
    """Singular values (deg) of the relative rotation vectors of the views to their mean: how much the
    data rotates about each of three independent axes. Hand-eye needs two of them well above zero."""
    mean = quat_to_matrix(np.mean([matrix_to_quat(R) * np.sign(matrix_to_quat(R) @ matrix_to_quat(rotations[0]))
                                   for R in rotations], axis=0))
    vectors = np.array([cv2.Rodrigues(mean.T @ R)[0].ravel() for R in rotations])
    return np.degrees(np.linalg.svd(vectors, compute_uv=False) / np.sqrt(len(rotations)))


def select_views(T_world_tracker: list[np.ndarray], count: int) -> list[int]:
    """Up to ``count`` view indices spread over the rotations (greedy farthest point)."""
    if len(T_world_tracker) <= count:
        return list(range(len(T_world_tracker)))
    chosen = [0]
    distance = np.array([rotation_angle(T_world_tracker[0][:3, :3], T[:3, :3]) for T in T_world_tracker])
    while len(chosen) < count:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, [rotation_angle(T_world_tracker[nxt][:3, :3], T[:3, :3]) for T in T_world_tracker])
    return sorted(chosen)


def solve_head_camera(T_world_tracker: list[np.ndarray], views: list[BoardView],
                      intrinsics: CameraIntrinsics) -> HandEyeResult:
    """T_headtracker_cam from paired head-tracker poses and board views (same instants)."""
    n = len(views)
    if n < MIN_VIEWS:
        raise CalibrationFailed(f"only {n} usable board views (need {MIN_VIEWS}); keep the board in view while "
                                f"moving the head slowly around it, from different directions")
    spread = rotation_spread([T[:3, :3] for T in T_world_tracker])
    if spread[1] < MIN_ROTATION_SPREAD_DEG:
        raise CalibrationFailed(f"degenerate motion: the head rotated about one axis only (spread "
                                f"{spread[0]:.1f} / {spread[1]:.1f} / {spread[2]:.1f} deg); turn, nod and tilt the "
                                f"head while looking at the board")
    R_g2b = [T[:3, :3] for T in T_world_tracker]
    t_g2b = [T[:3, 3] for T in T_world_tracker]
    R_t2c = [v.T_cam_board[:3, :3] for v in views]
    t_t2c = [v.T_cam_board[:3, 3] for v in views]
    candidates = {}
    for name, method in METHODS.items():
        try:
            R, t = cv2.calibrateHandEye(R_g2b, t_g2b, R_t2c, t_t2c, method=method)
            if np.all(np.isfinite(R)) and np.all(np.isfinite(t)):
                candidates[name] = make_transform(R, t.ravel())
        except cv2.error:
            continue
    if not candidates:
        raise CalibrationFailed("every hand-eye method failed on these views; record again with more head motion")
    X0 = candidates.get("PARK", next(iter(candidates.values())))
    Y0 = _mean_transform([A @ X0 @ v.T_cam_board for A, v in zip(T_world_tracker, views)])
    K = intrinsics.K
    A_inv = [invert_transform(A) for A in T_world_tracker]

    def residuals(params):
        X, Y = _transform(params[:6]), _transform(params[6:])
        X_inv = invert_transform(X)
        out = []
        for Ai, v in zip(A_inv, views):
            T_cam_board = X_inv @ Ai @ Y
            p = v.object_points @ T_cam_board[:3, :3].T + T_cam_board[:3, 3]
            uv = (p @ K.T)[:, :2] / p[:, 2:3]
            out.append((uv - v.image_points).ravel())
        return np.concatenate(out)

    fit = least_squares(residuals, np.concatenate([_vector(X0), _vector(Y0)]), loss="huber", f_scale=1.0)
    X, Y = _transform(fit.x[:6]), _transform(fit.x[6:])
    rms = float(np.sqrt(np.mean(residuals(fit.x) ** 2) * 2))
    if rms > MAX_REPROJECTION_PX:
        raise CalibrationFailed(f"reprojection error {rms:.2f} px after refinement (limit {MAX_REPROJECTION_PX}): the "
                                f"tracker and camera do not agree; check the camera intrinsics and that the head "
                                f"mount is rigid, and run `capture-app calibrate latency` first")
    boards = [A @ X @ v.T_cam_board for A, v in zip(T_world_tracker, views)]
    rot = float(np.sqrt(np.mean([np.degrees(rotation_angle(Y[:3, :3], B[:3, :3])) ** 2 for B in boards])))
    trans = float(np.sqrt(np.mean([np.sum((B[:3, 3] - Y[:3, 3]) ** 2) for B in boards])) * 1000)
    methods = {name: (float(np.degrees(rotation_angle(T[:3, :3], X[:3, :3]))), float(np.linalg.norm(T[:3, 3] - X[:3, 3]) * 1000))
               for name, T in candidates.items()}
    return HandEyeResult(X, Y, rms, rot, trans, methods, n)


def _mean_transform(transforms: list[np.ndarray]) -> np.ndarray:
    """Mean of rigid transforms: quaternion average (one hemisphere) and mean translation."""
    q0 = matrix_to_quat(transforms[0][:3, :3])
    quats = [q if q @ q0 >= 0 else -q for q in (matrix_to_quat(T[:3, :3]) for T in transforms)]
    q = np.mean(quats, axis=0)
    return make_transform(quat_to_matrix(q / np.linalg.norm(q)), np.mean([T[:3, 3] for T in transforms], axis=0))


def solve_fixed_camera(T_world_board: list[np.ndarray], views: list[BoardView],
                       intrinsics: CameraIntrinsics) -> tuple[np.ndarray, dict]:
    """T_world_cam of a fixed camera from board views with the board's world pose known in each (a
    tracker on the board's mount), refined over all corners. Tilt the board: a board parallel to the
    image plane constrains the camera's tilt poorly."""
    if len(views) < 3:
        raise CalibrationFailed(f"only {len(views)} board views from the camera (need 3); put the board with its "
                                f"tracker in the camera's view")
    estimates = [Tb @ invert_transform(v.T_cam_board) for Tb, v in zip(T_world_board, views)]
    start = _mean_transform(estimates)
    K = intrinsics.K

    def residuals(params):  # every corner of every view, with the board's world pose known per view
        T_cam_world = invert_transform(_transform(params))
        out = []
        for Tb, v in zip(T_world_board, views):
            T = T_cam_world @ Tb
            p = v.object_points @ T[:3, :3].T + T[:3, 3]
            out.append(((p @ K.T)[:, :2] / p[:, 2:3] - v.image_points).ravel())
        return np.concatenate(out)

    fit = least_squares(residuals, _vector(start), loss="huber", f_scale=1.0)
    mean = _transform(fit.x)
    rot = float(np.sqrt(np.mean([np.degrees(rotation_angle(mean[:3, :3], E[:3, :3])) ** 2 for E in estimates])))
    trans = float(np.sqrt(np.mean([np.sum((E[:3, 3] - mean[:3, 3]) ** 2) for E in estimates])) * 1000)
    return mean, {"views": len(views), "rotation_consistency_deg": round(rot, 4),
                  "translation_consistency_mm": round(trans, 3),
                  "reprojection_rms_px": round(float(np.sqrt(np.mean(residuals(fit.x) ** 2) * 2)), 3)}
