"""The ego camera's own rotation between two of its images, from features (OpenCV).

Corners are tracked from the first image to the second (pyramidal Lucas-Kanade, checked forwards and
backwards); the homography of the dominant plane (the table top a manipulation scene is made of) is fitted
with RANSAC and refined on its inliers, and decomposed as ``K (R + t n^T / d) K^-1``: R is the rotation with or
without translation (no parallax bias, unlike a rotation-only homography). Of the decomposition's solutions the
one nearest the prior (the head tracker's prediction) is kept. Pure computation on arrays: no I/O, no threads.

Frames: ``A = R_cam1_cam2``, the second camera's orientation in the first's (the observed relative rotation
of ``hand_eye_rotation``); camera frame +z forward, +x right, +y down.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from capture_app.core.geometry import rotation_angle
from capture_app.core.rotation_series import exp_rotvec

PROCESS_WIDTH = 480  # images are analysed at most this wide (px)


@dataclass(frozen=True)
class VisualRotation:
    """``A`` (3, 3) = R_cam1_cam2; ``inliers``: features on the plane; ``tracked``: features followed."""

    A: np.ndarray
    inliers: int
    tracked: int


def prepare(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(grey image at most PROCESS_WIDTH wide, scale from the original's pixels to it) of an RGB or grey image."""
    image = np.asarray(image)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    scale = min(1.0, PROCESS_WIDTH / grey.shape[1])
    if scale < 1.0:
        grey = cv2.resize(grey, (int(round(grey.shape[1] * scale)), int(round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return grey, scale


def scaled_K(K: np.ndarray, scale: float) -> np.ndarray:
    """Intrinsics (3, 3) of an image resized by ``scale`` (pixel centres kept)."""
    S = np.diag([scale, scale, 1.0])
    K2 = S @ np.asarray(K, dtype=float)
    K2[0, 2] = (K[0, 2] + 0.5) * scale - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * scale - 0.5
    return K2


def _refine_with_translation(a: np.ndarray, b: np.ndarray, K: np.ndarray, A: np.ndarray, t21: np.ndarray,
                             m: np.ndarray) -> np.ndarray:
    """A refined with the camera's translation known: ``x2 ~ (R21 + t21 m^T) x1`` over the plane's points, R21 = A^T
    and m = n / d unknown. Knowing t removes the rotation/translation ambiguity of a narrow field of view."""
    from scipy.optimize import least_squares  # scipy: a dependency; imported here to keep import time low

    Kinv = np.linalg.inv(K)
    x1 = np.column_stack([a, np.ones(len(a))]) @ Kinv.T

    def residual(p):
        H = K @ (exp_rotvec(p[:3]) @ A.T + np.outer(t21, p[3:]))
        y = x1 @ H.T
        return ((y[:, :2] / y[:, 2:3]) - b).ravel()

    fit = least_squares(residual, np.concatenate([np.zeros(3), m]), method="lm", x_scale=np.r_[[1e-3] * 3, [0.1] * 3])
    return (exp_rotvec(fit.x[:3]) @ A.T).T


def relative_rotation(grey1: np.ndarray, grey2: np.ndarray, K: np.ndarray, prior_A: np.ndarray | None = None,
                      max_features: int = 250, min_inliers: int = 25,
                      translation: np.ndarray | None = None) -> VisualRotation | None:
    """The rotation between two grey images with intrinsics K (3, 3, at their size); None when too few
    features follow (a blank, blurred or covered view). ``translation`` (3,), metres: the second camera's
    ``t_cam2_cam1`` (where the first camera's origin lies in the second's frame) when known, e.g. from the head
    tracker; the rotation is then refined with it (much less noise when the head moves)."""
    p1 = cv2.goodFeaturesToTrack(grey1, max_features, 0.01, 7, blockSize=7)
    if p1 is None or len(p1) < min_inliers:
        return None
    lk = dict(winSize=(15, 15), maxLevel=2, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    p2, ok, _ = cv2.calcOpticalFlowPyrLK(grey1, grey2, p1, None, **lk)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(grey2, grey1, p2, None, **lk)
    good = (ok[:, 0] == 1) & (ok_back[:, 0] == 1) & (np.linalg.norm((back - p1)[:, 0], axis=1) < 0.5)
    if good.sum() < min_inliers:
        return None
    a, b = p1[good, 0].astype(np.float64), p2[good, 0].astype(np.float64)
    H, mask = cv2.findHomography(a, b, cv2.RANSAC, 1.0)
    if H is None or mask.sum() < min_inliers:
        return None
    inliers = mask[:, 0].astype(bool)
    H, _ = cv2.findHomography(a[inliers], b[inliers], 0)
    if H is None:
        return None
    count, rotations, _, normals = cv2.decomposeHomographyMat(H, np.asarray(K, dtype=float))
    candidates = [np.asarray(R).T for R in rotations[:count]]  # R_cam2_cam1 -> A = R_cam1_cam2
    reference = np.eye(3) if prior_A is None else np.asarray(prior_A, dtype=float)
    best = min(range(count), key=lambda i: float(rotation_angle(candidates[i], reference)))
    A = candidates[best]
    U, _, Vt = np.linalg.svd(A)  # re-orthonormalise
    A = U @ Vt
    if translation is not None:
        t21 = np.asarray(translation, dtype=float)
        m = np.asarray(normals[best], dtype=float)[:, 0]
        m = m / max(np.linalg.norm(m), 1e-9) * (1.0 / 0.8)  # n / d, the plane ~0.8 m away to start with
        if m @ np.array([0.0, 0.0, 1.0]) < 0:
            m = -m
        A = _refine_with_translation(a[inliers], b[inliers], np.asarray(K, dtype=float), A, t21, m)
    return VisualRotation(A, int(inliers.sum()), int(good.sum()))
