"""Live drift alarms (capture_app/recorder/drift_watch.py) on the simulated rig, and the repair of a take."""

from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pytest

from capture_app.cli import main
from capture_app.core.action_space import wrist_state
from capture_app.core.geometry import invert_transform
from capture_app.recorder.drift_watch import DriftWatch
from capture_app.recorder.session import CaptureSession
from capture_app.rig.config import parse_config, sim_epoch_ns
from drivers.sim.motion import MotionModel
from tests.conftest import small_sim_text

SLIP_AT_S = 20.0
SLIP_DEG = 2.0


def _truth_wrists(t_ns: np.ndarray, epoch_ns: int) -> np.ndarray:
    model = MotionModel(0)
    t = (t_ns - epoch_ns) / 1e9
    T_cam_world = invert_transform(model.T_world_cam(t))
    return wrist_state(T_cam_world @ model.T_world_wrist(t, "left"), T_cam_world @ model.T_world_wrist(t, "right"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_camera_mount_slip_alarms_live_redoes_the_take_and_resync_repairs_it(tmp_path, capsys):
    slip = f"mount_slip_deg = [0.0, {SLIP_DEG}, 0.0], mount_slip_at_s = {SLIP_AT_S}"
    # the ego camera at 640x360 (the real one is 1280x720; the drift watch analyses at most 480 px wide)
    config = parse_config(small_sim_text(options={"head_tracker": slip}, ego=(640, 360)), "<slipping sim>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(60) == []
        epoch = sim_epoch_ns(session.config)
        session.start_episode(tmp_path, name="slipped")
        assert (time.monotonic_ns() - epoch) / 1e9 < SLIP_AT_S - 3, "the rig took too long to start for this test"
        deadline = time.monotonic() + 120  # a loaded machine: the watch may run late, never wrongly
        while not session.drift.alarms and time.monotonic() < deadline:
            time.sleep(0.2)
        while (time.monotonic_ns() - epoch) / 1e9 < SLIP_AT_S + 6:
            time.sleep(0.2)
        path = session.stop_episode()
        report = session.last_quality_report
    with h5py.File(path, "r") as f:
        drift = json.loads(f.attrs["drift"])
        events = [m.decode() for m in f["events/message"][:]]
    slips = [a for a in drift["alarms"] if a["kind"] == "mount_slip"]
    assert len(slips) == 1 and slips[0]["subject"] == "head_mount", drift["alarms"]
    assert abs(slips[0]["size_deg"] - SLIP_DEG) < 0.3 and abs(slips[0]["t_ns"] / 1e9 - (epoch / 1e9 + SLIP_AT_S)) < 0.3
    assert any("ego camera mount slipped" in e and "resync" in e for e in events), events
    assert report["verdict"] == "redo" and report["version"] == 3
    assert any(r["check"] == "mount_slip" and "ego camera mount" in r["text"] for r in report["reasons"])
    assert drift["mounts"]["head"]["unresolved"] and not drift["mounts"]["left"]["unresolved"]

    fixed = tmp_path / "fixed.json"
    assert main(["drift", str(path), "--write-calibration", str(fixed)]) == 0
    assert "UNRESOLVED" in capsys.readouterr().out
    assert main(["resync", str(path), "--calibration", str(fixed)]) == 0
    with h5py.File(path, "r") as f:
        action, t_eval = f["synced/action"][:], f["synced/t_eval_ns"][:]
        before = f["synced_versions/1/action"][:] if "synced_versions/1/action" in f else None
    after = t_eval > epoch + int((SLIP_AT_S + 0.2) * 1e9)
    ok = after & ~np.isnan(action[:, 0]) & ~np.isnan(action[:, 9])
    assert ok.sum() > 40
    truth = _truth_wrists(t_eval[ok], epoch)
    error_mm = 1000 * np.linalg.norm((action[ok][:, [0, 1, 2, 9, 10, 11]] - truth[:, [0, 1, 2, 9, 10, 11]]).reshape(-1, 2, 3), axis=2)
    # the slip's estimated size is off by up to ~0.1 deg (docs/performance.md: max 0.064 deg over 10 trials), which
    # at the hands' ~0.6 m from the camera is ~1 mm; with the old calibration the same rows are centimetres off
    assert error_mm.max() < 2.0, error_mm.max()
    if before is not None:  # with the calibration from before the slip the same rows were centimetres off
        old_mm = 1000 * np.linalg.norm(before[ok][:, 0:3] - truth[:, 0:3], axis=1)
        assert np.median(old_mm) > 5.0


def test_the_drift_watch_state_and_summary_are_plain_data():
    from drivers.sim.calibration import sim_calibration
    from capture_app.rig.config import load_config
    watch = DriftWatch(sim_calibration(load_config()))
    watch.process()  # nothing received: nothing found, nothing raised
    state, summary = watch.state(), watch.summary()
    assert state["alarms"] == [] and state["lag_ms"] == {}
    assert not any(m["unresolved"] or m["slips"] for m in state["mounts"].values())
    assert summary["version"] == 1 and summary["alarms"] == [] and json.loads(json.dumps(summary)) == summary


def test_the_monitor_banner_shows_an_unresolved_slip_and_a_latency_alarm():
    from capture_app.monitor.window import losses_of
    status = {"drift": {"mounts": {"head": {"unresolved": True, "net_deg": 2.0}, "left": {"unresolved": False}},
                        "alarms": [{"kind": "latency", "text": "ego_camera stamps are +20.0 ms off the trackers"}]}}
    shown = losses_of(status)
    assert "ego camera mount slipped 2.0 deg: re-seat it and recalibrate" in shown
    assert "ego_camera stamps are +20.0 ms off the trackers" in shown and len(shown) == 2
    assert losses_of({"drift": None}) == []
