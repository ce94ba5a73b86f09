"""The pure drift estimators (capture_app/core): mount slip, hand-eye rotation, latency lag, visual rotation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture_app.core import hand_eye_rotation
from capture_app.core.latency_drift import MIN_SPEED_STD_RAD_S, estimate_lag
from capture_app.core.mount_slip import SlipDetector
from capture_app.core.rotation_series import angular_speed, exp_rotvec, relative, resample, rotvec
from drivers.sim.motion import MotionModel, true_rig_geometry

X = true_rig_geometry()["T_headtracker_cam"][:3, :3]
rotvecs = st.lists(st.floats(-2.5, 2.5), min_size=3, max_size=3).map(np.array)


def _head(seed: int, t: np.ndarray) -> np.ndarray:
    return MotionModel(seed).T_world_cam(t)[:, :3, :3]


def _feed(detector: SlipDetector, t: np.ndarray, R_ref: np.ndarray, R_obs: np.ndarray, chunk: int = 7):
    slips = []
    for i in range(0, len(t), chunk):
        slips += detector.add(t[i:i + chunk], R_ref[i:i + chunk], R_obs[i:i + chunk])
    return slips


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 50), slip=rotvecs.filter(lambda v: np.linalg.norm(v) > 0.1), world=rotvecs, at=st.floats(8.0, 14.0))
def test_a_slip_is_found_with_its_size_whatever_the_world_frames(seed, slip, world, at):
    """R_obs = W R_ref M: the step of M is found, whatever W (the IMU's or the camera's own world)."""
    slip = slip / max(np.linalg.norm(slip), 1e-9) * np.radians(2.0 + np.linalg.norm(slip) / 2.5)
    t = np.arange(0.0, 22.0, 0.1)
    R_cam = _head(seed, t)
    delta = exp_rotvec(slip)
    M = np.where((t >= at)[:, None, None], X @ delta, X)
    R_ref = R_cam @ np.swapaxes(M, -1, -2)  # the tracker: R_cam = R_ref M
    R_obs = exp_rotvec(world) @ R_cam
    noise = exp_rotvec(np.random.default_rng(seed).normal(0, np.radians(0.01), (len(t), 3)))
    slips = _feed(SlipDetector(X), t, R_ref, R_obs @ noise)
    assert len(slips) == 1
    s = slips[0]
    assert abs(s.at_s - at) <= 0.11 and s.detected_s - at <= 5.0
    assert np.degrees(np.linalg.norm(rotvec(s.delta.T @ delta))) < 0.1


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 50), world=rotvecs)
def test_no_slip_no_alarm_under_noise_and_a_small_calibration_error(seed, world):
    t = np.arange(0.0, 30.0, 0.1)
    R_cam = _head(seed, t)
    R_ref = R_cam @ X.T
    noise = exp_rotvec(np.random.default_rng(seed).normal(0, np.radians(0.03), (len(t), 3)))
    calibrated = X @ exp_rotvec(np.radians([0.5, -0.3, 0.4]))  # a slightly wrong calibration
    detector = SlipDetector(calibrated)
    assert _feed(detector, t, R_ref, exp_rotvec(world) @ R_cam @ noise) == []
    assert detector.slips == []


def test_a_gap_restarts_the_track_instead_of_inventing_a_step():
    t = np.concatenate([np.arange(0.0, 10.0, 0.1), np.arange(12.0, 20.0, 0.1)])
    R_cam = _head(1, t)
    R_ref = R_cam @ X.T
    R_obs = R_cam.copy()
    R_obs[t >= 12.0] = exp_rotvec(np.radians([0.0, 5.0, 0.0])) @ R_obs[t >= 12.0]  # a new world after the gap
    assert _feed(SlipDetector(X), t, R_ref, R_obs) == []


def test_bad_detector_settings_are_refused():
    with pytest.raises(ValueError, match="threshold_deg"):
        SlipDetector(X, threshold_deg=0)


@settings(max_examples=10, deadline=None)
@given(mount=rotvecs, seed=st.integers(0, 50))
def test_hand_eye_recovers_the_mount_and_its_residual_is_zero(mount, seed):
    Xm = exp_rotvec(mount)
    t = np.arange(0.0, 20.0, 0.5)
    R_ref = MotionModel(seed, head_motion="survey").T_world_cam(t)[:, :3, :3]
    R_obs = R_ref @ Xm
    A, B = relative(R_obs), relative(R_ref)
    solved, _ = hand_eye_rotation.solve(A, B)
    assert np.allclose(solved, Xm, atol=1e-6)
    assert np.all(hand_eye_rotation.residual_deg(A, B, Xm) < 1e-4)
    wrong = Xm @ exp_rotvec(np.radians([0.0, 0.0, 3.0]))
    assert hand_eye_rotation.residual_deg(A, B, wrong).max() > 0.05


def test_hand_eye_without_rotation_says_what_motion_is_missing():
    still = np.repeat(np.eye(3)[None], 10, axis=0)
    with pytest.raises(ValueError, match="turn the head"):
        hand_eye_rotation.solve(still, still)


@pytest.mark.parametrize("true_lag_ms", [-12.0, 0.0, 20.0, 45.0])
def test_the_lag_of_a_stream_is_estimated_from_angular_speeds(true_lag_ms):
    model = MotionModel(2)
    t_ref = np.arange(0.0, 20.0, 0.004)
    R_ref = model.T_world_cam(t_ref)[:, :3, :3]
    t_obs = np.arange(0.2, 19.8, 1 / 30) + true_lag_ms / 1e3
    R_obs = model.T_world_cam(t_obs - true_lag_ms / 1e3)[:, :3, :3]
    _, speed = angular_speed(t_obs, R_obs)
    estimate = estimate_lag(t_ref, R_ref, t_obs, speed)
    assert estimate is not None and abs(estimate.lag_ms - true_lag_ms) < 1.0


def test_no_lag_estimate_without_motion():
    t = np.arange(0.0, 10.0, 0.01)
    still = np.repeat(np.eye(3)[None], len(t), axis=0)
    assert estimate_lag(t, still, t[5:-5], np.zeros(len(t) - 11)) is None
    with pytest.raises(ValueError, match="one more"):
        estimate_lag(t, still, t[5:-5], np.zeros(len(t) - 10))


def test_no_lag_estimate_when_only_the_observed_stream_moves():
    """A reference that stands still (a stuck tracker, or a publisher sending one pose) against a turning glove:
    every lag costs the same; the estimate must be None, not the scan's edge (-100 ms: a false latency alarm)."""
    model = MotionModel(2)
    t_ref = np.arange(0.0, 20.0, 0.004)
    still = np.repeat(np.eye(3)[None], len(t_ref), axis=0)
    t_obs = np.arange(0.2, 19.8, 1 / 30)
    _, speed = angular_speed(t_obs, model.T_world_cam(t_obs)[:, :3, :3])
    assert np.std(speed) > MIN_SPEED_STD_RAD_S  # the observed stream does turn (enough for an estimate)
    assert estimate_lag(t_ref, still, t_obs, speed) is None


