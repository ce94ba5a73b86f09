"""Bus protocol v1: round trips over inproc and ipc, and malformed messages never crash a subscriber."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq

from capture_app.bus import (PROTOCOL_VERSION, BusPublisher, BusSubscriber, decode_message, encode_message)
from capture_app.errors import BusProtocolError


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
    "future-version": (_with_header(v=PROTOCOL_VERSION + 1), "version"),
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


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_decode_rejects_malformed_messages_with_a_reason(case):
    frames, reason = MALFORMED[case]
    with pytest.raises(BusProtocolError) as info:
        decode_message(frames)
    assert info.value.reason == reason


def test_subscriber_counts_malformed_messages_and_keeps_receiving(caplog):
    context = zmq.Context()
    subscriber = BusSubscriber(bind=["inproc://malformed"], context=context)
    raw = context.socket(zmq.PUB)
    raw.connect("inproc://malformed")
    try:
        subscriber.poll(200)
        time.sleep(0.05)
        for frames, _ in MALFORMED.values():
            raw.send_multipart(frames)
        raw.send_multipart(_valid())
        good = []
        deadline = time.monotonic() + 3
        while not good and time.monotonic() < deadline:
            message = subscriber.recv(100)
            if message is not None:
                good.append(message)
        assert [m.stream for m in good] == ["left_glove"]
        assert sum(subscriber.malformed.values()) == len(MALFORMED)
        assert subscriber.malformed["truncated"] == 3
        assert "malformed bus message" in caplog.text and "bus protocol v1" in caplog.text
    finally:
        raw.close(0)
        subscriber.close()
        context.term()


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
