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

from capture_app.core.geometry import axis_angle_to_matrix, rotation_angle

PROCESS_WIDTH = 480  # images are analysed at most this wide (px)


@dataclass(frozen=True)
class VisualRotation:
    """``A`` (3, 3) = R_cam1_cam2; ``inliers``: features on the plane; ``tracked``: features followed;
    ``points2`` (inliers, 1, 2) float32: where the plane's features are in the second image (corners to follow
    into a third)."""

    A: np.ndarray
    inliers: int
    tracked: int
    points2: np.ndarray | None = None


def prepare(image: np.ndarray, width: int = PROCESS_WIDTH) -> tuple[np.ndarray, float]:
    """(grey image at most ``width`` wide, scale from the original's pixels to it) of an RGB or grey image."""
    image = np.asarray(image)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    scale = min(1.0, width / grey.shape[1])
    if scale < 1.0:
        grey = cv2.resize(grey, (int(round(grey.shape[1] * scale)), int(round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return grey, scale


def jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (SOF marker), or None when it is not a baseline/progressive
    JPEG this can read. ``data``: the encoded bytes (1-D uint8)."""
    buf = memoryview(np.ascontiguousarray(data, dtype=np.uint8)).cast("B")
    if len(buf) < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return None
    i = 2
    while i + 9 < len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = (buf[i + 2] << 8) | buf[i + 3]
        if marker in (0xC0, 0xC1, 0xC2):
            return (buf[i + 7] << 8) | buf[i + 8], (buf[i + 5] << 8) | buf[i + 6]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def small_grey(image: np.ndarray, width: int = PROCESS_WIDTH) -> tuple[np.ndarray, float] | None:
    """(grey image at most ``width`` wide, scale from the original's pixels to it) of an RGB or grey image or of
    a JPEG (1-D uint8), None when the JPEG does not decode. A JPEG is decoded already reduced by the largest of
    2, 4, 8 that keeps it at least ``width`` wide (libjpeg's scaled IDCT: a 1280x720 frame to 320x180 costs a
    third of a full decode), then resized down to ``width`` if still wider."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[1] >= 2 * width:  # raw colour: shrink first, then convert 1/4 of the pixels
        f = 2 ** int(np.log2(image.shape[1] / width))
        small = cv2.resize(image, (image.shape[1] // f, image.shape[0] // f), interpolation=cv2.INTER_AREA)
        grey, _ = prepare(small, width)
        return grey, grey.shape[1] / image.shape[1]
    if image.ndim != 1:
        return prepare(image, width)
    size = jpeg_size(image)
    flags = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
             8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
    factor = max((f for f in flags if size is not None and size[0] / f >= width), default=1)
    grey = cv2.imdecode(image, flags[factor])
    if grey is None:
        return None
    full_width = size[0] if size is not None else grey.shape[1]
    if grey.shape[1] > width:
        grey, _ = prepare(grey, width)
    return grey, grey.shape[1] / full_width


def scaled_K(K: np.ndarray, scale: float) -> np.ndarray:
    """Intrinsics (3, 3) of an image resized by ``scale`` (pixel centres kept)."""
    S = np.diag([scale, scale, 1.0])
    K2 = S @ np.asarray(K, dtype=float)
    K2[0, 2] = (K[0, 2] + 0.5) * scale - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * scale - 0.5
    return K2


def _refine_with_translation(a: np.ndarray, b: np.ndarray, K: np.ndarray, A: np.ndarray, t21: np.ndarray,
                             m: np.ndarray, iterations: int = 10) -> np.ndarray:
    """A refined with the camera's translation known: ``x2 ~ (R21 + t21 m^T) x1`` over the plane's points, R21 = A^T
    and m = n / d unknown. Knowing t removes the rotation/translation ambiguity of a narrow field of view.

    Gauss-Newton on the 6 parameters (a rotation vector applied to R21, and m), all in numpy: the Jacobian by
    forward differences, its 7 residual evaluations in one batch (a scipy least-squares call cost ~2.5 ms of
    Python overhead a pair; this ~0.2 ms). Stops when the rotation update is below 1e-7 rad."""
    x1 = np.linalg.inv(K) @ np.vstack([a.T, np.ones(len(a))])  # (3, n) normalised rays
    target = b.T  # (2, n)
    Kt, At = K @ np.asarray(t21, dtype=float), A.T
    steps = np.array([1e-6] * 3 + [1e-4] * 3)
    probes = np.vstack([np.zeros(6), np.diag(steps)])
    p = np.concatenate([np.zeros(3), m])

    def residuals(P: np.ndarray) -> np.ndarray:  # (k, 6) parameter sets -> (k, 2n) residuals
        # H = K (exp(w) A^T + t m^T)
        H = K @ axis_angle_to_matrix(P[:, :3]) @ At + Kt[None, :, None] * P[:, None, 3:]
        y = H @ x1
        return (y[:, :2] / y[:, 2:3] - target).reshape(len(P), -1)

    for _ in range(iterations):
        r = residuals(p + probes)
        J = ((r[1:] - r[0]) / steps[:, None]).T
        JTJ = J.T @ J
        try:
            step = np.linalg.solve(JTJ + 1e-9 * np.diag(np.diag(JTJ)), -J.T @ r[0])
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        p = p + step
        if np.max(np.abs(step[:3])) < 1e-7:  # 6e-6 deg: far below the features' noise
            break
    return (axis_angle_to_matrix(p[:3]) @ A.T).T


def corners(grey: np.ndarray, count: int) -> np.ndarray | None:
    """Up to ``count`` corners (n, 1, 2) float32 of a grey image, found at half its size (a quarter of the cost
    of full size; LK places them to sub-pixel in the full image anyway); None when there are none."""
    found = cv2.goodFeaturesToTrack(cv2.pyrDown(grey), count, 0.01, 4, blockSize=5)
    return None if found is None else (found * 2.0 + 0.5).astype(np.float32)


def relative_rotation(grey1: np.ndarray, grey2: np.ndarray, K: np.ndarray, prior_A: np.ndarray | None = None,
                      max_features: int = 250, min_inliers: int = 25,
                      translation: np.ndarray | None = None, points: np.ndarray | None = None,
                      predict: bool = False, lk_window: int = 15, lk_levels: int = 2,
                      backward_check: bool = True) -> VisualRotation | None:
    """The rotation between two grey images with intrinsics K (3, 3, at their size); None when too few
    features follow (a blank, blurred or covered view). ``translation`` (3,), metres: the second camera's
    ``t_cam2_cam1`` (where the first camera's origin lies in the second's frame) when known, e.g. from the head
    tracker; the rotation is then refined with it (much less noise when the head moves).

    ``points`` (n, 1, 2) float32: the corners of grey1 to follow (default: up to ``max_features`` found at full
    size). ``predict`` (with ``prior_A``): each corner's search starts where the prior rotation puts it (the
    rotation-only homography ``K A^T K^-1``), so a small LK window and pyramid (``lk_window`` px, ``lk_levels``)
    suffice: only the translation's parallax, a slip and noise are left to find; should that fail (a slip larger
    than the search), the plain search is tried. ``backward_check``: keep only corners that LK also follows back
    to within 0.5 px (without it, RANSAC alone rejects the strays)."""
    p1 = points if points is not None else cv2.goodFeaturesToTrack(grey1, max_features, 0.01, 7, blockSize=7)
    if p1 is None or len(p1) < min_inliers:
        return None
    if predict and prior_A is not None:
        H_prior = np.asarray(K, dtype=float) @ np.asarray(prior_A, dtype=float).T @ np.linalg.inv(K)
        x = np.concatenate([p1[:, 0].astype(float), np.ones((len(p1), 1))], axis=1) @ H_prior.T  # numpy: no GIL hop
        guess = np.ascontiguousarray((x[:, :2] / x[:, 2:3])[:, None], dtype=np.float32)
        found = _estimate(grey1, grey2, K, prior_A, min_inliers, translation, p1, guess, lk_window, lk_levels,
                          backward_check)
        if found is not None:
            return found
        lk_window, lk_levels, backward_check = 15, 2, True  # the plain search, as without a prediction
    return _estimate(grey1, grey2, K, prior_A, min_inliers, translation, p1, None, lk_window, lk_levels, backward_check)


def _estimate(grey1, grey2, K, prior_A, min_inliers, translation, p1, guess, lk_window, lk_levels,
              backward_check) -> VisualRotation | None:
    """``relative_rotation`` from the corners ``p1`` of grey1, LK's search starting at ``guess`` (or at p1)."""
    lk = dict(winSize=(lk_window, lk_window), maxLevel=lk_levels,
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    if guess is not None:
        p2, ok, _ = cv2.calcOpticalFlowPyrLK(grey1, grey2, p1, guess, flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    else:
        p2, ok, _ = cv2.calcOpticalFlowPyrLK(grey1, grey2, p1, None, **lk)
    good = ok[:, 0] == 1
    if backward_check:
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(grey2, grey1, p2, p1.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                                                    **lk)
        good &= (ok_back[:, 0] == 1) & (np.linalg.norm((back - p1)[:, 0], axis=1) < 0.5)
    if good.sum() < min_inliers:
        return None
    a, b = p1[good, 0].astype(np.float64), p2[good, 0].astype(np.float64)
    H, mask = cv2.findHomography(a, b, cv2.RANSAC, 1.0)
    if H is None or mask.sum() < min_inliers:
        return None
    inliers = mask[:, 0].astype(bool)
    if translation is None:  # the least-squares homography on the inliers (with a translation, refined below)
        H, _ = cv2.findHomography(a[inliers], b[inliers], 0)
        if H is None:
            return None
    count, rotations, _, normals = cv2.decomposeHomographyMat(H, np.asarray(K, dtype=float))
    candidates = np.swapaxes(np.asarray(rotations[:count], dtype=float), -1, -2)  # R_cam2_cam1 -> A = R_cam1_cam2
    reference = np.eye(3) if prior_A is None else np.asarray(prior_A, dtype=float)
    best = int(np.argmin(rotation_angle(candidates, reference)))
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
    return VisualRotation(A, int(inliers.sum()), int(good.sum()), np.ascontiguousarray(b[inliers][:, None], dtype=np.float32))
