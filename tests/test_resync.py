"""The final table uses every sample by capture time; the live table is reproduced row for row from the raw
streams; resync with a new calibration keeps the history."""

from __future__ import annotations

import dataclasses
import json
import time

import h5py
import numpy as np
import pytest

from calibration.model import calibration_from_json
from capture_app.cli import main
from capture_app.rig.config import parse_config
from capture_app.core.interpolation import EXTRAPOLATED, INTERPOLATED
from capture_app.recorder.resync import live_rows, resync_episode
from capture_app.recorder.session import CaptureSession
from tests.conftest import small_sim_text

pytestmark = pytest.mark.slow

FAULTS = {
    "left_wrist_tracker": "drop_probability = 0.05, tracking_loss_every_s = 0.7, tracking_loss_duration_s = 0.2",
    "right_glove": "drop_probability = 0.1, tracking_loss_every_s = 0.5, tracking_loss_duration_s = 0.15",
    "head_tracker": "drop_spells_s = [[3.0, 3.2]]",
    "ego_camera": "drop_probability = 0.1",
}


@pytest.fixture(scope="module")
def faulty_episode(tmp_path_factory):
    out = tmp_path_factory.mktemp("episodes")
    # a long sync delay: on a loaded machine the live table still interpolates most rows to compare with
    config = parse_config(small_sim_text(options=FAULTS).replace("delay_ms = 100", "delay_ms = 400"), "<faulty sim>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(5) == []
        session.start_episode(out, name="faulty")
        time.sleep(3.5)
        path = session.stop_episode()
    return path


def _columns(group):
    return {name: group[name][:] for name in group if name != "lateness_ns"}


def test_the_live_table_is_reproduced_row_for_row_from_the_raw_streams(faulty_episode, tmp_path):
    path = tmp_path / "copy.h5"
    path.write_bytes(faulty_episode.read_bytes())
    with h5py.File(path, "r") as f:
        assert f["synced"].attrs["table"] == "final" and f["synced_live"].attrs["table"] == "live"
        live = _columns(f["synced_live"])
        gaps = {name: g.attrs["seq_gaps"] for name, g in f["streams"].items()}
        recomputed = {k: v for k, v in live_rows(f).items() if k != "lateness_ns"}
    assert len(live["t_tick_ns"]) >= 60
    assert gaps["right_glove"] > 0 and gaps["head_tracker"] > 0  # the faults really happened
    status = live["stream_status"]
    assert (status == 4).any() and (status == 0).any()           # ...and reached the synced rows
    assert live.keys() == recomputed.keys()
    for name in live:
        np.testing.assert_array_equal(live[name], recomputed[name], err_msg=name)
    assert resync_episode(path) == 2
    with h5py.File(path, "r") as f:
        assert f["synced"].attrs["version"] == 2 and "1" in f["synced_versions"]
        np.testing.assert_array_equal(f["synced_live/action"][:], live["action"])  # the live table is kept


def test_the_final_table_keeps_what_live_had_and_adds_what_arrived_late(faulty_episode):
    with h5py.File(faulty_episode, "r") as f:
        live, final = _columns(f["synced_live"]), _columns(f["synced"])
    common, live_i, final_i = np.intersect1d(live["t_tick_ns"], final["t_tick_ns"], return_indices=True)
    assert len(common) > 40 and np.all(np.diff(final["t_tick_ns"]) == 50_000_000)  # one grid, shared
    interpolated = np.all(live["stream_status"][live_i][:, :5] == INTERPOLATED, axis=1)
    assert interpolated.sum() > 5  # rows where live had every sample: enough to make the comparison mean something
    np.testing.assert_array_equal(live["action"][live_i][interpolated], final["action"][final_i][interpolated])
    # the final table only drops a live row's validity where live extrapolated over what turned out to be a gap
    dropped = (live["action_valid"][live_i] & ~final["action_valid"][final_i]).any(axis=1)
    extrapolated = (live["stream_status"][live_i] == EXTRAPOLATED).any(axis=1)
    assert np.all(extrapolated[dropped])
    assert final["action_valid"][final_i].sum() >= live["action_valid"][live_i].sum() - dropped.sum()
    assert np.all(np.diff(final["t_tick_ns"]) == 50_000_000)


def test_late_samples_are_in_the_final_table_and_the_live_losses_are_reported(tmp_path):
    """Every sample arrives 150-400 ms after capture (a loaded machine): live rows are lost, final rows are not."""
    late = "delivery_jitter_ms = 300"
    slow = {name: late for name in ("head_tracker", "left_wrist_tracker", "right_wrist_tracker", "left_glove",
                                    "right_glove")}
    config = parse_config(small_sim_text(options=slow), "<late sim>")
    with CaptureSession(config) as session:
        session.wait_for_streams(5)
        session.start_episode(tmp_path, name="late")
        time.sleep(3.0)
        live_status = session.stream_status()["head_tracker"]
        path = session.stop_episode()
        report = session.last_quality_report
    assert live_status.state == "degraded" and "near the 100 ms sync delay" in live_status.reason
    with h5py.File(path, "r") as f:
        live_valid = f["synced_live/action_valid"][:].all(axis=1).mean()
        final_rows = f["synced/action_valid"][:].all(axis=1)
        final_valid = final_rows[:-4].mean()  # the last 0.2 s: where the streams' last samples end unevenly
        # the action's streams lose nothing (a simulated camera starved by a loaded machine drops frames, counted)
        gaps = sum(f[f"streams/{s}"].attrs["seq_gaps"] for s in slow)
        stored = json.loads(f.attrs["quality"])
        messages = [m.decode() for m in f["events/message"][:]]
    assert any(m.startswith("stream head_tracker") and "degraded" in m and "latency p95" in m for m in messages), messages
    assert gaps == 0 and final_valid >= 0.995 and live_valid < 0.9, (live_valid, final_valid)
    assert stored == report and report["live"]["valid"] == pytest.approx(live_valid, abs=1e-3)
    assert report["streams"]["head_tracker"]["latency_ms"]["p95"] > 100


def test_resync_with_another_calibration_rederives_and_records_it(faulty_episode, tmp_path, capsys):
    path = tmp_path / "copy.h5"
    path.write_bytes(faulty_episode.read_bytes())
    with h5py.File(path, "r") as f:
        calibration = calibration_from_json(f["calibration"].attrs["json"])
        before = f["synced/action"][:]
    shifted = calibration.T_headtracker_cam.copy()
    shifted[:3, 3] += [0.01, 0.0, 0.0]  # the head mount moved 1 cm
    corrected = dataclasses.replace(calibration, T_headtracker_cam=shifted, calibration_id="mount-fix")
    calibration_file = tmp_path / "fixed.json"
    corrected.save(calibration_file)
    assert main(["resync", str(path), "--calibration", str(calibration_file)]) == 0
    assert "computed with mount-fix" in capsys.readouterr().out
    with h5py.File(path, "r") as f:
        after = f["synced/action"][:]
        assert f["synced"].attrs["calibration_id"] == "mount-fix"
        assert json.loads(f["synced"].attrs["calibration_json"])["calibration_id"] == "mount-fix"
        assert json.loads(f["synced_versions/1"].attrs["calibration_json"])["calibration_id"] == "sim-truth"
    both = ~np.isnan(before[:, 0]) & ~np.isnan(after[:, 0])
    moved = np.linalg.norm(after[both, 0:3] - before[both, 0:3], axis=1)
    np.testing.assert_allclose(moved, 0.01, atol=1e-6)  # a pure camera translation moves every wrist by 1 cm
    np.testing.assert_array_equal(after[:, 18:], before[:, 18:])  # fingertips do not depend on the head mount
