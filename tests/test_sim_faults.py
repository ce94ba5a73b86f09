"""The simulated rig breaks the ways a real one does (drivers/sim/faults.py; docs/rig-config.md, "Simulated faults")."""

from __future__ import annotations

import numpy as np
import pytest

from capture_app.core.errors import ConfigError
from capture_app.core.geometry import invert_transform, pose_to_transform, quat_to_matrix, rotation_angle
from capture_app.rig.config import DriverConfig
from drivers.registry import create_driver
from drivers.sim.faults import latency_ns
from drivers.sim.motion import MotionModel, true_rig_geometry

T_S = np.linspace(0.0, 4.0, 41)


def _driver(stream: str, kind: str, **options):
    return create_driver(DriverConfig(stream, kind, stream, 100, options=options), "inproc://sim-faults")


def _poses(driver) -> np.ndarray:
    return np.array([pose_to_transform(s.arrays["pose"]) for s in driver.make_samples(T_S, np.zeros(len(T_S), bool))])


def test_a_camera_mount_slip_moves_the_head_tracker_by_the_slip_from_its_instant():
    X = true_rig_geometry()["T_headtracker_cam"]
    slipped = _poses(_driver("head_tracker", "sim_tracker", mount_slip_deg=[0.0, 2.0, 0.0], mount_slip_at_s=2.0))
    truth = MotionModel(0).T_world_cam(T_S)
    cam_old = slipped @ X  # the camera through the calibration made before the slip
    error_deg = np.degrees(rotation_angle(cam_old[:, :3, :3], truth[:, :3, :3]))
    assert np.all(error_deg[T_S < 2.0] < 1e-4)
    assert np.allclose(error_deg[T_S >= 2.0], 2.0, atol=1e-4)
    delta = np.eye(4)
    delta[:3, :3] = quat_to_matrix(np.array([np.cos(np.radians(1.0)), 0.0, np.sin(np.radians(1.0)), 0.0]))
    corrected = slipped[T_S >= 2.0] @ (X @ delta)  # the corrected calibration puts the camera back
    assert np.allclose(corrected, truth[T_S >= 2.0], atol=1e-9)


def test_a_wrist_slip_changes_the_rotation_between_the_glove_imu_and_the_tracker():
    tracker = _poses(_driver("left_wrist_tracker", "sim_tracker", mount_slip_deg=[3.0, 0.0, 0.0], mount_slip_at_s=1.0))
    glove = _driver("left_glove", "sim_glove").make_samples(T_S, np.zeros(len(T_S), bool))
    imu = np.array([quat_to_matrix(s.arrays["wrist_quat"]) for s in glove])
    offset = np.einsum("nji,njk->nik", tracker[:, :3, :3], imu)  # R_tracker^T R_imu
    change = np.degrees(rotation_angle(offset, offset[:1]))
    assert np.all(change[T_S < 1.0] < 1e-4) and np.allclose(change[T_S >= 1.0], 3.0, atol=1e-4)


def test_swapped_gloves_and_tracker_roles_carry_the_other_side():
    model = MotionModel(0)
    swapped = _driver("left_glove", "sim_glove", hand="right").make_samples(T_S[:3], np.zeros(3, bool))
    assert np.allclose(swapped[0].arrays["keypoints"], model.keypoints(T_S[0], "right"), atol=1e-6)
    tracker = _poses(_driver("left_wrist_tracker", "sim_tracker", worn_on="right_wrist"))
    T_wt_right = true_rig_geometry()["T_wristtracker_wrist_right"]
    assert np.allclose(tracker @ T_wt_right, model.T_world_wrist(T_S, "right"), atol=1e-9)


def test_a_latency_change_applies_from_its_instant():
    class O:
        latency_ms, latency_change_ms, latency_change_at_s = 40.0, 20.0, 10.0
    assert latency_ns(O, np.array([9.9, 10.0, 11.0])).tolist() == [40_000_000, 60_000_000, 60_000_000]


@pytest.mark.parametrize("options, fragment", [
    ({"mount_slip_deg": [1, 2]}, "mount_slip_deg"), ({"mount_slip_deg": "x"}, "mount_slip_deg"),
    ({"worn_on": "elbow"}, "worn_on"), ({"hand": "middle"}, "hand"), ({"latency_change_ms": 5000}, "latency_change_ms"),
    ({"mount_slip_at_s": -1}, "mount_slip_at_s"), ({"head_motion": "dance"}, "head_motion"),
])
def test_bad_fault_options_are_refused_naming_them(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        _driver("left_wrist_tracker", "sim_tracker", **options)


def test_the_ego_scene_is_textured_in_the_world():
    """Features that move with the world: a rotated camera sees the table texture shifted, not the same image."""
    from drivers.sim.calibration import EGO_INTRINSICS_720P
    from drivers.sim.render import SceneRenderer
    model = MotionModel(0)
    renderer = SceneRenderer(EGO_INTRINSICS_720P.scaled(320, 180), model)
    image = renderer.render(0.0, model.T_world_cam(0.0)).astype(float)
    centre = image[60:120, 110:210].mean(axis=2)
    assert centre.std() > 15  # contrast on the table top
