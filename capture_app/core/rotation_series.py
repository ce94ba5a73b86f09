"""Time series of orientations: resampling, relative rotations, angular velocity.

Pure functions on numpy arrays (scipy's Rotation for log/exp). Rotations are (n, 3, 3) matrices or (n, 4)
scalar-first quaternions ``(w, x, y, z)`` as in ``geometry.py``; times are seconds (float) or nanoseconds
(int64) as the caller likes, as long as one series uses one unit.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from capture_app.core.geometry import axis_angle_to_matrix, matrix_to_quat, quat_normalize


def to_rotation(R_or_q: np.ndarray) -> Rotation:
    """A scipy Rotation from (n, 3, 3) matrices or (n, 4) wxyz quaternions."""
    a = np.asarray(R_or_q, dtype=float)
    if a.shape[-1] == 4:
        return Rotation.from_quat(a[..., [1, 2, 3, 0]])
    return Rotation.from_matrix(a)


def rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) in radians of rotation matrices (..., 3, 3) (angle in [0, pi]); numpy only, via
    the quaternion (a scipy Rotation's checks cost ~50 us a call, which the drift watch pays many times a
    second)."""
    q = matrix_to_quat(np.asarray(R, dtype=float))  # w >= 0
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    # angle / sin(angle / 2), with its limit 2 at zero (s tiny: 2 / w ~ 2)
    factor = np.where(s > 1e-12, angle / np.maximum(s, 1e-300), 2.0 / np.maximum(q[..., :1], 1e-300))
    return v * factor


def exp_rotvec(v: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of rotation vectors (..., 3) in radians (Rodrigues, numpy only)."""
    return axis_angle_to_matrix(np.asarray(v, dtype=float))


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


class QuatTrack:
    """An orientation series (times strictly increasing after dropping repeats) interpolated by normalised
    linear interpolation of sign-aligned quaternions: for samples milliseconds apart (a 250 Hz tracker) it
    differs from slerp by far less than a microradian, and it is all numpy (a batch of a whole lag scan in one
    go). Times outside the span are clamped to its ends. ``t_s`` (n,) s, ``R_or_q`` (n, 3, 3) or (n, 4) wxyz;
    n >= 2."""

    def __init__(self, t_s: np.ndarray, R_or_q: np.ndarray):
        if len(t_s) < 2:
            raise ValueError(f"QuatTrack needs at least 2 samples, got {len(t_s)}")
        a = np.asarray(R_or_q, dtype=float)
        q = quat_normalize(a) if a.shape[-1] == 4 else matrix_to_quat(a)
        keep = np.concatenate([[True], np.diff(t_s) > 0])
        self.t, q = np.asarray(t_s, dtype=float)[keep], q[keep]
        flip = np.cumsum(np.concatenate([[0], np.sum(q[1:] * q[:-1], axis=1) < 0])) % 2 == 1
        self.q = np.where(flip[:, None], -q, q)  # neighbours in one hemisphere: nlerp takes the short way

    def at(self, t_s: np.ndarray) -> np.ndarray:
        """Unit quaternions (..., 4) at ``t_s`` (...)."""
        t = np.clip(t_s, self.t[0], self.t[-1])
        i = np.clip(np.searchsorted(self.t, t, side="right") - 1, 0, len(self.t) - 2)
        f = ((t - self.t[i]) / (self.t[i + 1] - self.t[i]))[..., None]
        return quat_normalize((1 - f) * self.q[i] + f * self.q[i + 1])

    def angle_between(self, t1_s: np.ndarray, t2_s: np.ndarray) -> np.ndarray:
        """The rotation angle (rad) from the orientation at t1 to the one at t2 (broadcast)."""
        q1, q2 = self.at(t1_s), self.at(t2_s)
        w = np.abs(np.sum(q1 * q2, axis=-1))
        v = np.linalg.norm(q1[..., :1] * q2[..., 1:] - q2[..., :1] * q1[..., 1:] - np.cross(q1[..., 1:], q2[..., 1:]),
                           axis=-1)
        return 2.0 * np.arctan2(v, w)
