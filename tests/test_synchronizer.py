"""The synchronizer on synthetic streams with exact stamps: accuracy, drop-outs, tracking loss, images."""

from __future__ import annotations

import numpy as np
import pytest

from capture_app.bus.wire import Message
from capture_app.rig.config import SyncConfig, parse_config
from capture_app.core.geometry import invert_transform, rotation_angle, rotation_from_6d, transform_to_pose
from capture_app.core.hand import FINGERTIP_INDICES
from capture_app.core.interpolation import EXTRAPOLATED, INTERPOLATED, LOST, MISSING, NEAREST
from capture_app.core.streams import SYNCED_STREAMS
from capture_app.recorder.synchronizer import Synchronizer
from drivers.sim.calibration import sim_calibration
from drivers.sim.motion import MotionModel, true_rig_geometry
from tests.conftest import small_sim_text

MS = 1_000_000
T0 = 1_000 * 1_000 * MS  # 1000 s on the host clock
RATES = {"head_tracker": 250, "left_wrist_tracker": 250, "right_wrist_tracker": 250, "left_glove": 120,
         "right_glove": 120, "ego_camera": 30, "top_camera": 30}
LATENCY_MS = {"head_tracker": 6, "left_wrist_tracker": 6, "right_wrist_tracker": 6, "left_glove": 15,
              "right_glove": 15, "ego_camera": 40, "top_camera": 30}


@pytest.fixture(scope="module")
def calibration():
    return sim_calibration(parse_config(small_sim_text()))


def _sample_times(stream, duration_s, phase_ms=0.37):
    period = 1e9 / RATES[stream]
    return (T0 + phase_ms * MS + np.arange(int(duration_s * RATES[stream])) * period).astype(np.int64)


def _messages(stream, duration_s, drop=(), lost=()):
    """Messages as a driver would send them: stamp = true instant + the stream's latency."""
    motion = MotionModel(0, speed=1.5)
    g = true_rig_geometry()
    times = _sample_times(stream, duration_s)
    t_s = times / 1e9
    if stream == "head_tracker":
        values = transform_to_pose(motion.T_world_cam(t_s) @ invert_transform(g["T_headtracker_cam"]))
    elif stream.endswith("wrist_tracker"):
        hand = stream.split("_")[0]
        values = transform_to_pose(motion.T_world_wrist(t_s, hand) @ invert_transform(g[f"T_wristtracker_wrist_{hand}"]))
    elif stream.endswith("glove"):
        values = motion.keypoints(t_s, stream.split("_")[0]).astype(np.float32)
    else:
        values = [None] * len(times)
    out = []
    for seq, (t, v) in enumerate(zip(times, values)):
        if any(a <= t < b for a, b in drop):
            continue
        tracking = "lost" if any(a <= t < b for a, b in lost) else "ok"
        arrays = {} if v is None else {"keypoints" if stream.endswith("glove") else "pose": v}
        t_capture = int(t) + LATENCY_MS[stream] * MS
        out.append(Message(stream, seq, t_capture, None, t_capture, tracking, arrays, {}, {},
                           t_receive_ns=t_capture + 2 * MS))
    return out


def _synchronizer(calibration, duration_s=3.0, drops=None, losses=None):
    sync = Synchronizer(SyncConfig(), calibration, rates_hz={s: r for s, r in RATES.items()})
    messages = []
    for stream in RATES:
        messages += _messages(stream, duration_s, (drops or {}).get(stream, ()), (losses or {}).get(stream, ()))
    for m in sorted(messages, key=lambda m: m.t_receive_ns):
        sync.ingest(m)
    return sync


def _ticks(sync, duration_s=3.0):
    first = T0 + 300 * MS
    return [sync.compute_tick(t) for t in range(first, T0 + int(duration_s * 1e9) - 50 * MS, 50 * MS)]


def _truth(t_eval_ns):
    motion = MotionModel(0, speed=1.5)
    t = t_eval_ns / 1e9
    T_cam_world = invert_transform(motion.T_world_cam(t))
    return {hand: (T_cam_world @ motion.T_world_wrist(t, hand), motion.keypoints(t, hand)[list(FINGERTIP_INDICES)])
            for hand in ("left", "right")}


