"""The drift watch's cheap path (capture_app/recorder/drift_inbox.py, drift_visual.py and the numpy rotation
helpers): bounded inboxes that shed and say so, decimated ego frames, batched series, frames decoded reduced,
and the alarms it still raises at its reduced rates."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation, Slerp

from capture_app.bus.message import SampleBlock
from capture_app.core.rotation_series import QuatTrack, exp_rotvec, rotvec
from capture_app.core.visual_rotation import jpeg_size, small_grey
from capture_app.recorder.drift_inbox import Inbox, Series, stack
from capture_app.recorder.drift_watch import INBOX_POSES, DriftWatch
from capture_app.rig.config import load_config
from drivers.sim.calibration import sim_calibration
from drivers.sim.offline import OfflineSample, samples


def _calibration():
    return dataclasses.replace(sim_calibration(load_config()), latency_offsets_ms={})


def _pose(stream: str, t_ns: int, tracking: str = "ok", pose=None) -> OfflineSample:
    pose = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]) if pose is None else pose
    return OfflineSample(stream, t_ns, {"pose": np.asarray(pose, dtype=float)}, tracking=tracking)


def test_an_inbox_sheds_beyond_its_bound_counts_it_and_the_summary_says_so():
    inbox = Inbox({"head_tracker": 3})
    for k in range(5):
        inbox.offer(_pose("head_tracker", k))
    inbox.offer(_pose("not_watched", 0))  # ignored, not an error
    assert [m.t_capture_ns for m in inbox.take("head_tracker")] == [0, 1, 2]
    assert inbox.shed == {"head_tracker": 2} and inbox.waiting() == 0

    watch = DriftWatch(_calibration())  # never processed: as a thread that fell behind
    for k in range(INBOX_POSES + 7):
        watch.offer(_pose("head_tracker", k * 4_000_000))
    summary = watch.summary()
    assert summary["shed"] == {"head_tracker": 7}
    assert "fell behind and shed 7 samples (head_tracker 7)" in summary["shed_text"]
    assert json.loads(json.dumps(summary)) == summary


def test_ego_frames_beyond_the_analysed_rate_are_not_even_queued():
    inbox = Inbox({"ego_camera": 100}, {"ego_camera": int(0.95 * 0.2e9)})  # 5 Hz
    for k in range(60):  # 2 s at 30 Hz
        inbox.offer(OfflineSample("ego_camera", k * 33_333_333, {"color": np.zeros(4, np.uint8)}))
    taken = [m.t_capture_ns / 1e9 for m in inbox.take("ego_camera")]
    assert len(taken) == 10 and np.all(np.diff(taken) >= 0.19) and inbox.shed == {"ego_camera": 0}


def test_stack_keeps_finite_tracked_samples_and_a_series_skips_repeats():
    messages = [_pose("t", 1_000_000_000), _pose("t", 2_000_000_000, tracking="lost"),
                _pose("t", 3_000_000_000, pose=[np.nan, 0, 0, 1, 0, 0, 0]), _pose("t", 4_000_000_000)]
    t, v = stack(messages, "pose", 500_000_000, 7, tracked=True)
    assert np.allclose(t, [0.5, 3.5]) and v.shape == (2, 7)
    series = Series(10.0, (7,), capacity=4)
    series.add_many(t, v)
    series.add_many(np.array([3.5, 3.0, 4.0, 5.0, 6.0]), np.zeros((5, 7)))  # a repeat and one out of order
    times, _ = series.arrays()
    assert np.allclose(times, [0.5, 3.5, 4.0, 5.0, 6.0])  # grown past its first capacity, all recent


def test_frames_are_decoded_reduced_with_the_scale_of_the_full_frame():
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8), (1280, 720))
    encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].ravel()  # RGB frames, as a driver
    assert jpeg_size(encoded) == (1280, 720)
    for source in (encoded, image):
        grey, scale = small_grey(source, 320)
        assert grey.shape == (180, 320) and scale == 0.25
    reference = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (320, 180), interpolation=cv2.INTER_AREA)
    assert np.mean(np.abs(small_grey(encoded, 320)[0].astype(float) - reference)) < 4.0  # the same picture
    assert small_grey(np.zeros(100, np.uint8), 320) is None and jpeg_size(np.zeros(100, np.uint8)) is None


@settings(max_examples=30, deadline=None)
@given(axis=st.lists(st.floats(-1, 1), min_size=3, max_size=3), angle=st.floats(0.0, np.pi - 1e-6))
def test_numpy_rotation_vectors_match_scipy(axis, angle):
    axis = np.array(axis)
    v = axis / np.linalg.norm(axis) * angle if np.linalg.norm(axis) > 1e-3 else np.zeros(3)
    R = Rotation.from_rotvec(v).as_matrix()
    assert np.allclose(exp_rotvec(v), R, atol=1e-12)
    assert np.allclose(rotvec(R), v, atol=1e-9)


def test_the_quaternion_track_matches_slerp_between_close_samples():
    t = np.arange(0.0, 2.0, 0.004)  # a 250 Hz tracker turning at up to 3 rad/s
    v = np.stack([3 * np.sin(t), np.cos(2 * t), 0.5 * t], axis=1)
    q = Rotation.from_rotvec(v).as_quat()[:, [3, 0, 1, 2]] * np.where(np.arange(len(t)) % 3 == 0, -1, 1)[:, None]
    queries = np.random.default_rng(1).uniform(0.0, 1.99, 200)
    ours = QuatTrack(t, q).at(queries)
    theirs = Slerp(t, Rotation.from_rotvec(v))(queries).as_quat()[:, [3, 0, 1, 2]]
    assert np.max(2 * np.arccos(np.clip(np.abs(np.sum(ours * theirs, axis=1)), 0, 1))) < 1e-6
    with pytest.raises(ValueError, match="at least 2 samples"):
        QuatTrack(t[:1], q[:1])


def test_a_wrist_slip_is_found_and_sized_at_the_decimated_rate():
    """The wrists are compared at 10 Hz (drift_watch.WRIST_RATE_HZ), the glove's lag over 1/30 s intervals."""
    watch = DriftWatch(_calibration())
    options = {"left_wrist_tracker": {"mount_slip_deg": [3.0, 0.0, 0.0], "mount_slip_at_s": 8.0}}
    next_s = 0.5
    for sample in samples(0.0, 14.0, options, seed=2, streams=("left_glove", "left_wrist_tracker")):
        if sample.t_capture_ns / 1e9 >= next_s:  # the thread's cadence, in data time
            watch.process()
            next_s += 0.5
        watch.offer(sample)
    watch.process()
    slips = [a for a in watch.alarms if a["kind"] == "mount_slip"]
    assert len(slips) == 1 and slips[0]["subject"] == "left_wrist_mount", watch.alarms
    assert abs(slips[0]["size_deg"] - 3.0) < 0.3 and abs(slips[0]["t_ns"] / 1e9 - 8.0) < 0.2
    assert slips[0]["detected_t_ns"] / 1e9 - 8.0 <= 5.0
    assert abs(watch.latency["left_glove"][-1]["lag_ms"]) < 2.0  # no latency change: none estimated
    assert watch.summary()["analysed"]["wrist_instants"] == pytest.approx(10 * 14, abs=15)


