"""The final table built while the take records (capture_app.recorder.final_follower, issue 30): the table it
writes is the from-scratch table to the bit, whatever the take's faults, and a follower that fails or is
killed leaves the old path (the table computed from the file) to do the work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import h5py
import numpy as np
import pytest

from capture_app.recorder.final_follower import SAMPLE_COLUMNS, VALUE_COLUMN, SettledRows
from capture_app.recorder.resync import compute_rows, final_tick_times, live_table, resync_episode, sync_config_from_attrs
from capture_app.recorder.session import CaptureSession
from capture_app.rig.config import parse_config
from calibration.model import calibration_from_json
from capture_app.core.streams import SYNCED_STREAMS
from tests.conftest import small_sim_text

pytestmark = pytest.mark.slow

# a take with the faults that make rows wait: a glove silent for a while, then gone for good; lost tracking;
# a camera delivering late and out of step; a tracker dropping samples
FAULTS = {"left_glove": "drop_spells_s = [[1.0, 1.6], [3.2, 1000.0]]",
          "right_wrist_tracker": "tracking_loss_spells_s = [[1.2, 1.5]], drop_probability = 0.05",
          "ego_camera": "delivery_jitter_ms = 200.0"}


def _record(tmp_path, name, seconds=4.0, during=None):
    config = parse_config(small_sim_text(options=FAULTS), "<follower>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(30) == []
        session.start_episode(tmp_path, name=name)
        deadline = time.monotonic() + seconds
        if during is not None:
            during(session)
        while time.monotonic() < deadline:
            time.sleep(0.1)
        return session.stop_episode()


def _tables_equal(a: h5py.Group, b: h5py.Group) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = a[name][:], b[name][:]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), name
        else:
            assert np.array_equal(x, y), name


def _from_scratch(path, tmp_path):
    copy = tmp_path / f"scratch-{path.name}"
    shutil.copy(path, copy)
    resync_episode(copy)  # version 2: every row recomputed from the file's samples
    return copy


@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    """One faulty take, finalized by its follower."""
    return _record(tmp_path_factory.mktemp("followed"), "followed", seconds=6.0)


def test_the_table_built_during_the_take_is_the_from_scratch_table_to_the_bit(followed, tmp_path):
    path = followed
    scratch = _from_scratch(path, tmp_path)
    with h5py.File(path, "r") as f, h5py.File(scratch, "r") as g:
        assert f["synced"].attrs["table"] == "final" and len(f["synced/t_tick_ns"]) > 40
        assert f["synced"].attrs["rows_computed"] == "during the take"
        assert g["synced"].attrs["rows_computed"] == "from the file"
        assert f.attrs["quality_verdict"] in ("ok", "redo")
        _tables_equal(f["synced"], g["synced"])
        assert not f["synced/action_valid"][-5:, 2].any()  # the left glove is gone at the end: rows held back


def test_a_killed_follower_leaves_the_table_to_the_file_and_it_is_the_same(tmp_path):
    def kill_the_follower(session):
        time.sleep(1.5)
        follower = session.episodes.current().follower
        os.kill(follower._process.pid, signal.SIGKILL)

    path = _record(tmp_path, "killed", during=kill_the_follower)
    scratch = _from_scratch(path, tmp_path)
    with h5py.File(path, "r") as f, h5py.File(scratch, "r") as g:
        assert f["synced"].attrs["table"] == "final" and f["synced"].attrs["rows_computed"] == "from the file"
        _tables_equal(f["synced"], g["synced"])


def _blocks(f: h5py.File, rng: np.random.Generator):
    """Every synced stream's samples in blocks of random sizes, the streams interleaved as flushes are."""
    cursors = {s: 0 for s in SYNCED_STREAMS if f"streams/{s}/seq" in f}
    while cursors:
        stream = rng.choice(sorted(cursors))
        group = f[f"streams/{stream}"]
        start = cursors[stream]
        end = min(len(group["seq"]), start + int(rng.integers(1, 60)))
        columns = {c: group[c][start:end] for c in (*SAMPLE_COLUMNS, *VALUE_COLUMN.values()) if c in group}
        yield stream, columns
        cursors[stream] = end
        if end == len(group["seq"]):
            del cursors[stream]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_settled_rows_fed_in_any_block_order_equal_the_rows_from_every_sample(followed, seed):
    """The pure part, driven as the follower process drives it, against compute_rows on the whole file."""
    path = followed
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r") as f:
        live = live_table(f)
        config = sync_config_from_attrs(live.attrs)
        calibration_json = str(f["calibration"].attrs["json"])
        calibration = calibration_from_json(calibration_json, "<test>")
        rows = SettledRows(config, calibration_json, int(live["t_tick_ns"][0]),
                           [s for s in SYNCED_STREAMS if f"streams/{s}/seq" in f])
        settled_during = 0
        for stream, columns in _blocks(f, rng):
            rows.add(stream, columns)
            settled_during += rows.compute_settled()
        ticks = final_tick_times(f, dict(live.attrs), config, calibration)
        rows.compute_rest(int(ticks[-1]))
        followed = rows.rows_for(ticks, lambda hole: rows.rows_between(  # holes from the samples around them
            hole, lambda s, a, b: {c: f[f"streams/{s}/{c}"][a:b] for c in (*SAMPLE_COLUMNS, *VALUE_COLUMN.values())
                                   if c in f[f"streams/{s}"]}))
        expected = compute_rows(f, calibration, ticks, config, final=True)
    assert settled_during > 20  # rows were settled before the end (the left glove, gone after ~1 s, holds the rest)
    assert max(sum(len(b["seq"]) for b in blocks) for blocks in rows.kept.values()) < 400  # the rest let go
    for name, values in followed.items():
        if name == "lateness_ns":
            continue
        assert np.array_equal(values, expected[name], equal_nan=True), name


