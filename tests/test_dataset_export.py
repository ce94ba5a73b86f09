"""The LeRobot export and the dataset jobs, checked as a training-set user would: against the published
LeRobotDataset v3.0 layout (lerobot/datasets/utils.py, lerobot_dataset.py at v0.4.4) and against the
episodes themselves (actions exactly, frames within a stated PSNR, subtasks per frame)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from capture_app.rig.config import parse_config
from capture_app.dataset.catalog import catalog_stats, load_catalog
from capture_app.dataset.commands import export_lerobot, update_catalog
from capture_app.dataset.feature_stats import aggregate_stats, feature_stats
from capture_app.dataset.frames import fill_missing_rows, frame_runs, hold_invalid, row_subtasks, sample_frames
from capture_app.dataset.jobs import run_jobs, summary
from capture_app.dataset.lerobot_export import ExportOptions
from capture_app.dataset.video import psnr, read_video
from capture_app.core.errors import CaptureError
from capture_app.episode.image_codec import decode_jpeg
from capture_app.recorder.session import CaptureSession
from capture_app.recorder.takes import Takes
from tests.conftest import small_sim_text

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")
pytest.importorskip("av")

MIN_PSNR_DB = 32.0  # H.264 at CRF 23 against the recorded JPEG frames (measured 35-36 dB on the sim images)


# --- pure parts -----------------------------------------------------------------------------------
def test_hold_invalid_keeps_each_part_at_its_last_valid_value():
    action = np.arange(5 * 48, dtype=float).reshape(5, 48)
    valid = np.ones((5, 4), bool)
    valid[[0, 2, 3], 0] = False        # left wrist invalid at the start and in the middle
    valid[:, 3] = False                # right fingers never valid
    action[2, 0:9] = np.nan
    held = hold_invalid(action, valid)
    assert np.array_equal(held[0, 0:9], action[1, 0:9])      # before the first valid: the first valid one
    assert np.array_equal(held[2, 0:9], action[1, 0:9]) and np.array_equal(held[3, 0:9], action[1, 0:9])
    assert np.array_equal(held[4, 0:9], action[4, 0:9])
    assert (held[:, 33:48] == 0).all()
    assert np.array_equal(held[:, 9:33], action[:, 9:33])     # valid parts untouched


def test_missing_image_rows_show_the_previous_frame_and_are_flagged():
    filled, present = fill_missing_rows(np.array([-1, -1, 4, -1, 6, -1]))
    assert filled.tolist() == [4, 4, 4, 4, 6, 6]
    assert present.tolist() == [False, False, True, False, True, False]
    filled, present = fill_missing_rows(np.array([-1, -1]))
    assert filled.tolist() == [-1, -1] and not present.any()


def test_frame_runs_keep_and_split():
    usable = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1], bool)
    assert frame_runs(usable, "keep", 3) == [(0, 9)]            # the last row has no next action
    assert frame_runs(usable, "split", 3) == [(0, 3), (4, 8)]
    assert frame_runs(usable, "split", 4) == [(4, 8)]
    assert frame_runs(usable, "drop", 1) == [(0, 3), (4, 8)]
    with pytest.raises(ValueError, match="keep, split or drop"):
        frame_runs(usable, "mask", 1)


def test_row_subtasks_cover_inclusive_ticks_and_open_segments():
    owner = row_subtasks(np.array([1, 5]), np.array([3, -1]), 8)
    assert owner.tolist() == [-1, 0, 0, 0, -1, 1, 1, 1]


def test_image_statistics_sample_every_part_however_short():
    picked = sample_frames([(0, 20), (20, 100_020), (100_020, 100_021)], 60)
    assert [len(p) for p in picked] == [20, 60, 1]            # a short part next to a long one is not skipped
    assert picked[0].tolist() == list(range(20)) and picked[2].tolist() == [100_020]
    assert picked[1][0] == 20 and picked[1][-1] == 100_019 and (np.diff(picked[1]) > 1000).all()


def test_aggregated_stats_equal_stats_of_the_concatenation():
    rng = np.random.default_rng(3)
    parts = [rng.normal(i, 1 + i, size=(50 + 10 * i, 4)) for i in range(3)]
    whole = feature_stats(np.concatenate(parts))
    merged = aggregate_stats([feature_stats(p) for p in parts])
    for key in ("min", "max", "mean", "std", "count"):
        assert np.allclose(merged[key], whole[key]), key
    assert np.all(np.abs(merged["q50"] - whole["q50"]) < 1.5)  # quantiles: a weighted mean, documented as such


# --- recorded episodes ----------------------------------------------------------------------------
def _record(out: Path, seconds: float, instruction: str) -> Path:
    config = parse_config(small_sim_text(), "<sim>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(20) == []
        takes = Takes(session, out)
        takes.start(task="pour", instruction=instruction, operator="ana")
        time.sleep(seconds * 0.25)
        takes.mark_start("grasp", session.latest_tick.t_eval_ns, "use right hand to grasp the bottle", "right")
        time.sleep(seconds * 0.25)
        takes.mark_start("pour", session.latest_tick.t_eval_ns, "use right hand to pour the juice", "right")
        time.sleep(seconds * 0.25)
        takes.mark_end(session.latest_tick.t_eval_ns)
        time.sleep(seconds * 0.25)
        take = takes.stop()
        takes.wait_finalized()
    return Path(take["path"])


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("episodes")
    paths = [_record(folder, 5.0, "pour the juice into the cup"), _record(folder / "day2", 4.0, "pour the milk")]
    yield paths
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def dataset(episodes, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "ds"
    info, text = export_lerobot([str(episodes[0].parent)], out, ExportOptions(), workers=2, progress=False)
    assert "2 of 2 episodes done, 0 failed" in text
    yield out, info
    shutil.rmtree(out, ignore_errors=True)


def _synced(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        streams = json.loads(f["synced"].attrs["streams"])
        return {"action": f["synced/action"][:], "valid": f["synced/action_valid"][:],
                "ego": f["synced/stream_index"][:, streams.index("ego_camera")],
                "start_tick": f["annotations/subtasks/start_tick"][:], "end_tick": f["annotations/subtasks/end_tick"][:],
                "jpeg": [np.asarray(b) for b in f["streams/ego_camera/color"][:]]}


def test_export_has_the_published_v3_layout(dataset):
    out, info = dataset
    for relative in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/subtasks.parquet",
                     "meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet",
                     "data/chunk-000/file-001.parquet",
                     "videos/observation.images.ego/chunk-000/file-000.mp4",
                     "videos/observation.images.top/chunk-000/file-001.mp4"):
        assert (out / relative).is_file(), relative
    assert not (out / ".staging").exists()
    on_disk = json.loads((out / "meta/info.json").read_text())
    assert on_disk == info
    for key in ("codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
                "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "data_path", "video_path", "features"):
        assert key in info, key
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["total_episodes"] == 2
    features = info["features"]
    assert features["observation.state"]["shape"] == [48] and len(features["observation.state"]["names"]) == 48
    for key in ("observation.images.ego", "observation.images.top"):
        video = features[key]
        assert video["dtype"] == "video" and video["names"] == ["height", "width", "channels"]
        assert video["info"]["video.codec"] == "h264" and video["info"]["video.pix_fmt"] == "yuv420p"
        assert video["info"]["video.fps"] == 20 and video["info"]["has_audio"] is False
    # each Parquet column has the type lerobot's datasets.Features give its feature
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    for field in data.schema:
        spec = features[field.name]
        if spec["shape"] == [1]:
            assert not pa.types.is_list(field.type) and not pa.types.is_fixed_size_list(field.type), field
        else:
            assert pa.types.is_fixed_size_list(field.type) and field.type.list_size == spec["shape"][0], field
    assert {n for n, s in features.items() if s["dtype"] != "video"} == set(data.schema.names)
    # export version 2: lerobot normalizes every observation.* key; bool columns crash its normalizer
    assert info["capture_app_export_version"] == 2
    for key in ("observation.state_valid", "action_valid", "observation.images_present"):
        assert features[key]["dtype"] == "float32", key
        assert pa.types.is_float32(data.schema.field(key).type.value_type), key
    assert not any(spec["dtype"] == "bool" for spec in features.values())
    tasks = pd.read_parquet(out / "meta/tasks.parquet")
    assert sorted(tasks.index) == ["pour the juice into the cup", "pour the milk"]
    assert sorted(tasks["task_index"]) == [0, 1]
    subtasks = pd.read_parquet(out / "meta/subtasks.parquet")
    assert subtasks.loc["use right hand to pour the juice", "subtask_index"] > 0 and subtasks.loc["", "subtask_index"] == 0
    stats = json.loads((out / "meta/stats.json").read_text())
    for key in ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"):
        assert np.shape(stats["observation.state"][key]) == ((48,) if key != "count" else (1,))
    assert np.shape(stats["observation.images.ego"]["mean"]) == (3, 1, 1)
    assert stats["action"]["count"] == [info["total_frames"]]


def test_episode_index_rows_point_at_their_frames_and_videos(dataset):
    out, info = dataset
    episodes = pd.read_parquet(out / "meta/episodes/chunk-000/file-000.parquet")
    assert episodes["episode_index"].tolist() == [0, 1]
    assert episodes["dataset_from_index"].tolist()[0] == 0
    assert episodes["dataset_to_index"].tolist()[-1] == info["total_frames"]
    assert (episodes["dataset_to_index"] - episodes["dataset_from_index"] == episodes["length"]).all()
    for _, ep in episodes.iterrows():
        data = pq.read_table(out / info["data_path"].format(chunk_index=ep["data/chunk_index"],
                                                            file_index=ep["data/file_index"])).to_pydict()
        index = np.array(data["index"])
        mine = (index >= ep["dataset_from_index"]) & (index < ep["dataset_to_index"])
        assert (np.array(data["episode_index"])[mine] == ep["episode_index"]).all()
        assert np.array_equal(np.array(data["frame_index"])[mine], np.arange(ep["length"]))
        assert np.allclose(np.array(data["timestamp"])[mine], np.arange(ep["length"]) / 20, atol=1e-6)
        for key in ("observation.images.ego", "observation.images.top"):
            path = out / info["video_path"].format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                                                   file_index=ep[f"videos/{key}/file_index"])
            times, frames = read_video(path)
            inside = (times >= ep[f"videos/{key}/from_timestamp"] - 1e-4) & (times < ep[f"videos/{key}/to_timestamp"] - 1e-4)
            assert inside.sum() == ep["length"]
            assert np.allclose(times[inside] - ep[f"videos/{key}/from_timestamp"], np.arange(ep["length"]) / 20, atol=1e-4)


def test_exported_frames_match_the_episode(dataset, episodes):
    out, info = dataset
    episodes_meta = pd.read_parquet(out / "meta/episodes/chunk-000/file-000.parquet")
    subtasks = pd.read_parquet(out / "meta/subtasks.parquet")
    names = {int(i): s for s, i in zip(subtasks.index, subtasks["subtask_index"])}
    for number, path in enumerate(sorted(episodes)):
        source = _synced(path)
        data = pq.read_table(out / f"data/chunk-000/file-{number:03d}.parquet").to_pydict()
        rows = np.array(data["source_row"])
        assert np.array_equal(rows, np.arange(len(source["action"]) - 1))        # every row but the last
        state, action = np.array(data["observation.state"]), np.array(data["action"])
        state_valid, action_valid = np.array(data["observation.state_valid"]), np.array(data["action_valid"])
        assert np.array_equal(state_valid, source["valid"][rows]) and np.array_equal(action_valid, source["valid"][rows + 1])
        ok = source["valid"][rows].all(axis=1)
        # most rows valid on a quiet machine; a loaded one starves the simulated devices (niced) and leaves
        # rows invalid, which the exact comparisons below skip: enough valid rows to compare is what counts
        assert ok.sum() >= 30, ok.mean()
        assert np.array_equal(state[ok], source["action"][rows[ok]].astype(np.float32))           # exactly
        ok_next = source["valid"][rows + 1].all(axis=1)
        assert np.array_equal(action[ok_next], source["action"][rows[ok_next] + 1].astype(np.float32))
        assert np.isfinite(state).all() and np.isfinite(action).all()
        # subtasks per frame: the annotated ticks, by description
        per_frame = [names[i] for i in data["subtask_index"]]
        a, b = int(source["start_tick"][1]), int(source["end_tick"][1])
        assert set(per_frame[a:b + 1]) == {"use right hand to pour the juice"}
        assert per_frame[0] == "" and per_frame[-1] == ""
        ep = episodes_meta[episodes_meta["episode_index"] == number].iloc[0]
        assert list(ep["subtasks"]) == ["grasp", "pour"] and list(ep["subtask_hands"]) == ["right", "right"]
        assert ep["subtask_from_frame"][1] == a and ep["subtask_to_frame"][1] == b + 1
        # video frames against the recorded JPEGs
        _, frames = read_video(out / f"videos/observation.images.ego/chunk-000/file-{number:03d}.mp4")
        assert len(frames) == len(rows)
        # a row has its own frame exactly where the episode's synced table has one; a row without shows the
        # frame fill_missing_rows gives it (pinned by its own test above); a loaded machine leaves the simulated
        # camera's frames late and rows without a frame, so enough frames to compare is what counts, as for the state
        shown, has_frame = fill_missing_rows(source["ego"][rows])
        present = np.array(data["observation.images_present"])[:, 0]
        assert np.array_equal(present, has_frame.astype(np.float32))
        assert has_frame.sum() >= 30, has_frame.mean()
        scores = [psnr(frames[i], decode_jpeg(source["jpeg"][shown[i]])) for i in range(len(rows))]
        assert min(scores) >= MIN_PSNR_DB, min(scores)


def test_drop_mode_leaves_out_invalid_actions_and_image_size_is_one_shape(episodes, tmp_path):
    source = tmp_path / "gap.h5"
    shutil.copy(episodes[0], source)
    with h5py.File(source, "a") as f:
        valid = f["synced/action_valid"][:]
        valid[:, :] = True
        valid[30:40, 3] = False                      # the right fingers lost for half a second
        f["synced/action_valid"][:] = valid
        rows = len(valid)
    out = tmp_path / "ds"
    info, _ = export_lerobot([str(source)], out, ExportOptions(invalid="drop", min_frames=1, image_size=(320, 240)),
                             workers=1, progress=False)
    data = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pydict()
    assert np.array(data["action_valid"]).all()                          # no frame with an invalid action
    assert sorted(set(range(rows - 1)) - set(data["source_row"])) == list(range(29, 39))  # its action is row r + 1
    assert info["total_episodes"] == 2                                   # cut at the gap: chunks never bridge it
    for key in ("observation.images.ego", "observation.images.top"):
        assert info["features"][key]["shape"] == [240, 320, 3], key
        assert info["features"][key]["info"]["video.height"] == 240 and info["features"][key]["info"]["video.width"] == 320
        _, frames = read_video(out / f"videos/{key}/chunk-000/file-000.mp4")
        assert frames[0].shape == (240, 320, 3)


def test_image_size_refuses_what_video_cannot_hold():
    from capture_app.dataset.lerobot_export import parse_image_size
    assert parse_image_size("640x480") == (640, 480)
    for bad in ("640", "641x480", "axb", "8x8"):
        with pytest.raises(ValueError, match="--image-size"):
            parse_image_size(bad)


def test_split_mode_cuts_episodes_at_invalid_rows(episodes, tmp_path):
    source = tmp_path / "cut.h5"
    shutil.copy(episodes[0], source)
    with h5py.File(source, "a") as f:
        valid = f["synced/action_valid"][:]
        valid[30:40, 1] = False                      # the right wrist lost for half a second
        f["synced/action_valid"][:] = valid
        rows = len(valid)
    out = tmp_path / "ds"
    info, _ = export_lerobot([str(source)], out, ExportOptions(invalid="split", min_frames=10), workers=1, progress=False)
    episodes_meta = pd.read_parquet(out / "meta/episodes/chunk-000/file-000.parquet")
    # the runs of valid rows, at least min_frames long: cut by the injected gap, and by any row the recording
    # itself left invalid (a loaded machine leaves a few at the ends); a run's last frame takes its action from
    # the run's last row
    with h5py.File(source, "r") as f:  # docs/datasets.md: fully valid rows *with both images present*
        streams = json.loads(f["synced"].attrs["streams"])
        index = f["synced/stream_index"][:]
    images = (index[:, streams.index("ego_camera")] >= 0) & (index[:, streams.index("top_camera")] >= 0)
    all_valid = valid.all(axis=1) & images  # a camera starved by a loaded machine leaves rows without a frame
    edges = np.flatnonzero(np.diff(np.concatenate([[0], all_valid.astype(int), [0]])))
    runs = [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2]) if b - a >= 10]
    assert any(a <= 29 < 40 <= b for a, b in runs) is False and len(runs) >= 2  # the gap cuts
    assert info["total_episodes"] == len(runs)
    assert episodes_meta["source_from_row"].tolist() == [a for a, _ in runs]
    assert episodes_meta["source_to_row"].tolist() == [b for _, b in runs]
    assert runs[0][1] == 29 or runs[0][0] > 0  # the first run ends where the gap begins unless the take began badly
    data = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pydict()
    assert np.array(data["observation.state_valid"]).all() and np.array(data["action_valid"]).all()
    times, _ = read_video(out / "videos/observation.images.ego/chunk-000/file-000.mp4")
    assert len(times) == info["total_frames"]
    starts = episodes_meta["videos/observation.images.ego/from_timestamp"].tolist()
    assert starts[0] == 0.0 and starts == sorted(starts)


def test_export_refuses_a_full_folder_and_lists_a_broken_episode(episodes, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(CaptureError, match="not empty"):
        export_lerobot([str(episodes[0])], out, ExportOptions(), workers=1, progress=False)
    broken = tmp_path / "in" / "broken.h5"
    broken.parent.mkdir()
    broken.write_bytes(b"not an episode")
    shutil.copy(episodes[0], tmp_path / "in" / "good.h5")
    info, text = export_lerobot([str(tmp_path / "in")], out, ExportOptions(), workers=1, retries=1,
                                overwrite=True, progress=False)
    assert info["total_episodes"] == 1
    assert "1 of 2 episodes done, 1 failed" in text and "broken.h5" in text


def _fails_once(item, marker_dir):
    """A job that fails the first time it sees an item (for the retry test)."""
    marker = Path(marker_dir) / str(item)
    if item == "bad":
        raise ValueError("always bad")
    if not marker.exists():
        marker.write_text("")
        raise RuntimeError("first attempt fails")
    return item * 2


def test_jobs_retry_and_report_failures_on_the_local_pool(tmp_path):
    results = run_jobs(_fails_once, ["a", "b", "bad"], kwargs={"marker_dir": str(tmp_path)}, workers=2,
                       retries=1, progress=False)
    assert [r.value for r in results[:2]] == ["aa", "bb"] and all(r.attempts == 2 for r in results)
    assert not results[2].ok and "ValueError: always bad" in results[2].error
    text = summary(results, "test")
    assert "2 of 3 episodes done, 1 failed, 3 needed a retry" in text and "FAILED bad" in text


def test_catalog_is_incremental_and_the_same_on_ray(episodes, tmp_path):
    catalog = tmp_path / "catalog.parquet"
    rows, text = update_catalog([str(episodes[0].parent)], catalog, workers=2, ray=None, progress=False)
    assert len(rows) == 2 and "2 of 2 episodes done" in text
    assert {r["validation"] for r in rows} == {"ok"} and {r["operator"] for r in rows} == {"ana"}
    assert all(r["synced_rows"] > 50 and r["subtasks"] == 2 for r in rows)
    _, text = update_catalog([f"file://{episodes[0].parent}"], tmp_path / "other.parquet", workers=1, ray=None,
                             progress=False)
    assert "2 of 2" in text
    _, text = update_catalog([str(episodes[0].parent)], catalog, workers=2, ray=None, progress=False)
    assert "0 of 0 episodes done" in text and "2 unchanged" in text
    catalog_rows = list(load_catalog(catalog).values())
    stats = catalog_stats(catalog_rows)
    recorded_s = sum(float(row["duration_s"]) for row in catalog_rows)
    assert stats["episodes"] == 2 and stats["by_operator"] == {"ana": 2}
    # the takes last 5 + 4 s and longer on a loaded machine (each mark is acknowledged once durable)
    assert recorded_s >= 8.5 and stats["hours"] == pytest.approx(recorded_s / 3600)
    pytest.importorskip("ray")
    ray_rows, text = update_catalog([str(episodes[0].parent)], tmp_path / "ray.parquet", workers=2, ray="local",
                                    progress=False)
    assert "2 of 2 episodes done, 0 failed" in text
    assert [r["synced_rows"] for r in ray_rows] == [r["synced_rows"] for r in rows]
    # the same export job as Ray tasks gives the same frames as on the local pool
    local_info, _ = export_lerobot([str(episodes[0])], tmp_path / "pool", ExportOptions(), workers=1, progress=False)
    ray_info, text = export_lerobot([str(episodes[0])], tmp_path / "ray", ExportOptions(), workers=1, ray="local",
                                    progress=False)
    assert "1 of 1 episodes done, 0 failed" in text and ray_info == local_info
    pool_frames = pq.read_table(tmp_path / "pool/data/chunk-000/file-000.parquet")
    assert pq.read_table(tmp_path / "ray/data/chunk-000/file-000.parquet").equals(pool_frames)


def _lerobot_python() -> str | None:
    """A Python with lerobot: this one when it has it (the `lerobot` extra), else CAPTURE_APP_LEROBOT_PYTHON."""
    import importlib.util
    import sys
    if importlib.util.find_spec("lerobot") is not None:
        return sys.executable
    return os.environ.get("CAPTURE_APP_LEROBOT_PYTHON")


@pytest.mark.skipif(_lerobot_python() is None, reason="lerobot is not installed here and CAPTURE_APP_LEROBOT_PYTHON "
                                                      "names no Python that has it (docs/datasets.md)")
def test_lerobot_loads_the_export(dataset):
    out, info = dataset
    script = (Path(__file__).parent / "lerobot_load_check.py").read_text()
    done = subprocess.run([_lerobot_python(), "-c", script, str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["frames"] == info["total_frames"] and report["episodes"] == 2
    assert report["ego_shape"][0] == 3 and report["task"] == "pour the juice into the cup"
    assert report["action_chunk"] == [10, 48] and report["ego_pair"][0] == 2
    assert report["subtask"] in ("", "use right hand to grasp the bottle", "use right hand to pour the juice")


def test_episodes_behind_an_fsspec_url_are_listed_copied_and_validated(episodes):
    fsspec = pytest.importorskip("fsspec")
    from capture_app.dataset.catalog import catalog_row
    from capture_app.dataset.sources import list_episodes, local_copy
    memory = fsspec.filesystem("memory")
    try:
        memory.put(str(episodes[0]), "/bucket/2026/one.h5")
        memory.pipe("/bucket/2026/notes.txt", b"not an episode")
        found = list_episodes(["memory://bucket"])
        assert found == ["memory:///bucket/2026/one.h5"] or found == ["memory://bucket/2026/one.h5"]
        with local_copy(found[0]) as path:
            assert Path(path).read_bytes() == episodes[0].read_bytes()
            copied = path
        assert not Path(copied).exists()            # the temporary copy is removed
        row = catalog_row(found[0])
        assert row["validation"] == "ok" and row["source"] == found[0] and row["size_bytes"] == episodes[0].stat().st_size
    finally:
        memory.rm("/bucket", recursive=True)


def test_dataset_resync_recomputes_every_final_table_with_a_new_calibration(episodes, tmp_path, capsys):
    from capture_app.cli import main
    folder = tmp_path / "eps"
    folder.mkdir()
    for path in episodes:
        shutil.copy(path, folder / path.name)
        with h5py.File(folder / path.name, "a") as f:  # the rig's own quality thresholds judge the new table
            rig = str(f.attrs["rig_config"])
            assert "min_valid_fraction = 0.95" in rig
            f.attrs["rig_config"] = rig.replace("min_valid_fraction = 0.95", "min_valid_fraction = 0.5")
    with h5py.File(episodes[0], "r") as f:
        calibration = json.loads(f["calibration"].attrs["json"])
    calibration["calibration_id"] = "recalibrated-2026-11-23"
    calibration["latency_offsets_ms"]["head_tracker"] = calibration["latency_offsets_ms"].get("head_tracker", 0) + 5
    new = tmp_path / "new.json"
    new.write_text(json.dumps(calibration))
    assert main(["dataset", "resync", str(folder), "--workers", "2", "--calibration-file", str(new)]) == 0
    assert "2 of 2 episodes done, 0 failed" in capsys.readouterr().out
    for path in folder.glob("*.h5"):
        with h5py.File(path, "r") as f:
            assert f["synced"].attrs["version"] == 2 and f["synced"].attrs["calibration_id"] == "recalibrated-2026-11-23"
            assert "synced_versions/1" in f and f.attrs["quality_verdict"] in ("ok", "redo")
            assert json.loads(f.attrs["quality"])["thresholds"]["min_valid_fraction"] == 0.5
    (folder / "broken.h5").write_bytes(b"junk")
    assert main(["dataset", "resync", str(folder), "--workers", "1", "--retries", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_av1_export_decodes_to_the_same_frames(episodes, tmp_path):
    info, _ = export_lerobot([str(episodes[0])], tmp_path / "ds", ExportOptions(codec="av1", crf=30), workers=1,
                             progress=False)
    assert info["features"]["observation.images.ego"]["info"]["video.codec"] == "av1"
    source = _synced(episodes[0])
    data = pq.read_table(tmp_path / "ds/data/chunk-000/file-000.parquet").to_pydict()
    times, frames = read_video(tmp_path / "ds/videos/observation.images.ego/chunk-000/file-000.mp4")
    assert len(frames) == info["total_frames"] and np.allclose(times, np.arange(len(frames)) / 20, atol=1e-4)
    rows, present = np.array(data["source_row"]), np.array(data["observation.images_present"])[:, 0]
    scores = [psnr(frames[i], decode_jpeg(source["jpeg"][source["ego"][r]])) for i, r in enumerate(rows) if present[i]]
    assert min(scores) >= MIN_PSNR_DB, min(scores)


def test_episodes_of_different_rigs_are_refused_by_name_and_leave_no_staging(episodes, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.h5", "odd.h5", "wrong_shape.h5"):
        shutil.copy(episodes[0], folder / name)
    with h5py.File(folder / "odd.h5", "a") as f:
        names = json.loads(f["synced"].attrs["action_names"])
        f["synced"].attrs["action_names"] = json.dumps([n.upper() for n in names])
    with h5py.File(folder / "wrong_shape.h5", "a") as f:   # the attribute disagrees with the JPEGs
        f["streams/top_camera"].attrs["color_shape"] = [240, 320, 3]
    with pytest.raises(CaptureError, match="odd.h5: cameras .* or action names differ"):
        export_lerobot([str(folder)], tmp_path / "ds", ExportOptions(), workers=1, retries=0, progress=False)
    assert not (tmp_path / "ds" / ".staging").exists()
    (folder / "odd.h5").unlink()
    info, text = export_lerobot([str(folder)], tmp_path / "ds", ExportOptions(), workers=1, retries=0,
                                overwrite=True, progress=False)
    assert info["total_episodes"] == 1
    assert "FAILED" in text and "wrong_shape.h5" in text and "a frame of 160x120 in a 320x240 video" in text
