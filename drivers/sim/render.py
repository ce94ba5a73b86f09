"""Renders the simulated scene through a pinhole camera: table, objects, both hands.

Uses OpenCV drawing (C code that releases the GIL). The hands are drawn where the
true calibration projects them, so a wrong calibration shows as a misaligned overlay.
"""

from __future__ import annotations

import cv2
import numpy as np

from calibration.model import CameraIntrinsics
from capture_app.core.geometry import invert_transform, transform_points
from capture_app.core.hand import FINGERTIP_INDICES, KEYPOINT_PARENTS
from drivers.sim.motion import TABLE_CENTRE, MotionModel

HAND_COLOURS = {"left": (60, 140, 255), "right": (255, 120, 60)}  # RGB
TIP_COLOUR = (255, 255, 0)
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT
BOARD_PIXELS_PER_SQUARE = 60  # resolution of the board texture warped into the image


def _table_lines() -> list[tuple[np.ndarray, np.ndarray]]:
    c = TABLE_CENTRE
    lines = []
    for x in np.linspace(-0.5, 0.5, 11):
        lines.append((c + [x, 0, -0.35], c + [x, 0, 0.35]))
    for z in np.linspace(-0.35, 0.35, 8):
        lines.append((c + [-0.5, 0, z], c + [0.5, 0, z]))
    return lines


_TABLE = np.array(_table_lines())  # (L, 2, 3)
_TABLE_TEXELS = (400, 280)  # the table texture's width (world x) and height (world z) in texels