def test_samples_out_of_capture_order_make_the_rows_untrusted():
    config = parse_config(small_sim_text(), "<order>").sync
    from capture_app.recorder.session import default_calibration
    calibration = default_calibration(parse_config(small_sim_text(), "<order>"))
    rows = SettledRows(config, calibration.to_json(), 0, ["head_tracker"])
    block = {"t_capture_ns": np.array([10, 5], np.int64), "t_receive_ns": np.array([20, 21], np.int64),
             "seq": np.array([0, 1], np.uint64), "tracking": np.zeros(2, np.uint8),
             "sender_epoch": np.zeros(2, np.uint16), "pose": np.zeros((2, 7))}
    rows.add("head_tracker", block)
    assert "do not increase" in rows.broken
    assert rows.compute_settled() == 0 and rows.rows_for(np.array([0], np.int64)) is None


def _as_the_writer_left_it(path, tmp_path, name):
    """A copy of a finalized take as the writer left it: the live table only, no quality report."""
    copy = tmp_path / name
    shutil.copy(path, copy)
    with h5py.File(copy, "r+") as f:
        del f["synced"]
        f.move("synced_live", "synced")
        for attr in ("quality", "quality_verdict"):
            if attr in f.attrs:
                del f.attrs[attr]
    return copy


def _follow(path, late_s: dict | None = None):
    """The follower's state after being fed ``path``'s samples as the writer flushes them: every stream's
    samples of each half second (by capture time; ``late_s``: stream -> how late its samples come at the end,
    from on time at the start), then rows computed."""
    with h5py.File(path, "r") as f:
        live = live_table(f)
        streams = [s for s in SYNCED_STREAMS if f"streams/{s}/seq" in f]
        rows = SettledRows(sync_config_from_attrs(live.attrs), str(f["calibration"].attrs["json"]),
                           int(live["t_tick_ns"][0]), streams)
        columns = {s: {c: f[f"streams/{s}/{c}"][:] for c in (*SAMPLE_COLUMNS, *VALUE_COLUMN.values())
                       if c in f[f"streams/{s}"]} for s in streams if len(f[f"streams/{s}/seq"])}
    begin = min(int(c["t_capture_ns"][0]) for c in columns.values())
    end = max(int(c["t_capture_ns"][-1]) for c in columns.values())
    done = {s: 0 for s in streams}
    late_s = late_s or {}
    for edge in range(begin + 500_000_000, end + int(max(late_s.values(), default=0) * 1e9) + 500_000_001,
                      500_000_000):
        for stream, c in columns.items():
            lag = int(late_s.get(stream, 0) * 1e9 * min(1.0, (edge - begin) / (end - begin)))
            upto = int(np.searchsorted(c["t_capture_ns"], edge - lag))
            if upto > done[stream]:
                rows.add(stream, {name: values[done[stream]:upto] for name, values in c.items()})
                done[stream] = upto
        rows.compute_settled()
    return rows


def _cut(path, stream, begin_s, end_s):
    """Remove ``stream``'s samples captured from ``begin_s`` to ``end_s`` after the take's start (a glove that
    goes silent; end_s None: for good)."""
    with h5py.File(path, "r+") as f:
        group = f[f"streams/{stream}"]
        t = group["t_capture_ns"][:]
        start = int(f.attrs["start_monotonic_ns"])
        gone = (t >= start + begin_s * 1e9) & ((t < start + end_s * 1e9) if end_s is not None else True)
        for name, dataset in group.items():
            if isinstance(dataset, h5py.Dataset) and dataset.shape and dataset.shape[0] == len(t):
                kept = dataset[:][~gone]
                dataset.resize(len(kept), axis=0)
                dataset[:] = kept


