"""Bus protocol v1 and v2 (batches): round trips over inproc and ipc, and malformed messages never crash a subscriber."""

from __future__ import annotations

import contextlib
import time

import msgpack
import numpy as np
import pytest
import zmq

from capture_app.bus.wire import (BATCH_VERSION, MAX_BATCH, BusPublisher, BusSubscriber, decode_message, decode_messages,
                             encode_batch, encode_message)
from capture_app.core.errors import BusProtocolError


def _sample_arrays():
    return {"pose": np.arange(7, dtype=np.float64), "keypoints": np.random.default_rng(1).random((25, 3), np.float32),
            "depth": np.arange(12, dtype=np.uint16).reshape(3, 4)}


def test_encode_decode_round_trip_keeps_every_field():
    arrays = _sample_arrays()
    frames = encode_message("head_tracker", 42, 123_456_789, arrays, tracking="lost", t_device_ns=987,
                            meta={"depth_scale_m": 0.001}, t_publish_ns=123_456_999)
    message = decode_message(frames, t_receive_ns=123_457_000)
    assert (message.stream, message.seq, message.t_capture_ns) == ("head_tracker", 42, 123_456_789)
    assert (message.t_device_ns, message.t_publish_ns, message.t_receive_ns) == (987, 123_456_999, 123_457_000)
    assert message.tracking == "lost" and message.meta == {"depth_scale_m": 0.001}
    for name, array in arrays.items():
        np.testing.assert_array_equal(message.arrays[name], array)
        assert message.arrays[name].dtype == array.dtype
    assert message.nbytes == sum(a.nbytes for a in arrays.values())


def test_jpeg_buffers_carry_their_decoded_shape():
    blob = np.frombuffer(b"\xff\xd8fakejpeg\xff\xd9", np.uint8)
    frames = encode_message("ego_camera", 0, 1, {"color": blob}, encodings={"color": "jpeg"},
                            decoded_shapes={"color": (720, 1280, 3)})
    message = decode_message(frames)
    assert message.encodings["color"] == "jpeg" and message.shapes["color"] == (720, 1280, 3)
    assert message.arrays["color"].tobytes() == blob.tobytes()


@pytest.mark.parametrize("transport", ["inproc", "ipc"])
def test_publish_subscribe_round_trip(transport, tmp_path):
    context = zmq.Context()
    endpoint = "inproc://bus-test" if transport == "inproc" else f"ipc://{tmp_path / 'bus.sock'}"
    subscriber = BusSubscriber(bind=[endpoint], context=context)
    publisher = BusPublisher(endpoint, context=context)
    try:
        subscriber.poll(200)  # a bound SUB attaches a connecting peer (and subscribes) while it is polled
        time.sleep(0.05)
        for seq in range(50):
            publisher.publish("left_glove", seq, 1000 + seq, {"keypoints": np.full((25, 3), seq, np.float32)})
        received = []
        deadline = time.monotonic() + 5
        while len(received) < 50 and time.monotonic() < deadline:
            message = subscriber.recv(100)
            if message is not None:
                received.append(message)
        assert [m.seq for m in received] == list(range(50))
        assert all(np.all(m.arrays["keypoints"] == m.seq) for m in received)
        assert all(m.t_receive_ns >= m.t_publish_ns for m in received)
    finally:
        publisher.close()
        subscriber.close()
        context.term()


def _valid():
    return encode_message("left_glove", 1, 10, {"keypoints": np.zeros((25, 3), np.float32)})


def _with_header(**changes):
    frames = _valid()
    header = msgpack.unpackb(frames[1])
    header.update(changes)
    frames[1] = msgpack.packb(header)
    return frames


