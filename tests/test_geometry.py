"""Pure math: transforms, quaternions, slerp, the 6-D rotation, cross-checked against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from capture_app.core import geometry as g

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
vec3 = arrays(np.float64, 3, elements=finite)
quat_raw = arrays(np.float64, 4, elements=st.floats(-1, 1, allow_nan=False)).filter(lambda q: np.linalg.norm(q) > 0.1)


def _rotation(q):
    return g.quat_to_matrix(g.quat_normalize(q))


@given(quat_raw)
def test_quaternion_matrix_round_trip_and_matches_scipy(q):
    q = g.quat_normalize(q)
    R = g.quat_to_matrix(q)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R, Rotation.from_quat(q, scalar_first=True).as_matrix(), atol=1e-9)
    back = g.matrix_to_quat(R)
    assert back[0] >= 0
    np.testing.assert_allclose(np.abs(back @ q), 1.0, atol=1e-9)  # same rotation (q or -q)


@given(quat_raw, vec3, quat_raw, vec3)
def test_transform_inverse_and_composition(qa, ta, qb, tb):
    A = g.make_transform(_rotation(qa), ta)
    B = g.make_transform(_rotation(qb), tb)
    np.testing.assert_allclose(g.invert_transform(A) @ A, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(g.invert_transform(A @ B), g.invert_transform(B) @ g.invert_transform(A), atol=1e-9)
    p = np.array([[0.3, -0.2, 1.5]])
    np.testing.assert_allclose(g.transform_points(A @ B, p), g.transform_points(A, g.transform_points(B, p)), atol=1e-9)


@given(quat_raw, vec3)
def test_pose_vector_round_trip(q, t):
    T = g.make_transform(_rotation(q), t)
    np.testing.assert_allclose(g.pose_to_transform(g.transform_to_pose(T)), T, atol=1e-9)


@given(quat_raw)
def test_6d_round_trip(q):
    R = _rotation(q)
    v = g.rotation_to_6d(R)
    np.testing.assert_allclose(v, np.concatenate([R[:, 0], R[:, 1]]))
    np.testing.assert_allclose(g.rotation_from_6d(v), R, atol=1e-9)


@given(quat_raw, arrays(np.float64, 6, elements=st.floats(-0.05, 0.05)))
def test_6d_gram_schmidt_gives_a_rotation_from_noisy_input(q, noise):
    R = g.rotation_from_6d(g.rotation_to_6d(_rotation(q)) + noise)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0)


@given(quat_raw, quat_raw)
def test_slerp_endpoints_and_shortest_path(qa, qb):
    qa, qb = g.quat_normalize(qa), g.quat_normalize(qb)
    assert abs(g.slerp(qa, qb, 0.0) @ qa) == pytest.approx(1.0, abs=1e-9)
    assert abs(g.slerp(qa, qb, 1.0) @ qb) == pytest.approx(1.0, abs=1e-9)
    # hemisphere: interpolating towards -qb (the same rotation) gives the same path, except at
    # exactly 180 degrees apart (dot = 0) where two arcs are equally short
    if abs(qa @ qb) > 1e-6:
        np.testing.assert_allclose(g.quat_to_matrix(g.slerp(qa, qb, 0.3)), g.quat_to_matrix(g.slerp(qa, -qb, 0.3)),
                                   atol=1e-9)
    # the midpoint is halfway along the shortest arc
    total = g.quat_angle(qa, qb)
    assert g.quat_angle(qa, g.slerp(qa, qb, 0.5)) == pytest.approx(total / 2, abs=1e-6)
    assert total <= np.pi + 1e-9


@settings(max_examples=50)
@given(quat_raw, quat_raw, st.floats(0, 1))
def test_slerp_matches_scipy(qa, qb, u):
    from scipy.spatial.transform import Slerp
    qa, qb = g.quat_normalize(qa), g.quat_normalize(qb)
    expected = Slerp([0, 1], Rotation.from_quat(np.stack([qa, qb]), scalar_first=True))(u).as_matrix()
    np.testing.assert_allclose(g.quat_to_matrix(g.slerp(qa, qb, u)), expected, atol=1e-7)


def test_slerp_of_identical_quaternions_is_stable():
    q = g.quat_normalize(np.array([0.3, 0.1, -0.5, 0.8]))
    np.testing.assert_allclose(g.slerp(q, q, 0.37), q, atol=1e-12)


def test_axis_angle_matches_elementary_rotations():
    for axis, fn in ((0, g.rot_x), (1, g.rot_y), (2, g.rot_z)):
        v = np.zeros(3)
        v[axis] = 0.7
        np.testing.assert_allclose(g.axis_angle_to_matrix(v), fn(0.7), atol=1e-12)
    np.testing.assert_allclose(g.axis_angle_to_matrix(np.zeros(3)), np.eye(3))


def test_interpolate_pose_is_linear_in_position_and_batches():
    a = np.array([0, 0, 0, 1, 0, 0, 0.0])
    b = np.concatenate([[1.0, 2.0, -1.0], g.matrix_to_quat(g.rot_z(np.pi / 2))])
    mid = g.interpolate_pose(a, b, 0.5)
    np.testing.assert_allclose(mid[:3], [0.5, 1.0, -0.5])
    np.testing.assert_allclose(g.quat_to_matrix(mid[3:]), g.rot_z(np.pi / 4), atol=1e-12)
    batch = g.interpolate_pose(np.stack([a, a]), np.stack([b, b]), np.array([0.0, 1.0]))
    np.testing.assert_allclose(batch[0], a, atol=1e-12)
    np.testing.assert_allclose(batch[1], b, atol=1e-12)


def test_matrix_to_quat_handles_every_branch():
    for R in (np.eye(3), g.rot_x(np.pi), g.rot_y(np.pi), g.rot_z(np.pi), g.rot_x(3.0) @ g.rot_y(2.9)):
        np.testing.assert_allclose(g.quat_to_matrix(g.matrix_to_quat(R)), R, atol=1e-9)
