"""Renders the simulated scene through a pinhole camera: table, objects, both hands.

Uses OpenCV drawing (C code that releases the GIL). The hands are drawn where the
true calibration projects them, so a wrong calibration shows as a misaligned overlay.
"""

from __future__ import annotations

import cv2
import numpy as np

from calibration.model import CameraIntrinsics
from capture_app.geometry import invert_transform, transform_points
from capture_app.hand import FINGERTIP_INDICES, KEYPOINT_PARENTS
from drivers.sim.motion import TABLE_CENTRE, MotionModel

HAND_COLOURS = {"left": (60, 140, 255), "right": (255, 120, 60)}  # RGB
TIP_COLOUR = (255, 255, 0)
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT


def _table_lines() -> list[tuple[np.ndarray, np.ndarray]]:
    c = TABLE_CENTRE
    lines = []
    for x in np.linspace(-0.5, 0.5, 11):
        lines.append((c + [x, 0, -0.35], c + [x, 0, 0.35]))
    for z in np.linspace(-0.35, 0.35, 8):
        lines.append((c + [-0.5, 0, z], c + [0.5, 0, z]))
    return lines


_TABLE = np.array(_table_lines())  # (L, 2, 3)


class SceneRenderer:
    """Draws the scene seen from a camera with ``intrinsics``; depth optional (uint16 mm)."""

    def __init__(self, intrinsics: CameraIntrinsics, motion: MotionModel, seed: int = 0):
        self.intrinsics = intrinsics
        self.motion = motion
        h, w = intrinsics.height, intrinsics.width
        rng = np.random.default_rng([seed, 0xBA5E])
        gradient = np.linspace(70, 120, h, dtype=np.float32)[:, None, None]
        texture = rng.normal(0, 4, size=(h // 8 + 1, w // 8 + 1, 1)).astype(np.float32)
        texture = cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
        self._background = np.clip(gradient + texture + [0, 5, 10], 0, 255).astype(np.uint8)
        self._depth_cache: tuple[bytes, np.ndarray] | None = None

    def _px(self, points_cam: np.ndarray) -> np.ndarray:
        return self.intrinsics.project(points_cam)

    def world_keypoints(self, t: float) -> dict[str, np.ndarray]:
        """True keypoints (25, 3) of each hand in the world frame at time t (s)."""
        return {hand: transform_points(self.motion.T_world_wrist(t, hand), self.motion.keypoints(t, hand))
                for hand in ("left", "right")}

    def render(self, t: float, T_world_cam: np.ndarray, with_depth: bool = False):
        """RGB image (H, W, 3) uint8, and depth (H, W) uint16 in mm when ``with_depth``."""
        T_cam_world = invert_transform(T_world_cam)
        image = self._background.copy()
        depth = None
        if with_depth:
            key = T_cam_world.tobytes()
            if self._depth_cache is None or self._depth_cache[0] != key:  # a fixed camera renders it once
                self._depth_cache = (key, self._table_depth(T_cam_world))
            depth = self._depth_cache[1].copy()
        table = transform_points(T_cam_world, _TABLE.reshape(-1, 3)).reshape(-1, 2, 3)
        for a, b in table:
            self._line(image, a, b, (150, 150, 140), 1)
        for hand, points in self.world_keypoints(t).items():
            cam = transform_points(T_cam_world, points)
            for i, parent in enumerate(KEYPOINT_PARENTS):
                if parent >= 0:
                    self._line(image, cam[parent], cam[i], HAND_COLOURS[hand], 3, depth)
            self._disc(image, cam[0], 9, HAND_COLOURS[hand], depth)
            for i in FINGERTIP_INDICES:
                self._disc(image, cam[i], 5, TIP_COLOUR, depth)
        return (image, depth) if with_depth else image

    def _table_depth(self, T_cam_world: np.ndarray) -> np.ndarray:
        """Depth (mm) of the table plane seen by this camera: ray/plane intersection per pixel."""
        k = self.intrinsics
        h, w = k.height, k.width
        us, vs = np.meshgrid((np.arange(w) - k.cx) / k.fx, (np.arange(h) - k.cy) / k.fy)
        normal_cam = T_cam_world[:3, :3] @ np.array([0.0, 1.0, 0.0])
        plane_offset = normal_cam @ transform_points(T_cam_world, TABLE_CENTRE[None])[0]
        denom = us * normal_cam[0] + vs * normal_cam[1] + normal_cam[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(np.abs(denom) > 1e-6, plane_offset / denom, 0.0)
        z = np.where((z > 0.1) & (z < 6.0), z, 0.0)
        return (z * 1000.0).astype(np.uint16)

    def _line(self, image, a, b, colour, thickness, depth=None):
        pa, pb = self._px(np.stack([a, b]))
        if not (np.all(np.isfinite(pa)) and np.all(np.isfinite(pb))):
            return
        pa_i = tuple(int(v) for v in np.round(pa * _SCALE))
        pb_i = tuple(int(v) for v in np.round(pb * _SCALE))
        cv2.line(image, pa_i, pb_i, colour, thickness, cv2.LINE_AA, _SHIFT)
        if depth is not None:
            mm = int(1000 * 0.5 * (a[2] + b[2]))
            cv2.line(depth, pa_i, pb_i, mm, thickness + 4, cv2.LINE_8, _SHIFT)

    def _disc(self, image, p, radius, colour, depth=None):
        (px,) = self._px(p[None])
        if not np.all(np.isfinite(px)):
            return
        centre = tuple(int(v) for v in np.round(px * _SCALE))
        cv2.circle(image, centre, radius * _SCALE, colour, -1, cv2.LINE_AA, _SHIFT)
        if depth is not None:
            cv2.circle(depth, centre, (radius + 2) * _SCALE, int(1000 * p[2]), -1, cv2.LINE_8, _SHIFT)