MALFORMED = {
    "only-topic": ([b"left_glove"], "truncated"),
    "garbage-header": ([b"left_glove", b"\x93not msgpack at all", b""], "header-decode"),
    "header-not-map": ([b"left_glove", msgpack.packb([1, 2, 3])], "header-type"),
    "future-version": (_with_header(v=BATCH_VERSION + 1), "version"),
    "float-version": (_with_header(v=1.0), "version"),
    "missing-seq": (_with_header(seq=None), "header-field"),
    "negative-seq": (_with_header(seq=-3), "header-field"),
    "bool-as-int": (_with_header(t_capture_ns=True), "header-field"),
    "bad-tracking": (_with_header(tracking="maybe"), "header-field"),
    "topic-mismatch": ([b"right_glove", *_valid()[1:]], "topic"),
    "missing-buffer": (_valid()[:2], "truncated"),
    "short-buffer": ([*_valid()[:2], b"\x00" * 10], "truncated"),
    "bad-dtype": (_with_header(buffers=[["keypoints", "object", [25, 3], "raw"]]), "buffer-descriptor"),
    "bad-encoding": (_with_header(buffers=[["keypoints", "<f4", [25, 3], "png"]]), "buffer-descriptor"),
    "bad-shape": (_with_header(buffers=[["keypoints", "<f4", [-1, 3], "raw"]]), "buffer-descriptor"),
    "oversized-header": ([b"left_glove", b"\x00" * (70 * 1024)], "oversized"),
}



@contextlib.contextmanager
def _raw_peer(endpoint: str):
    """A subscriber bound on ``endpoint`` and a raw PUB socket connected to it, ready to send."""
    context = zmq.Context()
    subscriber = BusSubscriber(bind=[endpoint], context=context)
    raw = context.socket(zmq.PUB)
    raw.connect(endpoint)
    try:
        subscriber.poll(200)  # a bound SUB attaches a connecting peer while it is polled
        time.sleep(0.05)
        yield subscriber, raw
    finally:
        raw.close(linger=0)
        subscriber.close()
        context.term()


def _receive(subscriber: BusSubscriber, count: int, seconds: float = 3.0) -> list:
    got = []
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        message = subscriber.recv(100)
        if message is not None:
            got.append(message)
    return got


def test_subscriber_counts_malformed_messages_and_keeps_receiving(caplog):
    with _raw_peer("inproc://malformed") as (subscriber, raw):
        for frames, _ in MALFORMED.values():
            raw.send_multipart(frames)
        raw.send_multipart(_valid())
        assert [m.stream for m in _receive(subscriber, 1)] == ["left_glove"]
        assert sum(subscriber.malformed.values()) == len(MALFORMED)
        assert subscriber.malformed["truncated"] == 3
        assert "malformed bus message" in caplog.text and "bus protocol v1/2" in caplog.text


def test_fuzzed_bytes_never_raise_anything_but_protocol_errors():
    rng = np.random.default_rng(7)
    valid = [bytes(memoryview(f).cast("B")) if not isinstance(f, bytes) else f for f in _valid()]
    for _ in range(2000):
        frames = [bytearray(f) for f in valid]
        i = rng.integers(len(frames))
        if len(frames[i]) and rng.random() < 0.7:
            frames[i][rng.integers(len(frames[i]))] = rng.integers(256)
        else:
            frames[i] = frames[i][: rng.integers(len(frames[i]) + 1)]
        try:
            decode_message([bytes(f) for f in frames])
        except BusProtocolError:
            pass


def _batch(n=4, **kwargs):
    poses = np.arange(n * 7, dtype=np.float64).reshape(n, 7)
    return encode_batch("head_tracker", 100, [1000 + 4 * i for i in range(n)], {"pose": poses},
                        tracking=["ok"] * (n - 1) + ["lost"], t_device_ns=[None] + [50 + i for i in range(1, n)],
                        meta={"note": 1}, t_publish_ns=2000, sender=7, **kwargs), poses


