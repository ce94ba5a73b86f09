"""The drift watch's ego camera: its frames' rotations, chained, against the head tracker.

``EgoChain.decode`` turns the ego frames the drift watch's inbox kept (at most ``visual_rate_hz`` a second) into
small grey images (``core.visual_rotation.small_grey``: a JPEG decoded already reduced to ``VISUAL_WIDTH``);
``advance`` takes those the head tracker's samples cover, in pairs: each pair's rotation ``A = R_cam1_cam2``
(``relative_rotation``: its corners found at half size, or the previous pair's plane features while enough
remain; each searched where the tracker's rotation predicts it; refined with the tracker's translation), chained into the camera's orientation in a world of its own, and the
chain fed with the tracker's orientations to the camera mount's ``SlipDetector`` in one batch. A gap over
``MAX_FRAME_GAP_S``, a frame the tracker does not cover or a pair without features restarts the chain (and
the detector's track). ``speeds`` keeps each pair's angular speed for the latency estimate. Times are stamps
with the calibration's latency offset removed, in seconds.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from calibration.model import CameraIntrinsics
from capture_app.core.geometry import invert_transform, make_transform, rotation_angle
from capture_app.core.mount_slip import Slip, SlipDetector
from capture_app.core.visual_rotation import corners, relative_rotation, scaled_K, small_grey
from capture_app.recorder.drift_inbox import Series, sampled_at

# Ego frames are analysed this wide: a 1280x720 JPEG decodes straight to 320x180 (libjpeg's 1/4 scaled IDCT),
# the size bench/rig_faults.py measures the 2 deg slip at (size error <= 0.11 deg of the 0.3 allowed).
VISUAL_WIDTH = 320
VISUAL_CORNERS = 150  # corners followed per frame pair (~110-140 on the table plane in the sim scene)
REUSE_CORNERS = 100  # a pair's plane features found in its second image are followed on while this many remain
LK_WINDOW, LK_LEVELS = 9, 1  # search started at the tracker's prediction: ~+-12 px (~4 deg) at 320 px; beyond, the plain search
MAX_FRAME_GAP_S = 0.5  # ego frames further apart than this start a new chain


class EgoChain:
    """The ego frames waiting for the head tracker, and the current chain. ``intrinsics``: the calibration's
    ego camera intrinsics (scaled to the size the frames come in); ``keep_s``: how long ``speeds`` reaches back."""

    def __init__(self, intrinsics: CameraIntrinsics, keep_s: float):
        self._intrinsics = intrinsics
        self._size = (intrinsics.width, intrinsics.height)
        self._K = intrinsics.K
        self._frames: deque = deque()  # (t_s, grey, scale) waiting for the head tracker to cover them
        self._previous: tuple | None = None  # (t_s, grey, scale, T_world_cam, chain or None)
        self._points: np.ndarray | None = None  # the previous frame's corners to follow (from its pair), or None
        self.speeds = Series(keep_s, (2,), 1024)  # (t_s, [angular speed since the previous frame, its t_s])
        self.analysed = {"frame_pairs": 0, "frames_undecodable": 0}

    def decode(self, messages: list, offset_ns: int) -> None:
        """Queue the frames of ``messages`` (ego camera samples, oldest first) as small grey images."""
        for m in messages:
            image = m.arrays.get("color")
            if image is None:
                continue
            prepared = small_grey(image, VISUAL_WIDTH)
            if prepared is None:
                self.analysed["frames_undecodable"] += 1
                continue
            grey, scale = prepared
            size = (int(round(grey.shape[1] / scale)), int(round(grey.shape[0] / scale)))
            if size != self._size:  # intrinsics at the size the frames come in
                self._size = size
                self._K = self._intrinsics.scaled(*size).K
            self._frames.append(((m.t_capture_ns - offset_ns) / 1e9, grey, scale))

    def advance(self, head: Series, detector: SlipDetector, T_headtracker_cam: np.ndarray) -> list[Slip]:
        """Analyse the waiting frames that ``head`` (the head tracker's poses) covers; the slips found.
        ``T_headtracker_cam`` (4, 4): the calibrated mount (its rotation replaced by the detector's estimate)."""
        ready = []
        while self._frames and head.last_t is not None and self._frames[0][0] <= head.last_t:
            ready.append(self._frames.popleft())
        if not ready:
            return []
        T_wt_all, covered = sampled_at(head, np.array([f[0] for f in ready]), with_position=True)
        slips: list[Slip] = []
        batch: list[tuple] = []  # (t_s, R_world_headtracker, chain) for the detector

        def flush():
            if batch:
                slips.extend(detector.add(np.array([b[0] for b in batch]), np.array([b[1] for b in batch]),
                                          np.array([b[2] for b in batch])))
            batch.clear()

        for k, (t_s, grey, scale) in enumerate(ready):
            if not covered[k]:  # the tracker does not cover this frame (tracking lost)
                self._previous = self._points = None
                continue
            T_wt = T_wt_all[k]
            T_wc = T_wt @ make_transform(detector.mount, T_headtracker_cam[:3, 3])
            previous, self._previous = self._previous, (t_s, grey, scale, T_wc, None)
            if (previous is None or t_s - previous[0] > MAX_FRAME_GAP_S or previous[4] is None
                    or previous[1].shape != grey.shape):
                flush()
                self._previous, self._points = (t_s, grey, scale, T_wc, np.eye(3)), None  # a new chain, in a new world
                detector.restart()
                continue
            p_t, p_grey, _, p_T, p_chain = previous
            T_21 = invert_transform(T_wc) @ p_T
            points, self._points = self._points, None
            if points is None or len(points) < REUSE_CORNERS:
                points = corners(p_grey, VISUAL_CORNERS)
            seen = relative_rotation(p_grey, grey, scaled_K(self._K, scale), prior_A=T_21[:3, :3].T,
                                     translation=T_21[:3, 3], points=points, predict=True,
                                     lk_window=LK_WINDOW, lk_levels=LK_LEVELS)
            if seen is None:  # a covered or blurred view: the chain restarts at the next frame
                continue
            self._points = seen.points2
            self.analysed["frame_pairs"] += 1
            chain = p_chain @ seen.A
            self._previous = (t_s, grey, scale, T_wc, chain)
            self.speeds.add(t_s, np.array([float(rotation_angle(np.eye(3), seen.A)) / (t_s - p_t), p_t]))
            batch.append((t_s, T_wt[:3, :3], chain))
        flush()
        return slips