def test_catch_up_waits_for_a_pass_of_the_running_thread_only():
    watch = DriftWatch(_calibration())
    assert watch.catch_up(0.1) is False  # no thread: nothing will process what arrived
    watch.start()
    try:
        watch.offer(_pose("head_tracker", 1_000_000_000))
        assert watch.catch_up(30.0) is True  # generous: a loaded machine runs the thread late
        assert watch._trackers["head"].last_t == pytest.approx(1.0)
    finally:
        watch.stop()
    assert not watch._thread.is_alive()


def test_drift_alarms_are_spoken_once_each_recording_or_not():
    import types

    from capture_app.handsfree.cues import CueWatcher, beep_kind

    class Takes:
        def state(self):
            return {"recording": False, "take_count": 0, "segments": [], "current": "", "last_take": None,
                    "free_disk_mb": 50_000.0}

    watch = DriftWatch(_calibration())
    watch._alarm({"kind": "latency", "text": "before the watcher", "spoken": "old news", "subject": "x"})
    session = types.SimpleNamespace(stream_status=dict, drift=watch)
    said = []
    watcher = CueWatcher(Takes(), session, said.append)
    watcher._observe(initial=True)  # what was raised before it started is not said
    watch._slip_alarm("head", types.SimpleNamespace(size_deg=2.04, rotvec_deg=(0.0, 2.04, 0.0), at_s=1.0,
                                                    detected_s=3.0), None)
    watch._alarm({"kind": "latency", "subject": "left_glove", "text": "long text",
                  "spoken": "left glove latency off by 20 milliseconds, recalibrate"})
    watcher._observe()
    watcher._observe()
    assert said == ["ego camera mount slipped 2 degrees, re-seat it",
                    "left glove latency off by 20 milliseconds, recalibrate"]
    assert {beep_kind(text) for text in said} == {"alert"}
    assert watch.state()["alarm_count"] == 3