def test_a_batch_decodes_into_its_samples_in_order():
    frames, poses = _batch()
    messages = decode_messages(frames, t_receive_ns=3000)
    assert [m.seq for m in messages] == [100, 101, 102, 103]
    assert [m.t_capture_ns for m in messages] == [1000, 1004, 1008, 1012]
    assert [m.t_device_ns for m in messages] == [None, 51, 52, 53]
    assert [m.tracking for m in messages] == ["ok", "ok", "ok", "lost"]
    assert all(m.t_publish_ns == 2000 and m.t_receive_ns == 3000 and m.sender == 7 for m in messages)
    assert all(m.meta == {"note": 1} and m.shapes == {"pose": (7,)} and m.stream == "head_tracker" for m in messages)
    for m, pose in zip(messages, poses):
        np.testing.assert_array_equal(m.arrays["pose"], pose)
    one = encode_message("head_tracker", 5, 10, {"pose": poses[0]})
    assert [m.seq for m in decode_messages(one)] == [5]  # version 1 still decodes
    with pytest.raises(BusProtocolError, match="decode_messages"):
        decode_message(frames)  # the one-sample decoder says a batch needs the other


def _batch_with_header(**changes):
    frames, _ = _batch()
    header = msgpack.unpackb(frames[1])
    header.update(changes)
    frames[1] = msgpack.packb(header)
    return frames


MALFORMED_BATCHES = {
    "no-n": (_batch_with_header(n=None), "header-field"),
    "n-too-big": (_batch_with_header(n=MAX_BATCH + 1), "header-field"),
    "n-zero": (_batch_with_header(n=0), "header-field"),
    "fewer-stamps": (_batch_with_header(t_capture_ns=[1, 2, 3]), "header-field"),
    "stamp-as-float": (_batch_with_header(t_capture_ns=[1, 2, 3.5, 4]), "header-field"),
    "stamp-overflow": (_batch_with_header(t_capture_ns=[1, 2, 3, 1 << 63]), "header-field"),
    "single-stamp": (_batch_with_header(t_capture_ns=1), "header-field"),
    "bad-tracking": (_batch_with_header(tracking=["ok", "ok", "maybe", "ok"]), "header-field"),
    "device-wrong-length": (_batch_with_header(t_device_ns=[1, 2]), "header-field"),
    "device-not-list": (_batch_with_header(t_device_ns=5), "header-field"),
    "last-seq-overflows": (_batch_with_header(seq=(1 << 63) - 2), "header-field"),
    "leading-dim": (_batch_with_header(buffers=[["pose", "<f8", [2, 14], "raw"]]), "buffer-descriptor"),
    "encoded-buffer": (_batch_with_header(buffers=[["pose", "|u1", [224], "jpeg"]]), "buffer-descriptor"),
    "short-buffer": ([*_batch()[0][:2], b"\x00" * 10], "truncated"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED) + [f"batch:{case}" for case in sorted(MALFORMED_BATCHES)])
def test_decode_rejects_malformed_messages_and_batches_whole_with_a_reason(case):
    batch = case.startswith("batch:")
    frames, reason = MALFORMED_BATCHES[case[6:]] if batch else MALFORMED[case]
    for decode in (decode_messages,) if batch else (decode_messages, decode_message):
        with pytest.raises(BusProtocolError) as info:
            decode(frames)
        assert info.value.reason == reason


def test_encode_batch_refuses_what_it_could_not_send_correctly():
    with pytest.raises(ValueError, match="first dimension"):
        encode_batch("head_tracker", 0, [1, 2], {"pose": np.zeros((3, 7))}, tracking=["ok", "ok"])
    with pytest.raises(ValueError, match="tracking"):
        encode_batch("head_tracker", 0, [1, 2], {"pose": np.zeros((2, 7))}, tracking=["ok"])
    with pytest.raises(ValueError, match="1..256"):
        encode_batch("head_tracker", 0, [], {}, tracking=[])


def test_the_subscriber_hands_out_a_batch_sample_by_sample():
    with _raw_peer("inproc://batches") as (subscriber, raw):
        raw.send_multipart(_batch()[0])
        raw.send_multipart(MALFORMED_BATCHES["fewer-stamps"][0])
        raw.send_multipart(encode_message("head_tracker", 104, 1016, {"pose": np.zeros(7)}))
        assert [m.seq for m in _receive(subscriber, 5)] == [100, 101, 102, 103, 104]
        assert subscriber.received == 5 and subscriber.malformed == {"header-field": 1}
        assert not subscriber.poll(0)