def test_resample_and_speed_of_a_constant_turn():
    t = np.linspace(0.0, 1.0, 11)
    R = exp_rotvec(np.outer(t, [0.0, 0.0, 0.5]))
    middle = resample(t, R, np.array([0.55]))
    assert np.allclose(rotvec(middle), [[0.0, 0.0, 0.275]])
    _, speed = angular_speed(t, R)
    assert np.allclose(speed, 0.5)


def test_visual_rotation_of_the_sim_scene_matches_the_truth():
    from capture_app.core.visual_rotation import prepare, relative_rotation, scaled_K
    from drivers.sim.calibration import EGO_INTRINSICS_720P
    from drivers.sim.render import SceneRenderer
    model = MotionModel(0)
    intrinsics = EGO_INTRINSICS_720P.scaled(640, 360)
    renderer = SceneRenderer(intrinsics, model)
    errors = []
    for t in (1.0, 3.0, 5.0):
        T1, T2 = model.T_world_cam(t), model.T_world_cam(t + 0.1)
        g1, scale = prepare(renderer.render(t, T1))
        g2, _ = prepare(renderer.render(t + 0.1, T2))
        truth = T1[:3, :3].T @ T2[:3, :3]
        plain = relative_rotation(g1, g2, scaled_K(intrinsics.K, scale))
        known_t = relative_rotation(g1, g2, scaled_K(intrinsics.K, scale), translation=(np.linalg.inv(T2) @ T1)[:3, 3])
        assert plain is not None and known_t is not None and known_t.inliers > 50
        errors.append(np.degrees(np.linalg.norm(rotvec(truth.T @ known_t.A))))
        assert np.degrees(np.linalg.norm(rotvec(truth.T @ plain.A))) < 0.5
    assert max(errors) < 0.05
    blank = np.zeros((360, 640), np.uint8)
    assert relative_rotation(blank, blank, intrinsics.K) is None


@pytest.mark.parametrize("at", [20.0, 20.15, 40.1])
def test_a_slip_at_the_tracks_new_origin_is_found_whole(at):
    """The track's origin moves every REORIGIN_S (20 s); a slip at that instant is still one step of its size."""
    t = np.arange(0.0, at + 6.0, 0.1)
    R_cam = _head(3, t)
    delta = exp_rotvec(np.radians([0.0, 2.0, 0.0]))
    M = np.where((t >= at)[:, None, None], X @ delta, X)
    noise = exp_rotvec(np.random.default_rng(1).normal(0, np.radians(0.01), (len(t), 3)))
    slips = _feed(SlipDetector(X), t, R_cam @ np.swapaxes(M, -1, -2), R_cam @ noise)
    assert len(slips) == 1 and abs(slips[0].size_deg - 2.0) < 0.1, slips
