"""The rotation part of hand-eye calibration from relative rotations, and its residual.

Two orientation sources rigidly joined by a mount ``R_ref_obs`` (the head tracker and the ego camera through
``T_headtracker_cam``; a wrist tracker and the glove's IMU) move together: between two instants the observed
body turns by ``A = R_obs(t1)^T R_obs(t2)`` and the reference by ``B = R_ref(t1)^T R_ref(t2)``, and
``A = X^T B X`` with ``X = R_ref_obs`` (AX = XB). Neither source's world frame is needed.

- ``residual_deg``: per pair, the angle of ``(X^T B X)^T A``; zero for a correct mount and exact data.
- ``solve``: the X that best explains the pairs (rotation axes aligned by Kabsch: ``log(B) = X log(A)``);
  needs pairs with at least two different rotation axes.
"""

from __future__ import annotations

import numpy as np

from capture_app.core.rotation_series import rotvec

MIN_PAIR_ROTATION_DEG = 2.0  # pairs turning less than this carry no axis information


def residual_deg(A: np.ndarray, B: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Angles (n,) in degrees of ``(X^T B X)^T A`` for relative rotations A, B (n, 3, 3) and the mount X (3, 3)."""
    predicted = X.T @ np.asarray(B, dtype=float) @ X
    E = np.swapaxes(predicted, -1, -2) @ np.asarray(A, dtype=float)
    return np.degrees(np.linalg.norm(rotvec(E), axis=-1))


def solve(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, float]:
    """(X (3, 3), the weakest axis spread in degrees) from relative rotations A (obs) and B (ref), (n, 3, 3).

    Pairs turning less than ``MIN_PAIR_ROTATION_DEG`` are ignored. ValueError when the motion cannot fix X
    (fewer than 3 useful pairs, or every pair about one axis): say which motion is missing.
    """
    a, b = rotvec(np.asarray(A, dtype=float)), rotvec(np.asarray(B, dtype=float))
    useful = (np.linalg.norm(a, axis=1) > np.radians(MIN_PAIR_ROTATION_DEG)) & (
        np.linalg.norm(b, axis=1) > np.radians(MIN_PAIR_ROTATION_DEG))
    if useful.sum() < 3:
        raise ValueError(f"hand-eye: {int(useful.sum())} motion pairs turning over {MIN_PAIR_ROTATION_DEG} deg; "
                         f"turn the head (or wrist) left, right, up and down")
    a, b = a[useful], b[useful]
    H = a.T @ b  # b = X a  ->  X = argmax tr(X^T b a^T)... Kabsch on the axis pairs
    U, S, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    X = Vt.T @ D @ U.T
    spread = np.degrees(np.sqrt(S[1] / max(len(a), 1)))  # second singular value: motion about a second axis
    if S[1] < 1e-6 * max(S[0], 1e-12):
        raise ValueError("hand-eye: every motion pair turns about one axis; also nod and tilt the head")
    return X, float(spread)