class SceneRenderer:
    """Draws the scene seen from a camera with ``intrinsics``; depth optional (uint16 mm)."""

    def __init__(self, intrinsics: CameraIntrinsics, motion: MotionModel, seed: int = 0, board=None):
        self.intrinsics = intrinsics
        self.motion = motion
        h, w = intrinsics.height, intrinsics.width
        rng = np.random.default_rng([seed, 0xBA5E])
        gradient = np.linspace(70, 120, h, dtype=np.float32)[:, None, None]
        texture = rng.normal(0, 4, size=(h // 8 + 1, w // 8 + 1, 1)).astype(np.float32)
        texture = cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
        self._background = np.clip(gradient + texture + [0, 5, 10], 0, 255).astype(np.uint8)
        # the table top's own texture, fixed in the world (wood grain, stains): visual odometry needs features that
        # move with the scene, not with the image; 2.5 mm per texel over the table's 1.0 x 0.7 m
        blobs = rng.uniform(0, 1, size=(_TABLE_TEXELS[1] // 8, _TABLE_TEXELS[0] // 8)).astype(np.float32)
        blobs = cv2.resize(blobs, _TABLE_TEXELS, interpolation=cv2.INTER_CUBIC)
        grain = rng.normal(0, 0.15, size=(_TABLE_TEXELS[1], _TABLE_TEXELS[0])).astype(np.float32)
        tone = np.clip(60 + 120 * blobs + 20 * cv2.GaussianBlur(grain, (0, 0), 1.2), 0, 255)
        self._table_texture = np.stack([tone, tone * 0.85, tone * 0.7], -1).astype(np.uint8)
        self._scene_cache: tuple[bytes, np.ndarray, np.ndarray | None] | None = None
        self.board = board  # a calibration BoardConfig to draw on the table, or None
        if board is not None:
            self._board_image = cv2.cvtColor(board.image(BOARD_PIXELS_PER_SQUARE), cv2.COLOR_GRAY2RGB)

    def _px(self, points_cam: np.ndarray) -> np.ndarray:
        return self.intrinsics.project(points_cam)

    def world_keypoints(self, t: float) -> dict[str, np.ndarray]:
        """True keypoints (25, 3) of each hand in the world frame at time t (s)."""
        return {hand: transform_points(self.motion.T_world_wrist(t, hand), self.motion.keypoints(t, hand))
                for hand in ("left", "right")}

    def render(self, t: float, T_world_cam: np.ndarray, with_depth: bool = False):
        """RGB image (H, W, 3) uint8, and depth (H, W) uint16 in mm when ``with_depth``.

        All points of a frame are projected in one call; the table is drawn once per
        camera pose (a fixed camera reuses it).
        """
        T_cam_world = invert_transform(T_world_cam)
        key = T_cam_world.tobytes()
        if self._scene_cache is None or self._scene_cache[0] != key:
            self._scene_cache = (key, self._draw_table(T_cam_world), self._table_depth(T_cam_world) if with_depth else None)
        image = self._scene_cache[1].copy()
        if self.board is not None:
            self._draw_board(image, T_cam_world @ self.motion.T_world_board(t, self.board.width_m, self.board.height_m))
        depth = self._scene_cache[2].copy() if with_depth else None
        for hand, points in self.world_keypoints(t).items():
            cam = transform_points(T_cam_world, points)
            px = np.round(self._px(cam) * _SCALE)
            ok = np.all(np.isfinite(px), axis=1)
            px = px.astype(np.int64, copy=False) if ok.all() else np.where(ok[:, None], px, 0).astype(np.int64)
            mm = (cam[:, 2] * 1000).astype(int)
            colour = HAND_COLOURS[hand]
            for i, parent in enumerate(KEYPOINT_PARENTS):
                if parent >= 0 and ok[i] and ok[parent]:
                    a, b = (int(px[parent, 0]), int(px[parent, 1])), (int(px[i, 0]), int(px[i, 1]))
                    cv2.line(image, a, b, colour, 3, cv2.LINE_AA, _SHIFT)
                    if depth is not None:
                        cv2.line(depth, a, b, int((mm[parent] + mm[i]) // 2), 7, cv2.LINE_8, _SHIFT)
            for i, radius, c in [(0, 9, colour)] + [(j, 5, TIP_COLOUR) for j in FINGERTIP_INDICES]:
                if ok[i]:
                    centre = (int(px[i, 0]), int(px[i, 1]))
                    cv2.circle(image, centre, radius * _SCALE, c, -1, cv2.LINE_AA, _SHIFT)
                    if depth is not None:
                        cv2.circle(depth, centre, (radius + 2) * _SCALE, int(mm[i]), -1, cv2.LINE_8, _SHIFT)
        return (image, depth) if with_depth else image

    def _draw_table(self, T_cam_world: np.ndarray) -> np.ndarray:
        image = self._background.copy()
        self._draw_table_texture(image, T_cam_world)
        ends = transform_points(T_cam_world, _TABLE.reshape(-1, 3))
        px = self._px(ends).reshape(-1, 2, 2)
        for a, b in px:
            if np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
                cv2.line(image, tuple(int(v) for v in np.round(a * _SCALE)), tuple(int(v) for v in np.round(b * _SCALE)),
                         (150, 150, 140), 1, cv2.LINE_AA, _SHIFT)
        return image

    def _draw_table_texture(self, image: np.ndarray, T_cam_world: np.ndarray) -> None:
        """Warp the table top's texture into the image (one homography; skipped when a corner is behind)."""
        origin = TABLE_CENTRE + [-0.5, 0.0, -0.35]
        corners = origin + np.array([[0, 0, 0], [1.0, 0, 0], [0, 0, 0.7], [1.0, 0, 0.7]])
        if np.any(transform_points(T_cam_world, corners)[:, 2] <= 0.05):
            return
        R, t = T_cam_world[:3, :3], T_cam_world[:3, 3]
        texel = 1.0 / _TABLE_TEXELS[0]
        H = self.intrinsics.K @ np.column_stack([R[:, 0] * texel, R[:, 2] * texel, R @ origin + t])
        size = (image.shape[1], image.shape[0])
        cv2.warpPerspective(self._table_texture, H, size, dst=image, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_TRANSPARENT)

    def _draw_board(self, image: np.ndarray, T_cam_board: np.ndarray) -> None:
        """Warp the board image into this camera's image (a plane: one homography)."""
        if T_cam_board[2, 3] <= 0.05:
            return
        metres_per_pixel = self.board.square_m / BOARD_PIXELS_PER_SQUARE
        # board-image pixel (i, j) covers [i, i+1) x [j, j+1) of the printed board, so its centre, where
        # OpenCV puts the pixel's coordinate, is at ((i + 0.5), (j + 0.5)) * metres_per_pixel on the board
        centre_offset = 0.5 * metres_per_pixel * (T_cam_board[:3, 0] + T_cam_board[:3, 1])
        H = self.intrinsics.K @ np.column_stack([T_cam_board[:3, 0] * metres_per_pixel,
                                                 T_cam_board[:3, 1] * metres_per_pixel,
                                                 T_cam_board[:3, 3] + centre_offset])
        size = (image.shape[1], image.shape[0])
        warped = cv2.warpPerspective(self._board_image, H, size, flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.full(self._board_image.shape[:2], 255, np.uint8), H, size, flags=cv2.INTER_NEAREST)
        np.copyto(image, warped, where=mask[..., None] > 0)

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