def test_the_drift_table_of_the_rig_config_sets_the_watch_and_refuses_bad_values():
    from capture_app.core.errors import ConfigError
    from capture_app.recorder.session import CaptureSession
    from capture_app.rig.config import parse_config, to_toml
    from tests.conftest import small_sim_text

    config = parse_config(small_sim_text("\n[drift]\nmount_slip_deg = 2.5\nlatency_change_ms = 12\n"), "<rig>")
    assert config.drift.mount_slip_deg == 2.5 and config.drift.latency_change_ms == 12.0 and config.drift.enabled
    assert parse_config(to_toml(config), "<again>").drift == config.drift
    session = CaptureSession(config)  # built, not started: no rig runs
    try:
        assert session.drift.threshold_deg == 2.5 and session.drift.latency_threshold_ms == 12.0
    finally:
        session._context.term()
    for bad, field in (("mount_slip_deg = 0.1", "mount_slip_deg"), ("visual_rate_hz = 1", "visual_rate_hz"),
                       ("enabled = 1", "enabled"), ("slip = 2", "unknown field")):
        with pytest.raises(ConfigError, match=field):
            parse_config(small_sim_text(f"\n[drift]\n{bad}\n"), "<rig>")


def test_the_monitor_shows_the_rig_check_prompt_from_the_state_feed():
    from capture_app.monitor.summaries import check_prompt_line
    assert check_prompt_line({"check": None}) is None and check_prompt_line({}) is None
    assert (check_prompt_line({"check": {"step": "turn_head", "text": "Turn your head left and right.", "until_s": 12.0}})
            == "rig check: Turn your head left and right. (until 12 s)")
    assert check_prompt_line({"check": {"step": "done", "text": "Rig check done: computing the verdict."}}) \
        == "rig check: Rig check done: computing the verdict."


def _block(stream: str, t0_ns: int, poses: np.ndarray, tracking: list[str]) -> SampleBlock:
    n = len(poses)
    return SampleBlock(stream=stream, seq=0, n=n, t_capture_ns=t0_ns + 4_000_000 * np.arange(n, dtype=np.int64),
                       t_device_ns=None, t_publish_ns=t0_ns, tracking=tracking, arrays={"pose": poses},
                       encodings={"pose": "raw"}, shapes={"pose": (7,)})


def test_a_batch_queued_whole_stacks_like_its_samples_one_by_one_and_counts_its_samples_against_the_bound():
    rng = np.random.default_rng(3)
    blocks = []
    for k in range(4):
        poses = rng.normal(size=(5, 7))
        poses[1, 2] = np.nan  # not finite: skipped either way
        blocks.append(_block("head_tracker", k * 20_000_000, poses, ["ok", "ok", "lost", "ok", "ok"]))
    whole, one_by_one = Inbox({"head_tracker": 12}), Inbox({"head_tracker": 12})
    loose = _pose("head_tracker", 90_000_000, pose=rng.normal(size=7))
    for block in blocks:
        whole.offer(block)
        for message in block.messages():
            one_by_one.offer(message)
    whole.offer(loose)
    one_by_one.offer(loose)
    assert whole.waiting() == 11 and whole.shed == {"head_tracker": 10}  # the last two blocks did not fit whole
    assert one_by_one.waiting() == 12 and one_by_one.shed == {"head_tracker": 9}
    taken_whole = whole.take("head_tracker")
    assert len(taken_whole) == 3 and whole.waiting() == 0
    expected = stack(blocks[0].messages() + blocks[1].messages() + [loose], "pose", 1000, 7, tracked=True)
    got = stack(taken_whole, "pose", 1000, 7, tracked=True)
    assert len(got[0]) == 8 - 2 + 1  # two lost, two non-finite dropped
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
