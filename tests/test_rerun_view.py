"""`capture-app view` and `record --rerun`: the saved .rrd is read back with Rerun's own reader and its
entities and row counts are checked against the episode."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from capture_app.episode.annotations import Segment, write_segments
from capture_app.cli import main
from tests.test_record_cli import _record

pytest.importorskip("rerun")
from capture_app.tools.rerun_view import DEPTH_EVERY, rrd_entity_rows  # noqa: E402

pytestmark = pytest.mark.slow


def test_live_and_saved_rerun_views_hold_the_episode(tmp_path, capsys):
    live_rrd = tmp_path / "live.rrd"
    result = _record(tmp_path, "--duration", "3", "--rerun", str(live_rrd))
    assert result.returncode == 0, result.stderr
    episode = next((tmp_path / "out").glob("*.h5"))
    live = rrd_entity_rows(live_rrd)
    ticks = live["/action/left_wrist"]  # the action and its validity: every tick the recording loop saw
    assert ticks >= 20 and live["/valid/right_fingers"] == ticks  # (it looks every 50 ms)
    # poses, hands and images with each tick that had them valid: on a loaded machine a late stream or a
    # simulated camera dropping frames (as a real one does) leaves a few ticks without
    for entity in ("/world/head_tracker", "/world/ego_camera", "/world/left_wrist/hand", "/world/ego_camera/image"):
        assert ticks // 2 <= live[entity] <= ticks, entity

    with h5py.File(episode, "a") as f:
        t = f["synced/t_eval_ns"][:]
        write_segments(f, [Segment("grasp", "use right hand to grasp the bottle", "right", int(t[5]), int(t[20])),
                           Segment("pour", "", "right", int(t[20]))])  # left open: one log line, no end
    saved = tmp_path / "episode.rrd"
    assert main(["view", str(episode), "--save", str(saved)]) == 0
    assert "entities" in capsys.readouterr().out
    rows = rrd_entity_rows(saved)
    with h5py.File(episode, "r") as f:
        synced = f["synced"]
        n = len(synced["t_eval_ns"])
        streams = json.loads(synced.attrs["streams"])
        index = synced["stream_index"][:]
        for entity, column in (("head_tracker", "T_world_headtracker"), ("left_wrist", "T_world_left_wrist"),
                               ("ego_camera", "T_world_cam")):
            assert rows[f"/world/{entity}"] == int(np.isfinite(synced[column][:]).all(axis=1).sum()), entity
        fingers_ok = synced["action_valid"][:, 2] & np.isfinite(synced["keypoints"][:, 0]).all(axis=(1, 2))
        assert rows["/world/left_wrist/hand"] == int(fingers_ok.sum())
        for camera in ("ego_camera", "top_camera"):
            assert rows[f"/world/{camera}/image"] == int((index[:, streams.index(camera)] >= 0).sum()), camera
        top = index[:, streams.index("top_camera")]
        assert rows["/world/top_camera/image/depth"] == int((top[::DEPTH_EVERY] >= 0).sum())
        assert rows["/world/top_camera/image/depth"] >= math.floor(n / DEPTH_EVERY) - 1
        for name in json.loads(synced.attrs["action_names"]):
            assert rows[f"/action/{name}"] == n
        for name in json.loads(synced.attrs["action_valid_names"]):
            assert rows[f"/valid/{name}"] == n
    assert rows["/subtasks"] == 3  # start + end of grasp, start of the open pour
    assert "/quality" in rows


def test_view_without_a_final_table_or_file_is_a_clear_error(tmp_path, capsys):
    # a file that is not an episode (here: none) is refused as every other reader refuses it: exit 1
    assert main(["view", str(tmp_path / "missing.h5"), "--save", str(tmp_path / "x.rrd")]) == 1
    assert "missing.h5" in capsys.readouterr().err
