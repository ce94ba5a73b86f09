"""Live and offline synchronization agree row for row; resync with a new calibration keeps the history."""

from __future__ import annotations

import dataclasses
import json
import time

import h5py
import numpy as np
import pytest

from calibration.model import calibration_from_json
from capture_app.cli import main
from capture_app.config import parse_config
from capture_app.resync import resync_episode
from capture_app.session import CaptureSession
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
    config = parse_config(small_sim_text(options=FAULTS), "<faulty sim>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(5) == []
        session.start_episode(out, name="faulty")
        time.sleep(3.5)
        path = session.stop_episode()
    return path


def _columns(group):
    return {name: group[name][:] for name in group if name != "lateness_ns"}


def test_offline_resync_equals_live_row_for_row(faulty_episode, tmp_path):
    path = tmp_path / "copy.h5"
    path.write_bytes(faulty_episode.read_bytes())
    with h5py.File(path, "r") as f:
        live = _columns(f["synced"])
        gaps = {name: g.attrs["seq_gaps"] for name, g in f["streams"].items()}
    assert len(live["t_tick_ns"]) >= 60
    assert gaps["right_glove"] > 0 and gaps["head_tracker"] > 0  # the faults really happened
    status = live["stream_status"]
    assert (status == 4).any() and (status == 0).any()           # ...and reached the synced rows
    assert resync_episode(path) == 2
    with h5py.File(path, "r") as f:
        offline = _columns(f["synced"])
        assert f["synced"].attrs["version"] == 2
        assert "1" in f["synced_versions"]
    assert live.keys() == offline.keys()
    for name in live:
        np.testing.assert_array_equal(live[name], offline[name], err_msg=name)


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
