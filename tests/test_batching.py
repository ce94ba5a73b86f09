"""Drivers' batches of pose and keypoint samples (drivers/batching.py, docs/protocol.md "Batches")."""

from __future__ import annotations

import time

import numpy as np
import zmq

from capture_app.bus.wire import BATCH_VERSION, PROTOCOL_VERSION, decode_messages
from capture_app.rig.config import DriverConfig
from drivers.base import Driver, Sample
from drivers.batching import SampleBatcher
from drivers.registry import create_driver, register

MS = 1_000_000


def _pose(i: float) -> dict:
    return {"pose": np.full(7, float(i))}


def _add(batcher, seq, now, stream="head_tracker", arrays=None, meta=None, tracking="ok"):
    return batcher.add(stream, seq, 1000 + seq, None, tracking, arrays or _pose(seq), meta, now)


def _samples(messages: list) -> list:
    return [m for frames in messages for m in decode_messages(frames, t_receive_ns=0)]


def test_samples_are_held_for_the_window_then_sent_as_one_message():
    batcher = SampleBatcher(20 * MS, sender=3)
    assert all(_add(batcher, seq, seq * 4 * MS) == [] for seq in range(5))  # 0..16 ms: held
    assert batcher.due(19 * MS) == []
    [frames] = batcher.due(20 * MS)
    samples = decode_messages(frames, t_receive_ns=0)
    assert [m.seq for m in samples] == [0, 1, 2, 3, 4] and [m.t_capture_ns for m in samples] == [1000, 1001, 1002, 1003, 1004]
    assert all(m.arrays["pose"][0] == m.seq and m.sender == 3 for m in samples)
    assert batcher.due(10**12) == [] and batcher.drain() == []


def test_a_gap_a_new_layout_or_new_meta_starts_a_new_batch_and_nothing_is_reordered():
    batcher = SampleBatcher(20 * MS, sender=1)
    out = _add(batcher, 0, 0) + _add(batcher, 1, 0)
    out += _add(batcher, 3, 0)  # seq 2 lost: a batch is consecutive samples only
    out += _add(batcher, 4, 0, arrays={"pose": np.zeros(7, np.float32)})  # another dtype
    out += _add(batcher, 5, 0, arrays={"pose": np.zeros(7, np.float32)}, meta={"k": 1})
    out += _add(batcher, 6, 0, stream="left_wrist_tracker")  # other streams batch on their own
    out += batcher.drain()
    assert [[m.seq for m in decode_messages(f, t_receive_ns=0)] for f in out] == [[0, 1], [3], [4], [5], [6]]
    samples = _samples(out)
    assert [m.seq for m in samples] == [0, 1, 3, 4, 5, 6]
    assert samples[4].meta == {"k": 1} and samples[3].arrays["pose"].dtype == np.float32
    assert samples[5].stream == "left_wrist_tracker"


def test_a_full_batch_goes_at_once_and_a_lone_sample_is_a_version_1_message():
    import msgpack
    batcher = SampleBatcher(10**12, sender=1, max_samples=4)
    out = [f for seq in range(9) for f in _add(batcher, seq, 0)]
    assert [len(decode_messages(f, t_receive_ns=0)) for f in out] == [4, 4]
    [lone] = batcher.drain()
    assert msgpack.unpackb(lone[1])["v"] == PROTOCOL_VERSION and msgpack.unpackb(out[0][1])["v"] == BATCH_VERSION


def test_held_samples_are_copies_a_device_may_reuse_its_buffer():
    batcher = SampleBatcher(20 * MS, sender=1)
    buffer = np.zeros(7)
    for seq in range(3):
        buffer[:] = seq
        _add(batcher, seq, 0, arrays={"pose": buffer})
    assert [m.arrays["pose"][0] for m in _samples(batcher.drain())] == [0.0, 1.0, 2.0]


@register("test_bursty")
class BurstyDriver(Driver):
    """Ten poses at once every 50 ms (as a USB transfer or an SDK callback queue delivers them)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = 0

    def read(self):
        if self.sent % 10 == 0:
            time.sleep(0.05)
        self.sent += 1
        return Sample(time.monotonic_ns(), {"pose": np.full(7, float(self.sent))})


def test_a_driver_batches_its_poses_and_sends_what_it_holds_when_it_stops():
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"head_tracker")
    sub.bind("inproc://batching")
    config = DriverConfig(name="bursty", type="test_bursty", stream="head_tracker", rate_hz=200, serial="B1")
    driver = create_driver(config, "inproc://batching", context=context, batch_ms=20)
    messages = []
    try:
        with driver:
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:
                if sub.poll(50):
                    messages.append(sub.recv_multipart())
        while sub.poll(200):  # what the stop sent
            messages.append(sub.recv_multipart())
    finally:
        sub.close(linger=0)
        context.term()
    samples = _samples(messages)
    assert [m.seq for m in samples] == list(range(driver.sent))  # every sample, in order, none held back
    assert len(messages) * 2 < len(samples)  # a burst of ten arrives within the 20 ms: several per message
