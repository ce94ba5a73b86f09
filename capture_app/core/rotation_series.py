"""Time series of orientations: resampling, relative rotations, angular velocity.

Pure functions on numpy arrays (scipy's Rotation for log/exp). Rotations are (n, 3, 3) matrices or (n, 4)
scalar-first quaternions ``(w, x, y, z)`` as in ``geometry.py``; times are seconds (float) or nanoseconds
(int64) as the caller likes, as long as one series uses one unit.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


def to_rotation(R_or_q: np.ndarray) -> Rotation:
    """A scipy Rotation from (n, 3, 3) matrices or (n, 4) wxyz quaternions."""
    a = np.asarray(R_or_q, dtype=float)
    if a.shape[-1] == 4:
        return Rotation.from_quat(a[..., [1, 2, 3, 0]])
    return Rotation.from_matrix(a)


def rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) in radians of rotation matrices (..., 3, 3)."""
    R = np.asarray(R, dtype=float)
    return Rotation.from_matrix(R.reshape(-1, 3, 3)).as_rotvec().reshape(R.shape[:-2] + (3,))


def exp_rotvec(v: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of rotation vectors (..., 3) in radians."""
    v = np.asarray(v, dtype=float)
    return Rotation.from_rotvec(v.reshape(-1, 3)).as_matrix().reshape(v.shape[:-1] + (3, 3))


def slerp_of(t_src: np.ndarray, R_or_q: np.ndarray) -> Slerp:
    """A scipy Slerp through the samples (repeated stamps dropped); call it at times inside their span."""
    t_src = np.asarray(t_src, dtype=float)
    if len(t_src) < 2:
        raise ValueError(f"slerp needs at least 2 samples, got {len(t_src)}")
    keep = np.concatenate([[True], np.diff(t_src) > 0])  # a repeated stamp would break Slerp
    return Slerp(t_src[keep], to_rotation(R_or_q)[np.flatnonzero(keep)])


def resample(t_src: np.ndarray, R_or_q: np.ndarray, t_dst: np.ndarray) -> np.ndarray:
    """Orientations (m, 3, 3) at ``t_dst`` by slerp between the samples at ``t_src`` (strictly increasing);
    times outside [t_src[0], t_src[-1]] are clamped to the ends (callers keep t_dst inside)."""
    t_src = np.asarray(t_src, dtype=float)
    if len(t_src) < 2:
        raise ValueError(f"resample needs at least 2 samples, got {len(t_src)}")
    keep = np.concatenate([[True], np.diff(t_src) > 0])  # a repeated stamp would break Slerp
    slerp = Slerp(t_src[keep], to_rotation(R_or_q)[np.flatnonzero(keep)])
    return slerp(np.clip(np.asarray(t_dst, dtype=float), t_src[keep][0], t_src[keep][-1])).as_matrix()


def relative(R: np.ndarray) -> np.ndarray:
    """Relative rotations ``R[k]^T R[k+1]`` (n-1, 3, 3): the motion from sample k to k+1 in k's own frame."""
    R = np.asarray(R, dtype=float)
    return np.swapaxes(R[:-1], -1, -2) @ R[1:]


def angular_speed(t_s: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(midpoint times (n-1,), angular speeds (n-1,) in rad/s) of an orientation series at times ``t_s`` (s)."""
    t_s = np.asarray(t_s, dtype=float)
    dt = np.diff(t_s)
    if np.any(dt <= 0):
        raise ValueError("angular_speed: times must increase strictly")
    return 0.5 * (t_s[1:] + t_s[:-1]), np.linalg.norm(rotvec(relative(R)), axis=-1) / dt
