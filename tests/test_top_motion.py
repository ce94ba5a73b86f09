"""The top camera's latency from motion (capture_app/core/top_motion.py): the lag estimator on synthetic image
tracks with a known lag (noise, missing and repeated frames, outliers, too little motion), the image side (table
plane, hand centroids, projection) on synthetic depth, and the whole chain on the simulated rig's rendered top
camera frames of the rig check's ``hands_on_table`` step (generated offline: no rig, no bus)."""

from __future__ import annotations

import numpy as np
import pytest

from capture_app.core import top_motion
from capture_app.core.geometry import make_transform, rot_x, rot_y

SLIDES = {"left": (0.8, np.array([-0.2, 0.06])), "right": (0.65, np.array([0.18, 0.06]))}  # Hz, image centre


def _predicted(t: np.ndarray, hand: str) -> np.ndarray:
    """A wrist's image track (normalised): sliding +-0.06 (5 cm at 0.8 m) left-right, a little up-down."""
    hz, centre = SLIDES[hand]
    return centre + np.stack([0.06 * np.sin(2 * np.pi * hz * t), 0.01 * np.sin(2 * np.pi * 0.3 * t)], -1)


def _channels(lag_ms: float, seed: int = 0, noise: float = 0.0, lose: float = 0.0, repeat: float = 0.0,
              outliers: float = 0.0, scale: float = 1.0):
    """Per hand: the tracker-rate prediction (250 Hz, 0..6 s) and 30 Hz frames over 1..5 s stamped ``lag_ms``
    late, their centroid a constant offset from the wrist, with Gaussian ``noise`` (normalised), a fraction
    ``lose`` not seen (NaN), ``repeat`` repeated (the previous position under the new stamp) and ``outliers``
    misdetected (off by 0.05)."""
    rng = np.random.default_rng(seed)
    t_pred = np.arange(0.0, 6.0, 1 / 250) + rng.uniform(-2e-4, 2e-4, 1500)
    t_true = np.arange(30, 150) / 30 + rng.uniform(-1e-3, 1e-3, 120)
    channels = []
    for hand in ("left", "right"):
        observed = (_predicted(t_true, hand) - SLIDES[hand][1]) * scale + SLIDES[hand][1] + [0.004, -0.07]
        observed = observed + rng.normal(0, noise, observed.shape)
        bad = rng.uniform(size=len(t_true)) < outliers
        observed[bad] += 0.05
        again = np.flatnonzero(rng.uniform(size=len(t_true)) < repeat)
        observed[again[again > 0]] = observed[again[again > 0] - 1]
        observed[rng.uniform(size=len(t_true)) < lose] = np.nan
        predicted = (_predicted(t_pred, hand) - SLIDES[hand][1]) * scale + SLIDES[hand][1]
        channels.append((t_pred, predicted, t_true + lag_ms / 1e3, observed))
    return channels


@pytest.mark.parametrize("lag_ms", [0.0, 40.0, -20.0])
def test_a_known_lag_is_found_within_2_ms(lag_ms):
    estimate = top_motion.estimate_image_lag(_channels(lag_ms))
    assert estimate is not None and abs(estimate.lag_ms - lag_ms) < 2.0, estimate
    assert 2 * 110 <= estimate.intervals <= 2 * 114  # from each frame to the one 0.2 s (6 frames) later
    assert estimate.rms_per_s < 0.01  # noise-free: the velocities agree at the lag


@pytest.mark.parametrize("lag_ms", [0.0, 40.0, -20.0])
def test_noise_missing_and_repeated_frames_and_outliers(lag_ms):
    for seed in range(3):
        # centroid noise ~1 mm at 0.8 m, a third of the frames not seen, 2 % repeated, 1 % misdetected
        estimate = top_motion.estimate_image_lag(_channels(lag_ms, seed, noise=0.0012, lose=0.3, repeat=0.02,
                                                           outliers=0.01))
        assert estimate is not None and abs(estimate.lag_ms - lag_ms) < 2.0, (seed, estimate)


def test_a_long_gap_in_the_frames_and_one_hand_unseen():
    channels = _channels(40.0, seed=4)
    t_pred, predicted, t_obs, observed = channels[0]
    observed = observed.copy()
    observed[(t_obs > 2.0) & (t_obs < 2.6)] = np.nan  # 0.6 s of frames lost (or refused by the writer)
    right = channels[1][:3] + (np.full_like(channels[1][3], np.nan),)  # the right hand never seen
    estimate = top_motion.estimate_image_lag([(t_pred, predicted, t_obs, observed), right])
    assert estimate is not None and abs(estimate.lag_ms - 40.0) < 2.0 and estimate.intervals < 100


def test_too_little_motion_or_too_few_frames_is_not_measurable():
    still = top_motion.estimate_image_lag(_channels(40.0, noise=0.0002, scale=0.02))  # hands all but still
    assert still is None
    few = [(t, p, o_t[:14], o[:14]) for t, p, o_t, o in _channels(40.0)]  # 2 x 8 intervals (0.2 s each)
    assert top_motion.estimate_image_lag(few) is None
    assert top_motion.estimate_image_lag([]) is None
    # the hands move in the image but the wrist trackers report one pose (stuck, or a one-pose publisher):
    # every lag costs the same, and the scan's edge must not come out as a lag
    stuck = [(t, np.repeat(p[:1], len(p), axis=0), o_t, o) for t, p, o_t, o in _channels(40.0)]
    assert top_motion.estimate_image_lag(stuck) is None


def _view(width=160, height=120) -> top_motion.TopView:
    # 0.8 m over the table, looking down (+z world down), image +y toward the operator, slightly tilted
    T_world_topcam = make_transform(rot_x(np.pi / 2) @ rot_y(0.03), [0.0, 1.55, -0.45])
    return top_motion.TopView(153.75, 153.75, 80.0, 60.0, width, height, T_world_topcam)


