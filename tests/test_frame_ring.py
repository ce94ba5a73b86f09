"""Camera frames through /dev/shm frame rings (capture_app/frame_ring.py, docs/protocol.md
"Shared-memory buffers"): round trips, the writer never overwrites an unconsumed frame, a late
reader refuses a reused slot, hostile references, and cleanup after a killed writer."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from capture_app import frame_ring
from capture_app.bus import decode_messages, encode_message
from capture_app.errors import BusProtocolError
from capture_app.frame_ring import FrameRing, RingReader, remove_orphans


@pytest.fixture
def ring():
    ring = FrameRing("ego_camera", "color", 1000, slots=3)
    reader = RingReader()
    yield ring, reader
    reader.close()
    ring.close()


def _bytes(i: int, n: int = 500) -> np.ndarray:
    return (np.arange(n) + i).astype(np.uint8)


def test_frames_round_trip_and_a_consumed_slot_is_reused(ring):
    ring, reader = ring
    for i in range(10):  # 3 slots: each reused after the reader consumed it
        ref = ring.put(_bytes(i))
        assert ref is not None and ref[0] == ring.name and ref[3] == 500
        np.testing.assert_array_equal(reader.read(ref), _bytes(i))
    assert (ring.sent, ring.inline) == (10, 0)


def test_an_unconsumed_frame_is_never_overwritten_the_new_one_goes_inline(ring):
    ring, reader = ring
    refs = [ring.put(_bytes(i)) for i in range(3)]
    assert ring.put(_bytes(3)) is None and ring.inline == 1  # slot of frame 1... still unread: inline
    np.testing.assert_array_equal(reader.read(refs[0]), _bytes(0))
    assert ring.put(np.zeros(2000, np.uint8)) is None  # bigger than a slot: inline too
    np.testing.assert_array_equal(reader.read(refs[1]), _bytes(1))  # still intact


def test_a_reference_to_a_reused_slot_is_refused_not_read_torn(ring, monkeypatch):
    ring, reader = ring
    old = ring.put(_bytes(0))
    monkeypatch.setattr(frame_ring, "ABANDON_NS", 0)  # its message was lost: the slot is reused
    for i in range(1, 4):
        ring.put(_bytes(i))
    with pytest.raises(BusProtocolError, match="no longer in slot") as info:
        reader.read(old)
    assert info.value.reason == "shared-memory"


@pytest.mark.parametrize("ref, message", [
    (["capture-1-ego_camera-color-0000000g", 0, 1, 10], "not a capture-app frame ring"),
    (["../../etc/passwd", 0, 1, 10], "not a capture-app frame ring"),
    (["capture-1-ego_camera-color-00000000", 0, 1, 10], "cannot be opened"),
    ([1, 2, 3], "is not"),
    (["x", 0, True, 1], "is not"),
])
def test_hostile_references_are_refused(ring, ref, message):
    _, reader = ring
    with pytest.raises(BusProtocolError, match=message):
        reader.read(ref)


def test_references_outside_the_ring_are_refused(ring):
    ring, reader = ring
    ring.put(_bytes(0))
    for bad in ([ring.name, 3, 1, 10], [ring.name, 1, 1, 5000], [ring.name, 1, 0, 10], [ring.name, 0, 1, 10]):
        with pytest.raises(BusProtocolError):
            reader.read(bad)


def test_a_message_with_a_shared_buffer_decodes_only_where_rings_are_read(ring):
    ring, reader = ring
    jpeg = np.frombuffer(b"\xff\xd8" + bytes(200) + b"\xff\xd9", np.uint8)
    depth = np.arange(12, dtype=np.uint16).reshape(3, 4)
    shared = {"color": ring.put(jpeg)}
    frames = encode_message("top_camera", 3, 10, {"color": jpeg, "depth": depth}, encodings={"color": "jpeg"},
                            decoded_shapes={"color": (4, 4, 3)}, shared=shared)
    assert len(bytes(frames[2])) == 0  # the colour travels as a reference
    [message] = decode_messages(frames, t_receive_ns=11, rings=reader)
    assert message.arrays["color"].tobytes() == jpeg.tobytes() and message.shapes["color"] == (4, 4, 3)
    np.testing.assert_array_equal(message.arrays["depth"], depth)
    with pytest.raises(BusProtocolError, match="not local") as info:
        decode_messages(frames, t_receive_ns=11)
    assert info.value.reason == "shared-memory"
    inline = list(frames)
    inline[2] = jpeg.tobytes()
    with pytest.raises(BusProtocolError, match="in shared memory and in the message"):
        decode_messages(inline, t_receive_ns=11, rings=reader)


def test_a_full_dev_shm_makes_the_ring_fail_cleanly(monkeypatch):
    def full(fd, offset, size):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match="No space"):
        FrameRing("ego_camera", "color", 1000)
    assert not [n for n in os.listdir(frame_ring.SHM_DIR) if n.startswith(f"capture-{os.getpid()}-")]


def test_the_rings_of_a_killed_writer_are_removed():
    code = ("import os, signal; from capture_app.frame_ring import FrameRing; r = FrameRing('top_camera', 'depth', 64); "
            "print(r.name, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    name = child.stdout.strip()
    assert name and os.path.exists(frame_ring.segment_path(name))  # SIGKILL: it could not remove its own
    assert name in remove_orphans()
    assert not os.path.exists(frame_ring.segment_path(name))


@pytest.mark.slow
def test_a_recording_takes_camera_frames_from_shared_memory_and_a_killed_driver_leaves_no_ring(tmp_path):
    import json
    import signal
    import time

    import h5py

    from capture_app.config import parse_config
    from capture_app.session import CaptureSession
    from tests.conftest import small_sim_text

    def rings_of(pid):
        return [n for n in os.listdir(frame_ring.SHM_DIR) if n.startswith(f"capture-{pid}-")]

    with CaptureSession(parse_config(small_sim_text(drivers_in="process"), "<shm>")) as session:
        assert session.wait_for_streams(10) == []
        session.start_episode(tmp_path, name="shm")
        time.sleep(1.5)
        killed = session._hosts[0].pid
        assert rings_of(killed)  # the driver process's rings exist while it runs
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (session._hosts[0].pid == killed or session.wait_for_streams(0.5)):
            time.sleep(0.2)
        assert session._hosts[0].pid != killed and not rings_of(killed)  # removed when the host saw it die
        time.sleep(1.0)
        restarted = session._hosts[0].pid
        path = session.stop_episode()
    assert not rings_of(restarted)  # the session's own stop removes the rest
    with h5py.File(path, "r") as f:
        for stream in ("ego_camera", "top_camera"):
            group = f[f"streams/{stream}"]
            shared = json.loads(group.attrs["device"])["shared_memory"]
            assert shared[f"{stream}/color"]["sent"] > 0, shared
            assert len(group["seq"]) > 40