def test_the_follower_finish_writes_the_from_file_table_and_report_reading_nothing_that_grows(followed, tmp_path):
    """The stop's work (final_follower.finish) on the follower's state: the same table and the same quality
    report as from the file, with stream_index and every stream's times taken from what it followed."""
    from capture_app.recorder import final_follower
    from capture_app.recorder.final_table import quality_report, thresholds_from_rig
    copy = _as_the_writer_left_it(followed, tmp_path, "finished.h5")
    rows = _follow(copy)
    assert rows.rows_computed > 20 and not rows.seq_restarted
    assert all(rows.recorded_times(s) is not None for s in rows.streams)
    report = final_follower.finish(rows, copy, time.monotonic())
    scratch = _from_scratch(copy, tmp_path)
    with h5py.File(copy, "r") as f, h5py.File(scratch, "r") as g:
        assert f["synced"].attrs["rows_computed"] == "during the take"
        _tables_equal(f["synced"], g["synced"])
        assert json.loads(f.attrs["quality"]) == report
        assert report == json.loads(json.dumps(quality_report(g, thresholds_from_rig(g))))  # from the file alone
        assert report["streams"]["head_tracker"]["samples"] == len(f["streams/head_tracker/seq"])


def test_a_stream_whose_seq_restarts_has_its_stream_index_from_the_file(followed, tmp_path):
    """A driver restart repeats sequence numbers: the row holding a seq is then the last one (resync's rule),
    which the follower cannot know while it records; it resolves that stream's column from the file."""
    from capture_app.recorder import final_follower
    copy = _as_the_writer_left_it(followed, tmp_path, "restarted.h5")
    with h5py.File(copy, "r+") as f:
        seq = f["streams/head_tracker/seq"]
        values = seq[:]
        half = len(values) // 2
        values[half:] = values[:len(values) - half]  # the second half repeats the first half's numbers
        seq[:] = values
        epoch = f["streams/head_tracker/sender_epoch"]
        epochs = epoch[:]
        epochs[half:] += 1  # from a restarted driver (a new sender: the writer stores such samples)
        epoch[:] = epochs
    rows = _follow(copy)
    assert rows.seq_restarted == {"head_tracker"}
    final_follower.finish(rows, copy, time.monotonic())
    scratch = _from_scratch(copy, tmp_path)
    with h5py.File(copy, "r") as f, h5py.File(scratch, "r") as g:
        assert f["synced"].attrs["rows_computed"] == "during the take"
        _tables_equal(f["synced"], g["synced"])
        j = SYNCED_STREAMS.index("head_tracker")
        index = f["synced/stream_index"][:, j]
        assert np.all(index[index >= 0] >= half // 2)  # rows of the first half point at the repeats


@pytest.mark.parametrize("silence", [(0.8, None), (0.8, 4.8), (-60.0, None), (-60.0, 4.3)],
                         ids=["gone-for-good", "back-after-4-s", "never-there", "late-by-4.3-s"])
def test_a_silent_stream_does_not_hold_the_rows_back_and_a_comeback_is_computed_from_the_file(followed, tmp_path,
                                                                                            silence):
    """A glove silent for over SILENT_S: the rows go on without it during the take; if it comes back, the rows
    from its last sample before the silence are computed at the stop from the samples stored around them. The
    table is the from-scratch table either way."""
    from capture_app.recorder import final_follower
    copy = _as_the_writer_left_it(followed, tmp_path, "silent.h5")
    _cut(copy, "right_glove", *silence)
    rows = _follow(copy)
    with h5py.File(copy, "r") as f:
        last_tick = int(f["synced/t_tick_ns"][-1])
    if silence[1] is None:
        assert "right_glove" in rows.assumed_silent and not rows.holes and not rows.broken
        assert rows.t0_ns + rows.next_k * rows.period_ns > last_tick - 1.2e9  # computed past the glove's death
    else:
        assert rows.holes, "the comeback made no hole"
    final_follower.finish(rows, copy, time.monotonic())
    scratch = _from_scratch(copy, tmp_path)
    with h5py.File(copy, "r") as f, h5py.File(scratch, "r") as g:
        assert f["synced"].attrs["rows_computed"] == "during the take"
        _tables_equal(f["synced"], g["synced"])
        assert f["synced/action_valid"][-5:, 3].any() == (silence[1] is not None)  # the right glove's part


def test_a_stream_that_delivers_late_but_steadily_is_not_silent(followed, tmp_path):
    """The ego camera's samples falling 3 s behind the others' by the end, delivered at every flush: it holds the
    rows back (they wait for its samples), it is never taken for silent, and no row is computed twice."""
    from capture_app.recorder import final_follower
    copy = _as_the_writer_left_it(followed, tmp_path, "late.h5")
    rows = _follow(copy, late_s={"ego_camera": 3.0})
    assert "ego_camera" not in rows.assumed_silent and not rows.spoke_again and not rows.holes
    final_follower.finish(rows, copy, time.monotonic())
    scratch = _from_scratch(copy, tmp_path)
    with h5py.File(copy, "r") as f, h5py.File(scratch, "r") as g:
        _tables_equal(f["synced"], g["synced"])