def _table_depth(view: top_motion.TopView, table_y: float = 0.75) -> np.ndarray:
    """Depth (m) of the horizontal plane y = table_y seen by ``view``."""
    x, y = view.rays()
    R, p = view.T_world_topcam[:3, :3], view.T_world_topcam[:3, 3]
    ray_world_y = R[1, 0] * x + R[1, 1] * y + R[1, 2]
    return (table_y - p[1]) / ray_world_y


def test_table_plane_hand_centroids_and_projection():
    view = _view()
    depth = _table_depth(view)
    # a 6 x 6 cm block 3 cm high standing on the table: its top face, where the world point (0.1, 0.78, -0.4) is
    centre = view.project(np.array([0.1, 0.78, -0.4]))
    x, y = view.rays()
    block = (np.abs(x - centre[0]) < 0.03 / 0.77) & (np.abs(y - centre[1]) < 0.03 / 0.77)
    depth[block] = depth[block] - 0.03
    depth[:3] = 0.0  # rows without depth
    normal, d = top_motion.table_plane(view, depth)
    up_cam = view.T_world_topcam[:3, :3].T @ np.array([0.0, 1.0, 0.0])
    assert np.degrees(np.arccos(normal @ up_cam)) < 0.2 and abs(d - (up_cam @ (np.linalg.inv(
        view.T_world_topcam) @ [0, 0.75, -0.45, 1])[:3])) < 2e-3
    far = view.project(np.array([-0.15, 0.75, -0.45]))
    circles = [(centre + [0.02, 0.0], 0.15), (far, 0.1)]
    seen = top_motion.hand_centroids(view, depth, (normal, d), circles)
    assert np.linalg.norm(seen[0] - centre) < 0.01 and np.all(np.isnan(seen[1]))  # nothing above the table there
    # projection: the camera's own axis point maps to the principal point; a known pixel
    axis_point = view.T_world_topcam @ [0.0, 0.0, 0.8, 1.0]
    assert np.allclose(view.project(axis_point[:3]), 0.0, atol=1e-12)
    off_axis = view.T_world_topcam @ [0.08, -0.04, 0.8, 1.0]
    assert np.allclose(view.project(off_axis[:3]), [0.1, -0.05])
    circles = top_motion.hand_circles([np.array([[-0.2, 0.0], [-0.22, 0.0]]), np.array([[0.2, 0.0]])])
    assert circles[0][1] == pytest.approx(0.5 * 0.41) and circles[1][1] == pytest.approx(0.205)
    unseen = top_motion.hand_circles([np.full((3, 2), np.nan), np.array([[0.2, 0.0]])])  # a wrist behind the camera
    assert np.all(np.isnan(unseen[0][0])) and unseen[1][1] == top_motion.MAX_RADIUS


@pytest.mark.parametrize("extra_ms", [0.0, 40.0])
def test_the_simulated_hands_on_the_table_give_the_top_cameras_latency(extra_ms):
    """The sim's top camera frames (160 x 120 depth, rendered as `capture-app check` records them, frames stamped
    ``extra_ms`` late) against its wrist trackers, as the rig check analyses them."""
    from capture_app.core.geometry import pose_to_transform
    from capture_app.rig.config import DriverConfig
    from drivers.registry import create_driver
    from drivers.sim.calibration import TOP_INTRINSICS_480P
    from drivers.sim.faults import latency_ns
    from drivers.sim.motion import true_rig_geometry

    script = {"head_motion": "check", "hand_motion": "check"}
    top = create_driver(DriverConfig("top_camera", "sim_top_camera", "top_camera", 30, options={
        **script, "width": 160, "height": 120, "latency_change_ms": extra_ms}), "inproc://top-motion-test")
    t_true = np.arange(25 * 30, 30 * 30) / 30
    frames = top.make_samples(t_true, np.zeros(len(t_true), bool))
    stamps = t_true + latency_ns(top.options, t_true) / 1e9
    k = TOP_INTRINSICS_480P.scaled(160, 120)
    geometry = true_rig_geometry()
    view = top_motion.TopView(k.fx, k.fy, k.cx, k.cy, 160, 120, geometry["T_world_topcam"])
    rows = np.flatnonzero((stamps >= 25.5) & (stamps <= 29.5))
    depth = [frames[i].arrays["depth"] * 0.001 for i in rows]
    t_pred, predicted = np.arange(24.5 * 250, 30 * 250) / 250, []
    for hand in ("left", "right"):
        tracker = create_driver(DriverConfig(f"{hand}_wrist_tracker", "sim_tracker", f"{hand}_wrist_tracker", 250,
                                             options=script), "inproc://top-motion-test")
        poses = np.array([s.arrays["pose"] for s in tracker.make_samples(t_pred, np.zeros(len(t_pred), bool))])
        wrists = top_motion.wrist_points(pose_to_transform(poses), geometry[f"T_wristtracker_wrist_{hand}"])
        predicted.append(view.project(wrists))
    plane = top_motion.table_plane(view, depth[0])
    circles = top_motion.hand_circles([p[(t_pred >= 25.5) & (t_pred <= 29.5)] for p in predicted])
    seen = np.array([top_motion.hand_centroids(view, d, plane, circles) for d in depth])
    assert np.isfinite(seen).all()  # both hands seen in every frame
    estimate = top_motion.estimate_image_lag([(t_pred, p, stamps[rows], seen[:, i]) for i, p in enumerate(predicted)])
    assert estimate is not None and abs(estimate.lag_ms - extra_ms) < 3.0, estimate