def test_every_tick_matches_the_truth_with_exact_stamps(calibration):
    sync = _synchronizer(calibration)
    ticks = _ticks(sync)
    assert len(ticks) == 53
    for tick in ticks:
        assert tick.action_valid.all()
        truth = _truth(tick.t_eval_ns)
        for h, hand in enumerate(("left", "right")):
            T_true, tips_true = truth[hand]
            wrist = tick.action[9 * h: 9 * h + 9]
            assert np.linalg.norm(wrist[:3] - T_true[:3, 3]) < 2e-4
            assert np.degrees(rotation_angle(rotation_from_6d(wrist[3:]), T_true[:3, :3])) < 0.05
            tips = tick.action[18 + 15 * h: 33 + 15 * h].reshape(5, 3)
            assert np.abs(tips - tips_true).max() < 2e-4
        assert tick.evaluations["head_tracker"].status == INTERPOLATED
        assert tick.evaluations["ego_camera"].status == NEAREST
        assert tick.evaluations["ego_camera"].dt_ns <= 1e9 / 60 + 1


def test_a_drop_out_invalidates_exactly_the_ticks_it_covers(calibration):
    # 120 ms without left wrist samples (longer than the 60 ms limit), starting 12 ms before a tick's
    # t_eval so that no tick falls within the 10 ms a value may be extrapolated past the last sample
    gap = (T0 + 1_012 * MS, T0 + 1_132 * MS)
    sync = _synchronizer(calibration, drops={"left_wrist_tracker": [gap]})
    times = _sample_times("left_wrist_tracker", 3.0)
    kept = times[(times < gap[0]) | (times >= gap[1])]
    last_before, first_after = kept[kept < gap[0]].max(), kept[kept >= gap[1]].min()
    column = SYNCED_STREAMS.index("left_wrist_tracker")
    affected = 0
    for tick in _ticks(sync):
        inside = last_before < tick.t_eval_ns < first_after
        affected += inside
        assert tick.action_valid[0] == (not inside)
        assert tick.action_valid[1:].all(), "only the left wrist may be affected"
        assert tick.row()["stream_status"][column] == (MISSING if inside else INTERPOLATED)
        if inside:
            assert np.isnan(tick.action[:9]).all() and not np.isnan(tick.action[9:]).any()
    assert affected == 2  # t_eval in (1008.4 ms, 1132.4 ms): the ticks evaluating 1050 and 1100 ms


def test_tracking_loss_invalidates_exactly_the_ticks_whose_samples_are_lost(calibration):
    spell = (T0 + 2_000 * MS, T0 + 2_210 * MS)
    sync = _synchronizer(calibration, losses={"right_glove": [spell]})
    times = _sample_times("right_glove", 3.0)
    lost = (times >= spell[0]) & (times < spell[1])
    for tick in _ticks(sync):
        before = times[times <= tick.t_eval_ns].max()
        after = times[times > tick.t_eval_ns].min()
        expected_lost = bool(lost[times == before][0] or lost[times == after][0])
        assert tick.action_valid[3] == (not expected_lost)
        assert tick.evaluations["right_glove"].status == (LOST if expected_lost else INTERPOLATED)
        assert tick.action_valid[:3].all()


def test_head_tracker_loss_invalidates_both_wrists_but_not_the_fingers(calibration):
    spell = (T0 + 1_500 * MS, T0 + 1_600 * MS)
    sync = _synchronizer(calibration, losses={"head_tracker": [spell]})
    hit = [t for t in _ticks(sync) if spell[0] - 4 * MS <= t.t_eval_ns < spell[1]]
    assert len(hit) == 2
    for tick in hit:
        assert list(tick.action_valid) == [False, False, True, True]
        assert tick.T_world_cam is None


def test_ticks_beyond_the_newest_sample_extrapolate_briefly_then_go_missing(calibration):
    sync = _synchronizer(calibration, duration_s=1.0)
    newest = _sample_times("head_tracker", 1.0)[-1]
    near = sync.compute_tick(int(newest) + 5 * MS + sync.delay_ns)
    far = sync.compute_tick(int(newest) + 30 * MS + sync.delay_ns)
    assert near.evaluations["head_tracker"].status == EXTRAPOLATED
    assert far.evaluations["head_tracker"].status == MISSING and not far.action_valid[:2].any()


def test_samples_received_after_the_tick_are_not_used(calibration):
    sync = _synchronizer(calibration, duration_s=1.0)
    tick_time = T0 + 500 * MS
    tick = sync.compute_tick(tick_time)
    used = tick.stream_seq["ego_camera"]
    frame_times = _sample_times("ego_camera", 1.0)
    received = frame_times + (LATENCY_MS["ego_camera"] + 2) * MS
    assert received[used] <= tick_time
    assert tick.evaluations["ego_camera"].dt_ns <= 1e9 / 60 + 1


def test_a_tick_with_no_data_is_all_missing(calibration):
    sync = Synchronizer(SyncConfig(), calibration)
    tick = sync.compute_tick(T0)
    assert not tick.action_valid.any() and np.isnan(tick.action).all()
    row = tick.row()
    assert (row["stream_status"] == MISSING).all() and (row["stream_seq"] == -1).all()
