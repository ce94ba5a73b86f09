"""Rigid-body math: 4x4 transforms, unit quaternions, slerp and the 6-D rotation.

Pure functions on numpy arrays; no I/O, no threads, no state.

Conventions
- Quaternions are scalar-first ``(w, x, y, z)``, unit norm.
- ``T_a_b`` is a 4x4 homogeneous transform mapping points in frame b to frame a:
  ``p_a = T_a_b @ p_b``. Composition reads left to right: ``T_a_c = T_a_b @ T_b_c``.
- A *pose* vector is ``(x, y, z, qw, qx, qy, qz)``: translation in metres, then the
  rotation quaternion, i.e. the compact form of ``T_parent_child``.
- The 6-D rotation (Zhou et al. 2019) is the first two columns of R, column by
  column: ``(R00, R10, R20, R01, R11, R21)``.
Functions accept a leading batch dimension where noted ("..." in the shape).
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def rot_x(angle: float) -> np.ndarray:
    """3x3 rotation about +x by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    """3x3 rotation about +y by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    """3x3 rotation about +z by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation vector (..., 3) in radians -> rotation matrices (..., 3, 3)."""
    v = np.asarray(axis_angle, dtype=float)
    theta = np.linalg.norm(v, axis=-1, keepdims=True)
    k = v / np.maximum(theta, _EPS)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(v.shape[:-1] + (3, 3))
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    return np.eye(3) + s * K + (1.0 - c) * (K @ K)


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Build 4x4 transforms (..., 4, 4) from rotations (..., 3, 3) and translations (..., 3) in metres."""
    R = np.asarray(rotation, dtype=float)
    t = np.asarray(translation, dtype=float)
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (..., 4, 4): ``inv(T_a_b) = T_b_a``."""
    T = np.asarray(T, dtype=float)
    R_t = np.swapaxes(T[..., :3, :3], -1, -2)
    t = T[..., :3, 3]
    return make_transform(R_t, -np.einsum("...ij,...j->...i", R_t, t))


def transform_points(T_a_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Map points (..., N, 3) given in frame b into frame a."""
    T = np.asarray(T_a_b, dtype=float)
    p = np.asarray(points_b, dtype=float)
    return p @ np.swapaxes(T[..., :3, :3], -1, -2) + T[..., None, :3, 3]


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4)."""
    q = np.asarray(q, dtype=float)
    return q / np.maximum(np.sqrt(np.sum(q * q, axis=-1, keepdims=True)), _EPS)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of (..., 4) wxyz quaternions (rotation b, then a)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=float), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=float), -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """Conjugate (the inverse, for unit quaternions) of (..., 4) wxyz quaternions."""
    q = np.array(q, dtype=float)
    q[..., 1:] *= -1.0
    return q


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit wxyz quaternions (..., 4) -> rotation matrices (..., 3, 3)."""
    w, x, y, z = np.moveaxis(quat_normalize(q), -1, 0)
    return np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    ).reshape(np.shape(w) + (3, 3))


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit wxyz quaternions (..., 4) with w >= 0.

    Uses the numerically stable branch (largest diagonal term) per element.
    """
    R = np.asarray(R, dtype=float)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    trace = m00 + m11 + m22
    # Four candidate (unnormalised) quaternions; pick the best-conditioned one.
    candidates = np.stack(
        [
            np.stack([1 + trace, R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1),
            np.stack([R[..., 2, 1] - R[..., 1, 2], 1 + m00 - m11 - m22, R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0]], -1),
            np.stack([R[..., 0, 2] - R[..., 2, 0], R[..., 0, 1] + R[..., 1, 0], 1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1]], -1),
            np.stack([R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        axis=-2,
    )
    choice = np.argmax(np.stack([trace, m00, m11, m22], -1), axis=-1)
    q = np.take_along_axis(candidates, choice[..., None, None], axis=-2)[..., 0, :]
    q = quat_normalize(q)
    return np.where(q[..., :1] < 0, -q, q)


def slerp(q0: np.ndarray, q1: np.ndarray, u: np.ndarray | float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions along the shortest arc.

    ``u`` in [0, 1] gives q0 at 0 and q1 (or -q1, the same rotation) at 1; values outside
    extrapolate along the same great circle. Shapes broadcast: (..., 4) and (...).
    """
    q0 = quat_normalize(q0)
    q1 = quat_normalize(q1)
    u = np.asarray(u, dtype=float)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)  # shortest path: same hemisphere
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-9
    safe = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1.0 - u, np.sin((1.0 - u) * theta) / safe)
    w1 = np.where(near, u, np.sin(u * theta) / safe)
    return quat_normalize(w0 * q0 + w1 * q1)


def rotation_angle(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Angle in radians of the relative rotation between (..., 3, 3) rotations."""
    R_rel = np.swapaxes(np.asarray(R_a, dtype=float), -1, -2) @ np.asarray(R_b, dtype=float)
    cos = (np.trace(R_rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def quat_angle(q_a: np.ndarray, q_b: np.ndarray) -> np.ndarray:
    """Angle in radians between rotations given as (..., 4) wxyz quaternions."""
    d = np.abs(np.sum(quat_normalize(q_a) * quat_normalize(q_b), axis=-1))
    return 2.0 * np.arccos(np.clip(d, -1.0, 1.0))


def rotation_to_6d(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> 6-D vectors (..., 6): first column, then second."""
    R = np.asarray(R, dtype=float)
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def rotation_from_6d(v: np.ndarray) -> np.ndarray:
    """6-D vectors (..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt.

    The first column is the normalised first 3-vector; the second is the second
    3-vector made orthogonal to it; the third is their cross product.
    """
    v = np.asarray(v, dtype=float)
    a, b = v[..., :3], v[..., 3:6]
    c0 = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), _EPS)
    b = b - np.sum(c0 * b, axis=-1, keepdims=True) * c0
    c1 = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), _EPS)
    c2 = np.cross(c0, c1)
    return np.stack([c0, c1, c2], axis=-1)


def pose_to_transform(pose: np.ndarray) -> np.ndarray:
    """Pose vectors (..., 7) ``(x, y, z, qw, qx, qy, qz)`` -> 4x4 transforms (..., 4, 4)."""
    pose = np.asarray(pose, dtype=float)
    return make_transform(quat_to_matrix(pose[..., 3:7]), pose[..., :3])


def transform_to_pose(T: np.ndarray) -> np.ndarray:
    """4x4 transforms (..., 4, 4) -> pose vectors (..., 7) with qw >= 0."""
    T = np.asarray(T, dtype=float)
    return np.concatenate([T[..., :3, 3], matrix_to_quat(T[..., :3, :3])], axis=-1)


def interpolate_pose(pose0: np.ndarray, pose1: np.ndarray, u: np.ndarray | float) -> np.ndarray:
    """Interpolate pose vectors (..., 7): linear in position, slerp in rotation.

    ``u`` = 0 gives pose0 and 1 gives pose1; outside [0, 1] extrapolates.
    """
    pose0 = np.asarray(pose0, dtype=float)
    pose1 = np.asarray(pose1, dtype=float)
    uu = np.asarray(u, dtype=float)
    position = pose0[..., :3] + (pose1[..., :3] - pose0[..., :3]) * uu[..., None]
    return np.concatenate([position, slerp(pose0[..., 3:7], pose1[..., 3:7], uu)], axis=-1)
