"""Camera frames through shared memory between a driver process and the recorder on one host
(docs/protocol.md, "Shared-memory buffers").

A driver process writes each camera buffer (JPEG or H.264 bytes, raw depth) into a slot of a ring
in ``/dev/shm`` and publishes only the reference ``[segment, slot, frame, nbytes]`` on the bus; the
recorder copies the bytes out of the slot and marks it consumed. So ZeroMQ moves a few hundred
bytes per frame instead of hundreds of kilobytes, twice (into the kernel and out).

Safety without locks: a writer reuses a slot only after the reader has marked the frame in it
consumed, else it sends that frame inline over the bus as before (nothing is lost, nothing
waits). A slot never consumed within ``ABANDON_NS`` (its message was dropped) is reused; a
reader that still gets that old reference finds another frame number in the slot, before or
after its copy, and refuses the message (counted), never a torn frame.

Segment layout (little-endian): 64-byte header ``b"CAPRING1"``, u32 slots, u32 0, u64 slot_bytes;
then per slot a 64-byte header (u64 frame: 0 while written; u64 nbytes; u64 consumed frame) and
``slot_bytes`` of data. Segments are files ``/dev/shm/capture-<pid>-<stream>-<buffer>-<hex>`` of
the writing process; the writer removes its own, and ``remove_orphans`` those of dead processes.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import struct

import numpy as np

from capture_app.clock import now_ns
from capture_app.errors import BusProtocolError

SHM_DIR = "/dev/shm"
MAGIC = b"CAPRING1"
HEADER_BYTES = 64
SLOT_HEADER_BYTES = 64
SLOTS = 4
ABANDON_NS = 2_000_000_000  # a slot not consumed for this long is reused (its message never arrived)
NAME = re.compile(r"^capture-(\d+)-[a-z_]+-[a-z_]+-[0-9a-f]{8}$")
MAX_MAPPED = 32  # segments a reader keeps open (drivers that restarted leave old ones behind)


def segment_path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


class FrameRing:
    """The writing side: one ring per camera stream and buffer, in the driver's process."""

    def __init__(self, stream: str, buffer: str, slot_bytes: int, slots: int = SLOTS):
        self.name = f"capture-{os.getpid()}-{stream}-{buffer}-{secrets.token_hex(4)}"
        self.slots, self.slot_bytes = slots, int(slot_bytes)
        size = HEADER_BYTES + slots * (SLOT_HEADER_BYTES + self.slot_bytes)
        fd = os.open(segment_path(self.name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)  # a full /dev/shm fails here, not with SIGBUS on a later write
            self._map = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            os.unlink(segment_path(self.name))
            raise
        os.close(fd)
        self._map[:HEADER_BYTES] = MAGIC + struct.pack("<IIQ", slots, 0, self.slot_bytes) + bytes(HEADER_BYTES - 24)
        self._frame = 0
        self._written = [(0, 0)] * slots  # per slot: the frame written there and when
        self.sent = self.inline = 0

    def _slot(self, slot: int) -> int:
        return HEADER_BYTES + slot * (SLOT_HEADER_BYTES + self.slot_bytes)

    def put(self, data: np.ndarray) -> list | None:
        """Write ``data`` (any contiguous array) into the next slot: its reference ``[segment, slot, frame,
        nbytes]``, or None when it must go inline (the slot still holds an unconsumed frame, or it is too big)."""
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        frame = self._frame + 1
        slot = frame % self.slots
        at = self._slot(slot)
        previous, written_ns = self._written[slot]
        consumed = struct.unpack_from("<Q", self._map, at + 16)[0]
        if data.nbytes > self.slot_bytes or (previous and consumed != previous and now_ns() - written_ns < ABANDON_NS):
            self.inline += 1
            return None
        struct.pack_into("<Q", self._map, at, 0)  # being written: a reader holding an old reference refuses it
        self._map[at + SLOT_HEADER_BYTES: at + SLOT_HEADER_BYTES + data.nbytes] = data.data
        struct.pack_into("<Q", self._map, at + 8, data.nbytes)
        struct.pack_into("<Q", self._map, at, frame)
        self._frame = frame
        self._written[slot] = (frame, now_ns())
        self.sent += 1
        return [self.name, slot, frame, data.nbytes]

    def close(self) -> None:
        """Unmap and remove the segment (a reader that mapped it keeps its mapping)."""
        self._map.close()
        try:
            os.unlink(segment_path(self.name))
        except FileNotFoundError:
            pass


class RingReader:
    """The reading side (the recorder's bus subscriber): copies referenced frames out of their slots."""

    def __init__(self):
        self._maps: dict[str, tuple[mmap.mmap, int, int]] = {}  # name -> (map, slots, slot_bytes)

    def read(self, ref) -> np.ndarray:
        """The bytes (1-D uint8, a copy) of reference ``[segment, slot, frame, nbytes]``; raises
        BusProtocolError("shared-memory") for a malformed reference, a missing segment or a frame no longer
        in its slot."""
        if not (isinstance(ref, list) and len(ref) == 4 and isinstance(ref[0], str)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in ref[1:])):
            raise BusProtocolError("shared-memory", f"reference {ref!r} is not [segment, slot, frame, nbytes]")
        name, slot, frame, nbytes = ref
        ring, slots, slot_bytes = self._mapped(name)
        if not (0 <= slot < slots and frame > 0 and 0 <= nbytes <= slot_bytes):
            raise BusProtocolError("shared-memory", f"reference {ref!r} outside segment {name} "
                                                    f"({slots} slots of {slot_bytes} bytes)")
        at = HEADER_BYTES + slot * (SLOT_HEADER_BYTES + slot_bytes)
        if struct.unpack_from("<QQ", ring, at) != (frame, nbytes):
            raise BusProtocolError("shared-memory", f"frame {frame} is no longer in slot {slot} of {name} "
                                                    f"(read too late: the driver reused the slot)")
        data = np.frombuffer(ring, np.uint8, nbytes, at + SLOT_HEADER_BYTES).copy()
        if struct.unpack_from("<Q", ring, at)[0] != frame:
            raise BusProtocolError("shared-memory", f"frame {frame} of {name} was overwritten while read")
        struct.pack_into("<Q", ring, at + 16, frame)  # consumed: the driver may reuse the slot
        return data

    def _mapped(self, name: str) -> tuple[mmap.mmap, int, int]:
        found = self._maps.get(name)
        if found is not None:
            return found
        if not NAME.match(name):
            raise BusProtocolError("shared-memory", f"segment name {name!r} is not a capture-app frame ring")
        try:
            fd = os.open(segment_path(name), os.O_RDWR)
        except OSError as exc:
            raise BusProtocolError("shared-memory", f"segment {name} cannot be opened: {exc.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_BYTES:
                raise BusProtocolError("shared-memory", f"segment {name} is {size} bytes, not a frame ring")
            ring = mmap.mmap(fd, size)
        except (OSError, ValueError) as exc:
            raise BusProtocolError("shared-memory", f"segment {name} cannot be mapped: {exc}") from None
        finally:
            os.close(fd)
        magic, slots, _, slot_bytes = struct.unpack_from("<8sIIQ", ring, 0)
        if magic != MAGIC or size < HEADER_BYTES + slots * (SLOT_HEADER_BYTES + slot_bytes):
            ring.close()
            raise BusProtocolError("shared-memory", f"segment {name} is not a frame ring of this version")
        if len(self._maps) >= MAX_MAPPED:
            oldest = next(iter(self._maps))
            self._maps.pop(oldest)[0].close()
        self._maps[name] = (ring, slots, slot_bytes)
        return self._maps[name]

    def close(self) -> None:
        for ring, _, _ in self._maps.values():
            ring.close()
        self._maps.clear()
        remove_orphans()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(pid: int | None = None) -> list[str]:
    """Remove the frame rings of processes that no longer run (or of ``pid``, which has ended): a driver
    process killed before it could remove its own. Returns the names removed."""
    removed = []
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return removed
    for name in names:
        match = NAME.match(name)
        if match and (int(match.group(1)) == pid or not _alive(int(match.group(1)))):
            try:
                os.unlink(segment_path(name))
                removed.append(name)
            except OSError:
                pass
    return removed
