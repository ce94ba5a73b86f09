"""The capture bus: a versioned message protocol on ZeroMQ PUB/SUB.

Wire format (protocol version 2, documented in ``docs/protocol.md``)::

    frame 0  topic   UTF-8 stream name, e.g. b"left_glove" (status: b"_status/<driver>")
    frame 1  header  msgpack map (see ``Message``)
    frame 2+ buffers one raw byte buffer per entry of header["buffers"]

A version-1 message carries one sample. A version-2 message is a batch of ``n`` consecutive
samples of one stream (``encode_batch``): per-sample stamps and tracking as lists, each buffer
with a leading dimension ``n``; the recorder takes it whole (``SampleBlock``), ``decode_messages``
splits it into ``n`` Messages.

Buffers are raw numpy bytes (encoding "raw"), an encoded image ("jpeg") or one frame of an
H.264 stream ("h264"); never pickle or base64. Everything is serialized before the first frame is sent.

Topology: the application's subscriber *binds* an ``inproc://`` endpoint that the
in-process driver threads *connect* their publishers to, and *connects* to the
endpoints that driver processes bind (``ipc://`` or loopback ``tcp://``).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import zmq

from capture_app.bus.message import STATUS_PREFIX, Message, SampleBlock  # noqa: F401 (STATUS_PREFIX: old import path)
from capture_app.core.clock import now_ns
from capture_app.core.errors import BusProtocolError


PROTOCOL_VERSION = 1  # one sample per message
BATCH_VERSION = 2     # a batch of consecutive samples of one stream
ACCEPTED_VERSIONS = (PROTOCOL_VERSION, BATCH_VERSION)
MAX_BATCH = 256       # samples in one batch message
TRACKING_STATES = ("ok", "degraded", "lost")
ENCODINGS = ("raw", "jpeg", "h264")
ALLOWED_DTYPES = frozenset({"|u1", "<u2", "<i4", "<u4", "<i8", "<u8", "<f4", "<f8", "|b1"})
MAX_HEADER_BYTES = 64 * 1024
INT64_LIMIT = 1 << 63
MAX_BUFFERS = 16
MAX_BUFFER_BYTES = 64 * 1024 * 1024
HIGH_WATER_MARK = 4000  # messages queued per socket before ZeroMQ drops (seen as sequence gaps)
# inproc PUB/SUB pipes that once reach their high-water mark never deliver again (libzmq 4.3.5, seen
# with a reader slower than a burst): a stream would die silently. inproc pipes are therefore
# unbounded; the episode writer's queue is the bound on what is kept.
INPROC_HIGH_WATER_MARK = 0

_REQUIRED = {"v": int, "stream": str, "seq": int, "t_capture_ns": int, "t_publish_ns": int,
             "tracking": str, "buffers": list}
_REQUIRED_BATCH = {**_REQUIRED, "n": int, "t_capture_ns": list, "tracking": list}
_REQUIRED_ITEMS, _REQUIRED_BATCH_ITEMS = tuple(_REQUIRED.items()), tuple(_REQUIRED_BATCH.items())


def _wire_array(array: np.ndarray) -> np.ndarray:
    """``array`` as it goes on the wire: C-contiguous, little-endian."""
    array = np.ascontiguousarray(array)
    return array.astype(array.dtype.newbyteorder("<")) if array.dtype.byteorder == ">" else array


def _frames(stream: str, header: dict, buffers: list) -> list:
    """``[topic, msgpack header, *buffers]``, ready for ``send_multipart``."""
    return [stream.encode("utf-8"), msgpack.packb(header, use_bin_type=True), *buffers]


def encode_message(
    stream: str,
    seq: int,
    t_capture_ns: int,
    arrays: dict[str, np.ndarray],
    *,
    tracking: str = "ok",
    t_device_ns: int | None = None,
    encodings: dict[str, str] | None = None,
    decoded_shapes: dict[str, tuple[int, ...]] | None = None,
    meta: dict[str, Any] | None = None,
    t_publish_ns: int | None = None,
    sender: int = 0,
) -> list:
    """Serialize one sample into the frames of a bus message.

    ``arrays`` maps buffer names to numpy arrays (raw) or 1-D uint8 blobs (jpeg, h264, with
    the decoded image shape given in ``decoded_shapes``). Returns
    ``[topic, header, *buffers]`` ready for ``send_multipart``.
    """
    if tracking not in TRACKING_STATES:
        raise ValueError(f"tracking must be one of {TRACKING_STATES}, got {tracking!r}")
    encodings = encodings or {}
    decoded_shapes = decoded_shapes or {}
    descriptors = []
    buffers = []
    for name, array in arrays.items():
        encoding = encodings.get(name, "raw")
        array = _wire_array(array)
        shape = decoded_shapes.get(name, array.shape) if encoding != "raw" else array.shape
        descriptors.append([name, array.dtype.str, [int(n) for n in shape], encoding])
        buffers.append(array)
    header = {
        "v": PROTOCOL_VERSION,
        "stream": stream,
        "seq": int(seq),
        "t_capture_ns": int(t_capture_ns),
        "t_device_ns": None if t_device_ns is None else int(t_device_ns),
        "t_publish_ns": int(now_ns() if t_publish_ns is None else t_publish_ns),
        "tracking": tracking,
        "buffers": descriptors,
        "meta": meta or {},
        "sender": int(sender),
    }
    return _frames(stream, header, buffers)


def encode_batch(
    stream: str,
    first_seq: int,
    t_capture_ns: list[int],
    arrays: dict[str, np.ndarray],
    *,
    tracking: list[str],
    t_device_ns: list[int | None] | None = None,
    meta: dict[str, Any] | None = None,
    t_publish_ns: int | None = None,
    sender: int = 0,
) -> list:
    """Serialize ``n = len(t_capture_ns)`` consecutive samples of one stream (seq ``first_seq`` ..
    ``first_seq + n - 1``) into one protocol-version-2 message. ``arrays`` maps buffer names to raw
    arrays whose first dimension is ``n`` (sample i is ``array[i]``); ``tracking`` and ``t_device_ns``
    are per sample; ``meta`` applies to every sample."""
    n = len(t_capture_ns)
    if not 1 <= n <= MAX_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_BATCH} samples, got {n}")
    if len(tracking) != n or any(t not in TRACKING_STATES for t in tracking):
        raise ValueError(f"tracking must list {n} states from {TRACKING_STATES}")
    if t_device_ns is not None and len(t_device_ns) != n:
        raise ValueError(f"t_device_ns must list {n} stamps")
    descriptors, buffers = [], []
    for name, array in arrays.items():
        array = _wire_array(array)
        if array.ndim < 1 or array.shape[0] != n:
            raise ValueError(f"buffer {name!r} has shape {array.shape}, needs a first dimension of {n}")
        descriptors.append([name, array.dtype.str, [int(x) for x in array.shape], "raw"])
        buffers.append(array)
    header = {
        "v": BATCH_VERSION,
        "stream": stream,
        "n": n,
        "seq": int(first_seq),
        "t_capture_ns": [int(t) for t in t_capture_ns],
        "t_device_ns": None if t_device_ns is None else [None if t is None else int(t) for t in t_device_ns],
        "t_publish_ns": int(now_ns() if t_publish_ns is None else t_publish_ns),
        "tracking": list(tracking),
        "buffers": descriptors,
        "meta": meta or {},
        "sender": int(sender),
    }
    return _frames(stream, header, buffers)


_DTYPES = {name: np.dtype(name) for name in ALLOWED_DTYPES}
_INT_TYPE = {int}


def _check_header(header: Any) -> None:
    """Refuse a decoded header that docs/protocol.md does not allow (``BusProtocolError``). msgpack gives only
    exact ``dict``, ``list``, ``str``, ``int``, ``bool``, ``float``, ``bytes`` and None, so ``type(x) is int``
    is an integer that is not a bool; every message goes through this (~300 a second), so it is kept lean."""
    if type(header) is not dict:
        raise BusProtocolError("header-type", f"header is {type(header).__name__}, expected a map")
    get = header.get
    version = get("v")
    if type(version) is not int or version not in ACCEPTED_VERSIONS:  # not True, not 1.0
        raise BusProtocolError("version", f"protocol version {version!r}, this build speaks {list(ACCEPTED_VERSIONS)}")
    batch = version == BATCH_VERSION
    for key, kind in (_REQUIRED_BATCH_ITEMS if batch else _REQUIRED_ITEMS):
        if type(get(key)) is not kind:
            raise BusProtocolError("header-field", f"field {key!r} missing or not {kind.__name__}")
    if batch:
        _check_batch_fields(header)
    else:
        if header["tracking"] not in TRACKING_STATES:
            raise BusProtocolError("header-field", f"tracking {header['tracking']!r} not in {TRACKING_STATES}")
        if get("t_device_ns") is not None and not _is_int64(header["t_device_ns"]):
            raise BusProtocolError("header-field", "t_device_ns must be a signed 64-bit integer or nil")
    if type(get("meta", {})) is not dict:
        raise BusProtocolError("header-field", "meta must be a map")
    seq = header["seq"]
    if seq < 0:
        raise BusProtocolError("header-field", "seq must be >= 0")
    for key in ("seq", "t_capture_ns", "t_publish_ns", "t_device_ns", "sender"):
        value = get(key)
        if type(value) is int and not -INT64_LIMIT <= value < INT64_LIMIT:
            raise BusProtocolError("header-field", f"{key} {value} does not fit a signed 64-bit integer")
    if batch and seq + header["n"] - 1 >= INT64_LIMIT:
        raise BusProtocolError("header-field", "the batch's last seq does not fit a signed 64-bit integer")
    if type(get("sender", 0)) is not int:
        raise BusProtocolError("header-field", "sender must be an integer")


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -INT64_LIMIT <= value < INT64_LIMIT


_TRACKING_SET = frozenset(TRACKING_STATES)


def _all_int64(values: list) -> bool:
    """Every item an int (not a bool) in the signed 64-bit range; in C loops (a batch lists up to 256)."""
    if set(map(type, values)) != {int}:
        return False
    return -INT64_LIMIT <= min(values) and max(values) < INT64_LIMIT


def _check_batch_fields(header: dict) -> None:
    """The per-sample lists of a version-2 (batch) header: ``n`` entries each, of the right kinds."""
    n = header["n"]
    if not 1 <= n <= MAX_BATCH:
        raise BusProtocolError("header-field", f"batch of {n} samples, allowed 1..{MAX_BATCH}")
    if len(header["t_capture_ns"]) != n or not _all_int64(header["t_capture_ns"]):
        raise BusProtocolError("header-field", f"t_capture_ns must list {n} signed 64-bit integers")
    tracking = header["tracking"]
    if len(tracking) != n or set(map(type, tracking)) != {str} or not set(tracking) <= _TRACKING_SET:
        raise BusProtocolError("header-field", f"tracking must list {n} states from {TRACKING_STATES}")
    device = header.get("t_device_ns")
    stamps = [t for t in device if t is not None] if type(device) is list else None
    if device is not None and (stamps is None or len(device) != n or (stamps and not _all_int64(stamps))):
        raise BusProtocolError("header-field", f"t_device_ns must be nil or list {n} integers or nils")


def decode_block(frames: list, t_receive_ns: int | None = None) -> Message | SampleBlock:
    """Decode one bus message: a ``Message`` for version 1, a ``SampleBlock`` of ``n`` samples for a
    version-2 batch (arrays as read-only views on the received buffers). Raises ``BusProtocolError`` like
    ``decode_message``; a batch is used whole or refused whole."""
    header, arrays, encodings, shapes, nbytes = _decode_parts(frames)
    t_receive_ns = now_ns() if t_receive_ns is None else t_receive_ns
    if header["v"] != BATCH_VERSION:
        return _message(header, arrays, encodings, shapes, nbytes, t_receive_ns)
    n = header["n"]
    for name, array in arrays.items():
        if encodings[name] != "raw" or array.ndim < 1 or array.shape[0] != n:
            raise BusProtocolError("buffer-descriptor", f"batch buffer {name!r} must be raw with a first dimension of {n}")
    return SampleBlock(stream=header["stream"], seq=header["seq"], n=n,
                       t_capture_ns=np.array(header["t_capture_ns"], dtype=np.int64),
                       t_device_ns=header.get("t_device_ns"), t_publish_ns=header["t_publish_ns"],
                       tracking=header["tracking"], arrays=arrays, encodings=encodings,
                       shapes={name: shape[1:] for name, shape in shapes.items()}, meta=header.get("meta", {}),
                       t_receive_ns=t_receive_ns, nbytes=nbytes, sender=header.get("sender", 0))


def decode_messages(frames: list, t_receive_ns: int | None = None) -> list[Message]:
    """Decode one bus message into its samples: ``[Message]`` for version 1, ``n`` Messages for a
    version-2 batch (consecutive seqs, the batch's receive time, arrays as read-only views). Raises
    ``BusProtocolError`` like ``decode_message``; a batch is used whole or refused whole."""
    decoded = decode_block(frames, t_receive_ns)
    return decoded.messages() if isinstance(decoded, SampleBlock) else [decoded]


def decode_message(frames: list, t_receive_ns: int | None = None) -> Message:
    """Decode ``[topic, header, *buffers]`` frames (bytes or zmq.Frame) of a one-sample (version 1)
    message into a ``Message``; ``decode_messages`` also takes batches.

    Raises ``BusProtocolError`` with a short ``reason`` for anything malformed,
    truncated, oversized or of an unknown protocol version. Arrays are read-only
    views on the received buffers (no copy).
    """
    header, arrays, encodings, shapes, nbytes = _decode_parts(frames)
    if header["v"] == BATCH_VERSION:
        raise BusProtocolError("version", "a batch (protocol version 2): decode it with decode_messages")
    return _message(header, arrays, encodings, shapes, nbytes, now_ns() if t_receive_ns is None else t_receive_ns)


def _as_bytes_view(frame) -> memoryview:
    """A frame (zmq.Frame, bytes, or any buffer) as a flat memoryview of bytes, without a copy."""
    view = frame.buffer if type(frame) is zmq.Frame else memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _decode_parts(frames: list) -> tuple[dict, dict, dict, dict, int]:
    """The checked header and the buffers of ``[topic, header, *buffers]``: (header, arrays, encodings,
    shapes, total buffer bytes); a batch's stamps and tracking are still the header's lists. Every message
    goes through this (~300 a second), so the checks are kept lean; each is one that docs/protocol.md
    states."""
    if len(frames) < 2:
        raise BusProtocolError("truncated", f"{len(frames)} frame(s), need at least topic and header")
    raw = [_as_bytes_view(f) for f in frames]
    if raw[1].nbytes > MAX_HEADER_BYTES:
        raise BusProtocolError("oversized", f"header of {raw[1].nbytes} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw[1], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise BusProtocolError("header-decode", f"{type(exc).__name__}: {exc}") from None
    _check_header(header)
    try:
        topic = bytes(raw[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise BusProtocolError("topic", "topic is not UTF-8") from None
    if topic != header["stream"]:
        raise BusProtocolError("topic", f"topic {topic!r} differs from header stream {header['stream']!r}")
    descriptors = header["buffers"]
    if len(descriptors) > MAX_BUFFERS:
        raise BusProtocolError("oversized", f"{len(descriptors)} buffers exceeds {MAX_BUFFERS}")
    if len(descriptors) != len(raw) - 2:
        raise BusProtocolError("truncated", f"header lists {len(descriptors)} buffers, message has {len(raw) - 2}")
    arrays: dict[str, np.ndarray] = {}
    encodings: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    total = 0
    for descriptor, buf in zip(descriptors, raw[2:]):
        if type(descriptor) is not list or len(descriptor) != 4:
            raise BusProtocolError("buffer-descriptor", f"descriptor {descriptor!r} is not [name, dtype, shape, encoding]")
        name, dtype, shape, encoding = descriptor
        if type(name) is not str or dtype not in _DTYPES or encoding not in ENCODINGS:
            raise BusProtocolError("buffer-descriptor", f"bad descriptor {descriptor!r}")
        if type(shape) is not list or not set(map(type, shape)) <= _INT_TYPE or (
                shape and not (min(shape) >= 0 and max(shape) < 1 << 31)):
            raise BusProtocolError("buffer-descriptor", f"bad shape {shape!r} for {name!r}")
        nbytes = buf.nbytes
        total += nbytes
        if nbytes > MAX_BUFFER_BYTES:
            raise BusProtocolError("oversized", f"buffer {name!r} of {nbytes} bytes exceeds {MAX_BUFFER_BYTES}")
        if encoding == "raw":
            dt = _DTYPES[dtype]
            expected = math.prod(shape) * dt.itemsize
            if nbytes != expected:
                raise BusProtocolError("truncated", f"buffer {name!r} has {nbytes} bytes, shape {shape} {dtype} needs {expected}")
            arrays[name] = np.frombuffer(buf, dtype=dt).reshape(shape)
        else:
            arrays[name] = np.frombuffer(buf, dtype=np.uint8)
        encodings[name] = encoding
        shapes[name] = tuple(shape)
    return header, arrays, encodings, shapes, total


def _message(header: dict, arrays: dict, encodings: dict, shapes: dict, nbytes: int, t_receive_ns: int) -> Message:
    """The ``Message`` of a checked version-1 header and its buffers."""
    return Message(stream=header["stream"], seq=header["seq"], t_capture_ns=header["t_capture_ns"],
                   t_device_ns=header.get("t_device_ns"), t_publish_ns=header["t_publish_ns"],
                   tracking=header["tracking"], arrays=arrays, encodings=encodings, shapes=shapes,
                   meta=header.get("meta", {}), t_receive_ns=t_receive_ns, nbytes=nbytes,
                   sender=header.get("sender", 0))


def __getattr__(name: str):
    """``BusPublisher`` and ``BusSubscriber`` moved to ``capture_app.bus.sockets``; this old import path
    (``from capture_app.bus.wire import BusSubscriber``) keeps working."""
    if name in ("BusPublisher", "BusSubscriber"):
        from capture_app.bus import sockets
        return getattr(sockets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
