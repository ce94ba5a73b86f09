"""The episode writer: layout, round trip of every kind of data, rename, discard, overflow, errors."""

from __future__ import annotations

import errno
import json

import cv2
import h5py
import numpy as np
import pytest

from capture_app.bus.wire import decode_message, encode_message
from capture_app.rig.config import WriterConfig
from capture_app.episode.format import NO_DEVICE_TIME, validate_and_summarize
from capture_app.core.errors import WriterError
from capture_app.recorder.columns import ColumnTable
from capture_app.recorder.writer import EpisodeMetadata, EpisodeWriter


def _message(stream, seq, t, arrays, **kwargs):
    return decode_message(encode_message(stream, seq, t, arrays, **kwargs), t_receive_ns=t + 500)


def _metadata(name="ep"):
    return EpisodeMetadata(episode_name=name, instruction="pour the juice", task="pour", operator="ana",
                           rig_name="test", rig_config_text="version = 1", calibration_json=json.dumps({"a": 1}),
                           calibration_id="cal-1", device_serials={"head_tracker": "LHR-1"},
                           expected_rates_hz={"head_tracker": 250.0, "ego_camera": 30.0})


def _image(seed, h=48, w=64):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_layout_and_round_trip(tmp_path):
    writer = EpisodeWriter(tmp_path, _metadata(), WriterConfig(flush_interval_s=0.1)).start()
    poses = np.random.default_rng(0).random((10, 7))
    depth = np.random.default_rng(1).integers(0, 5000, size=(10, 48, 64), dtype=np.uint16)
    for i in range(10):
        seq = i if i < 5 else i + 2  # two samples lost between 4 and 7
        writer.submit(_message("head_tracker", seq, 1_000 + i * 4_000_000, {"pose": poses[i]}, t_device_ns=77 + i,
                               tracking="lost" if i == 3 else "ok"))
        writer.submit(_message("top_camera", i, 2_000 + i * 33_000_000, {"color": _image(i), "depth": depth[i]},
                               meta={"depth_scale_m": 0.001}))
        writer.submit_row("synced", {"t_tick_ns": np.int64(i), "action": np.full(48, float(i))})
    writer.log_event("warning", "test", "something happened", t_ns=5)
    writer.set_stream_attrs("head_tracker", {"device": {"serial": "LHR-1"}})
    path = writer.finish({"note": "done"})
    assert path == tmp_path / "ep.h5" and path.exists() and not writer.partial_path.exists()

    summary = validate_and_summarize(path)
    assert summary.problems == []
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "complete" and f.attrs["instruction"] == "pour the juice"
        assert f.attrs["note"] == "done" and json.loads(f.attrs["device_serials"]) == {"head_tracker": "LHR-1"}
        assert json.loads(f["calibration"].attrs["json"]) == {"a": 1}
        head = f["streams/head_tracker"]
        np.testing.assert_array_equal(head["pose"][:], poses)
        np.testing.assert_array_equal(head["t_device_ns"][:], 77 + np.arange(10))
        assert head.attrs["seq_gaps"] == 2 and head.attrs["expected_rate_hz"] == 250.0
        assert list(head["tracking"][:]).count(2) == 1
        assert json.loads(head.attrs["device"]) == {"serial": "LHR-1"}
        top = f["streams/top_camera"]
        np.testing.assert_array_equal(top["depth"][:], depth)  # lossless
        assert top["t_device_ns"][0] == NO_DEVICE_TIME
        for i, blob in enumerate(top["color"][:]):
            decoded = cv2.cvtColor(cv2.imdecode(blob, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            assert decoded.shape == (48, 64, 3)
            assert np.abs(decoded.astype(int) - _image(i)).mean() < 6  # JPEG q90
        assert "32001" in top["depth"]._filters  # Blosc (hdf5plugin)
        np.testing.assert_array_equal(f["synced/action"][:, 0], np.arange(10))
        assert "something happened" in [m.decode() for m in f["events/message"][:]]


def test_discard_leaves_no_file(tmp_path):
    writer = EpisodeWriter(tmp_path, _metadata(), WriterConfig()).start()
    writer.submit(_message("head_tracker", 0, 1, {"pose": np.zeros(7)}))
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_existing_episode_is_never_overwritten(tmp_path):
    (tmp_path / "ep.h5").write_bytes(b"precious")
    with pytest.raises(WriterError, match="already exists"):
        EpisodeWriter(tmp_path, _metadata(), WriterConfig()).start()
    assert (tmp_path / "ep.h5").read_bytes() == b"precious"


def test_full_queue_refuses_and_counts_instead_of_growing(tmp_path):
    # colour frames may use three quarters of the byte budget (SHED_AT_FRACTION): room for 3 of them
    writer = EpisodeWriter(tmp_path, _metadata(), WriterConfig(), max_queue_bytes=4 * 48 * 64 * 3)
    writer._thread = None  # not started: nothing drains the queue
    writer._file = h5py.File(writer.partial_path, "w")
    writer._write_metadata()
    accepted = [writer.submit(_message("ego_camera", i, i + 1, {"color": _image(i)})) for i in range(10)]
    assert accepted == [True] * 3 + [False] * 7
    assert writer.stats().overflow["ego_camera"] == 7
    writer._file.close()


def test_a_batch_refuses_only_the_flooding_streams_samples_and_keeps_the_order(tmp_path):
    writer = EpisodeWriter(tmp_path, _metadata(), WriterConfig(flush_interval_s=0.1))
    writer._stream_cap = {"ego_camera": 2, "head_tracker": 50}
    batch = []
    for i in range(6):
        batch.append(_message("ego_camera", i, 10 + i, {"color": _image(i)}))
        batch.append(_message("head_tracker", i, 10 + i, {"pose": np.full(7, float(i))}))
    assert writer.submit_many(batch) == 2 + 6  # nothing drains the queue yet: ego's share is 2
    stats = writer.stats()
    assert stats.overflow == {"ego_camera": 4} and stats.backlog_items == 8
    writer.start()
    assert writer.submit_many([_message("ego_camera", 6, 20, {"color": _image(6)})]) == 1
    path = writer.finish({})
    with h5py.File(path, "r") as f:
        assert list(f["streams/ego_camera/seq"][:]) == [0, 1, 6]
        assert f["streams/ego_camera"].attrs["writer_overflow"] == 4
        assert f["streams/ego_camera"].attrs["seq_gaps"] == 4  # the refused ones show as the gap they left
        np.testing.assert_array_equal(f["streams/head_tracker/pose"][:, 0], np.arange(6))


def test_non_monotonic_samples_are_rejected_and_reported(tmp_path):
    writer = EpisodeWriter(tmp_path, _metadata(), WriterConfig()).start()
    for seq, t in ((0, 100), (1, 200), (2, 150), (1, 300), (3, 400)):  # time backwards, then seq backwards
        writer.submit(_message("head_tracker", seq, t, {"pose": np.zeros(7)}))
    path = writer.finish()
    with h5py.File(path, "r") as f:
        assert list(f["streams/head_tracker/t_capture_ns"][:]) == [100, 200, 400]
        assert f["streams/head_tracker"].attrs["non_monotonic"] == 2
        assert f["streams/head_tracker"].attrs["seq_gaps"] == 1
        assert any("non-monotonic" in m.decode() for m in f["events/message"][:])
    assert validate_and_summarize(path).problems == []


def test_disk_full_stops_cleanly_keeps_flushed_data_and_says_so(tmp_path, monkeypatch):
    writer = EpisodeWriter(tmp_path, _metadata(), WriterConfig(flush_interval_s=0.05)).start()
    writer.submit(_message("head_tracker", 0, 100, {"pose": np.ones(7)}))
    import time
    time.sleep(0.3)  # flushed

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ColumnTable, "write", full)
    writer.submit(_message("head_tracker", 1, 200, {"pose": np.ones(7)}))
    with pytest.raises(WriterError, match="disk is full") as info:
        writer.finish()
    assert "partial" in str(info.value)
    assert writer.submit(_message("head_tracker", 2, 300, {"pose": np.ones(7)})) is False
    with h5py.File(writer.partial_path, "r") as f:
        assert list(f["streams/head_tracker/seq"][:]) == [0]


def test_past_shares_of_the_byte_budget_depth_is_shed_before_colour_before_poses(tmp_path):
    frame = 48 * 64 * 3
    writer = EpisodeWriter(tmp_path, _metadata(), WriterConfig(), max_queue_bytes=8 * frame)
    writer._stream_cap = {"top_camera": 100, "ego_camera": 100, "head_tracker": 10_000}
    depth = np.zeros((48, 64), np.uint16)
    rgbd = [_message("top_camera", i, i + 1, {"color": _image(i), "depth": depth}) for i in range(4)]
    colour = [_message("ego_camera", i, i + 1, {"color": _image(i)}) for i in range(8)]
    poses = [_message("head_tracker", i, i + 1, {"pose": np.zeros(7)}) for i in range(100)]
    # nothing drains the queue: an rgbd sample is 15,360 bytes, two fit under half the 73,728-byte budget;
    # colour frames (9,216 bytes) then fit two more under three quarters; poses go on to the full budget
    accepted = {"top_camera": writer.submit_many(rgbd), "ego_camera": writer.submit_many(colour),
                "head_tracker": writer.submit_many(poses)}
    overflow = writer.stats().overflow
    assert accepted["top_camera"] == 2 and overflow["top_camera"] == 2
    assert accepted["ego_camera"] == 2 and overflow["ego_camera"] == 6
    assert accepted["head_tracker"] == 100 and overflow["head_tracker"] == 0


def test_variable_length_and_depth_columns_round_trip_across_flushes(tmp_path):
    """The bytes and text columns are written in one low-level call per flush: one row alone, several rows of
    equal length (numpy would make those a 2-D array), then mixed lengths; depth frames one at a time, without
    a chunk cache. Every row reads back exactly."""
    rng = np.random.default_rng(3)
    batches = [[rng.integers(0, 256, 7, dtype=np.uint8)],
               [rng.integers(0, 256, 5, dtype=np.uint8) for _ in range(3)],
               [rng.integers(0, 256, n, dtype=np.uint8) for n in (1, 900, 40)]]
    texts = [["one"], ["two", "três", "four"], ["", "x" * 300, "end"]]
    depths = [[rng.integers(0, 4000, (48, 64), dtype=np.uint16) for _ in batch] for batch in batches]
    with h5py.File(tmp_path / "t.h5", "w") as f:
        table = ColumnTable(f.create_group("g"))
        table.mark("jpeg", "bytes")
        table.mark("note", "text")
        table.mark("depth", "depth")
        for frames, notes, depth in zip(batches, texts, depths):
            for frame, note, d in zip(frames, notes, depth):
                table.append({"jpeg": frame, "note": note, "depth": d})
            assert table.write() == len(frames)
        assert f["g/depth"].id.get_access_plist().get_chunk_cache()[1] == 1  # compressed as written
    with h5py.File(tmp_path / "t.h5", "r") as f:
        flat = [frame for batch in batches for frame in batch]
        assert len(f["g/jpeg"]) == len(flat) == len(f["g/note"]) == len(f["g/depth"])
        for i, frame in enumerate(flat):
            np.testing.assert_array_equal(f["g/jpeg"][i], frame)
        assert [v.decode() for v in f["g/note"][()]] == [t for batch in texts for t in batch]
        np.testing.assert_array_equal(f["g/depth"][()], np.stack([d for batch in depths for d in batch]))
