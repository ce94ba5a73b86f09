"""A batch taken whole (capture_app.bus.message.SampleBlock) gives exactly what its samples one by one give:
the checks and their refusal counts, the synchronizer's buffer, the stream monitor and the stored columns.

Each test drives the block path and the sample path with the same randomly faulted batches (a stamp that
goes back, a repeated seq, a capture time in the future, a second sender, a non-finite pose, a gap) and
compares every result; seeded, so a failure replays.
"""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest

from capture_app.bus.checks import MessageCheck, Plausibility, fill_optional, fill_optional_block
from capture_app.bus.message import SampleBlock
from capture_app.bus.wire import decode_block, encode_batch
from capture_app.recorder.health import StreamMonitor
from capture_app.recorder.stream_store import StreamStore
from capture_app.recorder.synchronizer import StreamBuffer

MS = 1_000_000


def random_blocks(seed: int, count: int = 60, stream: str = "head_tracker") -> list[SampleBlock]:
    """``count`` decoded batches of a 250 Hz pose stream, some with one fault (see the module docstring)."""
    rng = np.random.default_rng(seed)
    blocks, seq, t, receive = [], 0, 10_000 * MS, 10_000 * MS
    for _ in range(count):
        n = int(rng.integers(1, 9))
        times = [t + 4 * MS * (i + 1) for i in range(n)]
        poses = rng.normal(size=(n, 7))
        sender, fault = 11, rng.integers(0, 16) if blocks else 0  # 1..6: a fault; else a clean batch
        if fault == 1:
            times[n // 2] = times[0] - MS  # time goes back inside the batch
        elif fault == 2:
            seq -= n  # the whole batch repeats seqs already seen
        elif fault == 3:
            times[-1] += 10_000 * MS  # a capture time far in the future
        elif fault == 4:
            sender = 99  # a second publisher on the stream
        elif fault == 5:
            poses[0, 3] = np.nan
        elif fault == 6:
            seq += int(rng.integers(1, 5))  # a few samples lost on the way
        frames = encode_batch(stream, max(seq, 0), times, {"pose": poses}, tracking=["ok"] * n, sender=sender)
        receive += 20 * MS
        blocks.append(decode_block([bytes(f) if isinstance(f, bytes) else np.asarray(f).tobytes() for f in frames],
                                   t_receive_ns=receive))
        seq, t = max(seq, 0) + n, max(times) if fault != 3 else times[-2] if n > 1 else t + 4 * MS
    return blocks


def _is_finite(block: SampleBlock) -> bool:
    return all(np.isfinite(a).all() for a in block.arrays.values())


@pytest.mark.parametrize("seed", range(6))
def test_the_checks_of_a_whole_batch_equal_those_of_its_samples(seed):
    by_block, by_sample = MessageCheck({"head_tracker": 250.0}), MessageCheck({"head_tracker": 250.0})
    accepted_block, accepted_sample, whole = [], [], 0
    for block in random_blocks(seed):
        if _is_finite(block) and by_block.accept_block(block):
            whole += 1
            accepted_block += [(m.seq, m.t_capture_ns) for m in block.messages()]
        else:
            accepted_block += [(m.seq, m.t_capture_ns) for m in block.messages() if by_block.check(m) is None]
        accepted_sample += [(m.seq, m.t_capture_ns) for m in block.messages() if by_sample.check(m) is None]
    assert accepted_block == accepted_sample
    assert by_block.rejected == by_sample.rejected and sum(by_sample.rejected.values()) > 0
    assert vars(by_block._state["head_tracker"]) == vars(by_sample._state["head_tracker"])
    assert whole > 10  # most batches are clean and go whole


def test_a_batch_with_a_refused_sample_is_not_taken_whole_and_changes_nothing():
    check = MessageCheck({"head_tracker": 250.0}, Plausibility())
    good, bad = random_blocks(1, count=1)[0], None
    assert check.check(good.message(0)) is None  # the stream's first sample: its sender is known from then on
    frames = encode_batch("head_tracker", 5, [good.t_capture_ns[0] + 4 * MS, good.t_capture_ns[0]],
                          {"pose": np.zeros((2, 7))}, tracking=["ok", "ok"], sender=11)
    bad = decode_block([np.asarray(f).tobytes() if not isinstance(f, bytes) else f for f in frames],
                       t_receive_ns=good.t_receive_ns + 20 * MS)
    before = repr(vars(check._state["head_tracker"]))
    assert not check.accept_block(bad)
    assert repr(vars(check._state["head_tracker"])) == before and not check.rejected


@pytest.mark.parametrize("capacity", [16, 40])
def test_a_buffer_appended_a_batch_at_a_time_equals_one_appended_sample_by_sample(capacity):
    many, one = StreamBuffer("pose", capacity), StreamBuffer("pose", capacity)
    for block in random_blocks(3, count=80):
        tracking = np.zeros(block.n, np.uint8)
        many.append_many(block.t_capture_ns, block.t_receive_ns, block.seqs, tracking, block.arrays["pose"],
                         block.sender)
        for i in range(block.n):
            one.append(int(block.t_capture_ns[i]), block.t_receive_ns, block.seq + i, 0, block.arrays["pose"][i],
                       sender=block.sender)
        for name in ("times", "receive", "seq", "tracking", "values"):
            np.testing.assert_array_equal(getattr(many, name)[many.start:many.end],
                                          getattr(one, name)[one.start:one.end], err_msg=name)
        assert (many.rejected, many.sender) == (one.rejected, one.sender)
    assert one.rejected > 0


def test_the_stream_monitor_sees_a_batch_as_its_samples():
    by_block, by_sample = StreamMonitor({"head_tracker": 250.0}), StreamMonitor({"head_tracker": 250.0})
    last = None
    for block in random_blocks(4):
        by_block.observe_block(block)
        for message in block.messages():
            by_sample.observe(message)
        last = block.t_receive_ns
    assert by_block.snapshot(last) == by_sample.snapshot(last)
    assert by_sample.snapshot(last)["head_tracker"].seq_gaps > 0


def _store(f: h5py.File) -> StreamStore:
    return StreamStore(f.create_group("streams"), {"left_glove": 120.0}, [], 90, lambda *event: None,
                       threading.Lock())


def test_a_stored_batch_equals_its_samples_stored_one_by_one(tmp_path):
    blocks = []
    for block in random_blocks(5, count=50, stream="left_glove"):
        keypoints = np.random.default_rng(block.seq).normal(size=(block.n, 25, 3)).astype(np.float32)
        blocks.append(SampleBlock(**{**vars(block), "arrays": {"keypoints": keypoints},
                                     "shapes": {"keypoints": (25, 3)}, "encodings": {"keypoints": "raw"}}))
    with h5py.File(tmp_path / "block.h5", "w") as a, h5py.File(tmp_path / "sample.h5", "w") as b:
        by_block, by_sample = _store(a), _store(b)
        for k, block in enumerate(blocks):
            whole = block.messages()
            for message in whole:
                fill_optional("keypoints", message)
            fill_optional_block("keypoints", block)
            by_block.append_block(block)
            for message in whole:
                by_sample.append(message)
            if k % 7 == 0:  # rows and blocks written between flushes, as the writer does
                for store in (by_block, by_sample):
                    store.settle()
                    for table in store.tables.values():
                        table.write()
        for store in (by_block, by_sample):
            store.settle()
            for table in store.tables.values():
                table.write()
        assert by_block.written == by_sample.written and by_block.seq_gaps == by_sample.seq_gaps
        assert by_block.non_monotonic == by_sample.non_monotonic and sum(by_sample.non_monotonic.values()) > 0
        group_a, group_b = a["streams/left_glove"], b["streams/left_glove"]
        assert sorted(group_a) == sorted(group_b) and "wrist_quat" in group_a
        for name in group_b:
            np.testing.assert_array_equal(group_a[name][()], group_b[name][()], err_msg=name)
            assert group_a[name].dtype == group_b[name].dtype, name
        for row, seq in enumerate(group_b["seq"][()]):  # the seq -> row map a synced row's stream_index uses
            assert by_block.row_of("left_glove", int(seq)) == by_sample.row_of("left_glove", int(seq)) == row
        assert by_block.row_of("left_glove", int(group_b["seq"][-1]) + 1) == -1
        assert by_block._row_runs == by_sample._row_runs


def test_a_known_batch_layout_still_has_its_meta_and_values_checked():
    """A layout accepted once skips the schema walk, not the checks that vary per batch: an out-of-range meta
    number, a new shape or seqs going backwards are still refused (and then refused sample by sample)."""
    check = MessageCheck({"head_tracker": 250.0})
    t0 = 1_000_000_000_000

    def batch(seq, meta=None, width=7, n=4):
        frames = encode_batch("head_tracker", seq, [t0 + (seq + i) * 4_000_000 for i in range(n)],
                              {"pose": np.tile(np.r_[0, 0, 0, 1, 0, 0, 0.][:width], (n, 1))},
                              tracking=["ok"] * n, meta=meta, sender=5)
        return decode_block(frames, t_receive_ns=t0 + (seq + n) * 4_000_000)

    first = batch(0)
    assert check.check(first.message(0)) is None  # the stream's sender and shapes fixed by a first sample
    assert check.accept_block(batch(1))           # the layout is now known
    assert not check.accept_block(batch(5, meta={"depth_scale_m": 5.0}))
    assert check.check(batch(5, meta={"depth_scale_m": 5.0}).message(0)) == "meta:depth_scale_m"
    assert not check.accept_block(batch(5, width=4))
    assert not check.accept_block(batch(2))        # seqs already taken
    assert check.accept_block(batch(5, meta={"depth_scale_m": 0.001}))
