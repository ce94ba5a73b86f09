"""The unified action space on hand-computed configurations (capture-system.md, appendix A)."""

from __future__ import annotations

import numpy as np

from capture_app.core.action_space import ACTION_DIM, ACTION_NAMES, camera_from_wrist, fingertip_state, unified_action, wrist_state
from capture_app.core.geometry import make_transform, rot_x, rot_y, rot_z
from capture_app.core.hand import FINGERTIP_INDICES, KEYPOINT_NAMES, NUM_KEYPOINTS


def test_keypoint_order_is_the_documented_one():
    assert NUM_KEYPOINTS == 25
    assert KEYPOINT_NAMES[:5] == ("wrist", "thumb_metacarpal", "thumb_proximal", "thumb_intermediate", "thumb_tip")
    assert FINGERTIP_INDICES == (4, 9, 14, 19, 24)
    assert "thumb_distal" not in KEYPOINT_NAMES
    assert len(ACTION_NAMES) == ACTION_DIM == 48


def test_head_and_wrist_configuration_gives_hand_computed_values():
    # World: y up. The camera looks straight down from 1 m above the origin: its +x is
    # world +x, its +y (image down) is world +z, its +z (optical axis) is world -y.
    R_world_cam = np.column_stack([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    assert np.isclose(np.linalg.det(R_world_cam), 1.0)
    T_world_cam = make_transform(R_world_cam, [0.0, 1.0, 0.0])
    # The head tracker sits 10 cm above the camera, rotated 90 degrees about its z.
    T_headtracker_cam = make_transform(rot_z(np.pi / 2), [0.0, 0.0, -0.1])
    T_world_headtracker = T_world_cam @ np.linalg.inv(T_headtracker_cam)
    # The left wrist frame is at (0.2, 0.5, -0.3) in the world, axes aligned with the world.
    T_world_wrist = make_transform(np.eye(3), [0.2, 0.5, -0.3])
    T_wristtracker_wrist = make_transform(rot_x(0.3), [0.0, 0.04, 0.0])
    T_world_wristtracker = T_world_wrist @ np.linalg.inv(T_wristtracker_wrist)

    T_cam_wrist = camera_from_wrist(T_world_headtracker, T_headtracker_cam, T_world_wristtracker, T_wristtracker_wrist)

    # By hand: p_cam = R_world_cam^T (p_world - c) = R^T (0.2, -0.5, -0.3)
    #        = (x: 0.2, y: -0.3 [world z], z: 0.5 [world -y])
    np.testing.assert_allclose(T_cam_wrist[:3, 3], [0.2, -0.3, 0.5], atol=1e-12)
    np.testing.assert_allclose(T_cam_wrist[:3, :3], R_world_cam.T, atol=1e-12)

    state = wrist_state(T_cam_wrist, np.eye(4))
    assert state.shape == (18,)
    np.testing.assert_allclose(state[:3], [0.2, -0.3, 0.5], atol=1e-12)
    # 6-D: first two columns of R_cam_wrist = R_world_cam^T: col0 = (1,0,0), col1 = (0,0,-1)
    np.testing.assert_allclose(state[3:9], [1, 0, 0, 0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(state[9:18], [0, 0, 0, 1, 0, 0, 0, 1, 0], atol=1e-12)


def test_fingertip_state_takes_the_five_tips_of_each_hand_in_order():
    left = np.arange(75, dtype=float).reshape(25, 3)
    right = -left
    tips = fingertip_state(left, right)
    assert tips.shape == (30,)
    np.testing.assert_array_equal(tips[:3], left[4])      # left thumb tip
    np.testing.assert_array_equal(tips[12:15], left[24])  # left pinky tip
    np.testing.assert_array_equal(tips[15:18], right[4])  # right thumb tip
    action = unified_action(np.eye(4), np.eye(4), left, right)
    assert action.shape == (48,)
    np.testing.assert_array_equal(action[18:], tips)


def test_wrist_conventions_of_the_simulated_hands_are_right_handed_and_as_documented():
    from drivers.sim.motion import R_WORLD_LEFT_WRIST_REST as L, R_WORLD_RIGHT_WRIST_REST as R
    forward, up = np.array([0, 0, -1.0]), np.array([0, 1.0, 0])
    for M in (L, R):
        assert np.isclose(np.linalg.det(M), 1.0)
        np.testing.assert_allclose(M[:, 1], up)  # +y palm -> back, palm facing down
    np.testing.assert_allclose(L[:, 0], forward)   # left +x toward the fingertips
    np.testing.assert_allclose(R[:, 0], -forward)  # right +x along the forearm, toward the elbow
    # +z from little finger to thumb: the left thumb is to the right (+x world), the right thumb to the left
    np.testing.assert_allclose(L[:, 2], [1, 0, 0])
    np.testing.assert_allclose(R[:, 2], [-1, 0, 0])


def test_batched_camera_from_wrist_matches_per_element():
    rng = np.random.default_rng(0)
    Ts = [make_transform(rot_x(a) @ rot_y(b), rng.normal(size=3)) for a, b in rng.normal(size=(4, 2))]
    batch = camera_from_wrist(np.stack([Ts[0]] * 3), Ts[1], np.stack([Ts[2]] * 3), Ts[3])
    single = camera_from_wrist(*Ts)
    np.testing.assert_allclose(batch, np.stack([single] * 3), atol=1e-12)
