"""The HDF5 episode writer: its own thread, a bounded queue, crash-safe by flushing.

The file is written as ``<name>.h5.partial`` and renamed to ``<name>.h5`` on a clean
finish. Buffered rows are appended and the file flushed every ``flush_interval_s``
(<= 1 s), so a killed recorder leaves a readable file missing at most that much.
Images are JPEG-encoded here (OpenCV releases the GIL), depth is stored lossless
with Blosc zstd + byte shuffle (hdf5plugin). The queue is bounded in messages and
bytes: when it is full a sample is refused and counted (``writer_overflow``), never
allowed to grow memory. Layout: ``capture_app.episode.format`` / docs/episode-format.md.
"""

from __future__ import annotations

import errno
import json
import logging
import queue
import shutil
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from capture_app import __version__
from capture_app.episode.annotations import write_segments
from capture_app.bus.wire import Message
from capture_app.core.clock import NS_PER_S, now_ns, wall_clock_iso
from capture_app.rig.config import WriterConfig
from capture_app.episode.file import open_hdf5
from capture_app.episode.format import (EPISODE_SUFFIX, FORMAT_NAME, FORMAT_VERSION, NO_DEVICE_TIME, PARTIAL_SUFFIX,
                                        TRACKING_CODES)
from capture_app.core.errors import WriterError
from capture_app.episode.image_codec import EncodeError, encode_jpeg
from capture_app.rig.priority import prioritise_recorder_thread
from capture_app.core.streams import STREAM_KINDS, SYNCED_STREAMS
from capture_app.core.values import MAX_NAME_CHARS, storable_t_ns, storable_text

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_BYTES = 768 * 1024 * 1024
_TIME_CHUNK = 1024
# Depth: Blosc zstd level 3 with byte shuffle. On the simulated 640x480 depth: 3.8 kB a frame in 0.8 ms,
# where lz4 + bitshuffle (the choice before 2026-12-02) took 16 kB in 0.7 ms (docs/performance.md)
DEPTH_FILTER = hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.SHUFFLE)
DISK_MARGIN_BYTES = 8 * 1024 * 1024  # free space kept for HDF5 metadata and a clean close


# the writer sleeps this long after draining its queue: the dispatcher queues a batch every few ms and the
# file is flushed every flush_interval_s anyway; waking for each batch cost ~1 ms of CPU per tick
WRITER_GATHER_S = 0.01
STORED_RATIO_MIN_BYTES = 1 << 20  # a flush smaller than this says little about compression
ROW_HEADER_BYTES = 64  # a sample's seq, times, tracking, epoch and offset columns


class DiskFullStop(Exception):
    """Free space would not hold the next flush: stop before HDF5 hits ENOSPC (which corrupts the file)."""
_STOP = object()


@dataclass
class EpisodeMetadata:
    """What the episode file says about itself (root attributes)."""

    episode_name: str
    instruction: str = ""
    task: str = ""
    operator: str = ""
    rig_name: str = ""
    rig_config_text: str = ""
    calibration_json: str = "{}"
    calibration_id: str = ""
    device_serials: dict[str, str] = field(default_factory=dict)
    expected_rates_hz: dict[str, float] = field(default_factory=dict)
    simulated: bool = False
    sim_seed: int = 0


@dataclass
class WriterStats:
    """Counters for the progress line and the monitor."""

    written: Counter
    overflow: Counter
    seq_gaps: Counter
    backlog_items: int  # samples queued, not yet written
    backlog_bytes: int
    error: str = ""
    video_undecodable: Counter = field(default_factory=Counter)  # video frames dropped after a lost frame
    values_repaired: int = 0  # texts / times given to the writer that had to be made storable (escaped, cut)
    items_refused: int = 0    # rows, events or attributes the writer could not store (each logged)


def _set_attrs(target, attrs: dict[str, Any]) -> None:
    """Scalars and strings as they are, lists of numbers as arrays, anything else as JSON text."""
    if isinstance(target, (h5py.Group, h5py.Dataset)):
        target = target.attrs
    for key, value in attrs.items():
        if isinstance(value, str):
            target[key] = storable_text(value, limit=1 << 20)[0]
        elif isinstance(value, (int, float, bool, np.integer, np.floating)):
            target[key] = value
        else:  # any value: what JSON cannot say is shown by repr (ensure_ascii escapes NUL and surrogates)
            target[key] = json.dumps(value, default=repr)


class _Table:
    """Appends rows of named columns to datasets in one group; columns are created on first use."""

    def __init__(self, group: h5py.Group):
        self.group = group
        self._pending: dict[str, list] = defaultdict(list)
        self._special: dict[str, str] = {}
        self._datasets: dict[str, h5py.Dataset] = {}  # h5py lookups cost ~0.1 ms each: keep the handles
        self._rows: dict[str, int] = {}

    def mark(self, column: str, kind: str) -> None:
        """Declare ``column`` as 'bytes' (variable-length: JPEG files, H.264 packets), 'depth' (Blosc image)
        or 'text'."""
        self._special[column] = kind

    def append(self, row: dict[str, Any]) -> None:
        for name, value in row.items():
            self._pending[name].append(value)

    def _create(self, name: str, first: Any) -> h5py.Dataset:
        kind = self._special.get(name)
        if kind == "bytes":
            return self.group.create_dataset(name, (0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8), chunks=(64,))
        if kind == "text":
            return self.group.create_dataset(name, (0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,))
        first = np.asarray(first)
        if kind == "depth":
            return self.group.create_dataset(name, (0, *first.shape), maxshape=(None, *first.shape), dtype=first.dtype,
                                             chunks=(1, *first.shape), **DEPTH_FILTER)
        rows_per_chunk = max(1, min(_TIME_CHUNK, (256 * 1024) // max(1, first.nbytes)))
        return self.group.create_dataset(name, (0, *first.shape), maxshape=(None, *first.shape), dtype=first.dtype,
                                         chunks=(rows_per_chunk, *first.shape))

    def write(self) -> int:
        """Append the pending rows to the file; returns how many rows were written."""
        written = 0
        for name, values in self._pending.items():
            if not values:
                continue
            dataset = self._datasets.get(name)
            if dataset is None:
                dataset = self.group[name] if name in self.group else self._create(name, values[0])
                self._datasets[name] = dataset
                self._rows[name] = dataset.shape[0]
            start = self._rows[name]
            dataset.resize(start + len(values), axis=0)
            self._rows[name] = start + len(values)
            if self._special.get(name) in ("bytes", "text", "depth"):
                # one by one: h5py mis-broadcasts a 1-row object array; and h5py holds the GIL for a whole
                # write call, so a depth frame (compressed inside HDF5, ~0.5 ms) at a time lets the
                # synchronizer's tick in between instead of waiting for a flush's every frame
                for i, v in enumerate(values):
                    dataset[start + i] = v
            else:
                dataset[start:] = np.array(values)  # same-shaped rows; 10x faster than stacking 0-d arrays
            written = len(values)
        self._pending.clear()
        return written


class EpisodeWriter:
    """Writes one episode file from samples, synced rows and events submitted by other threads."""

    def __init__(self, directory: str | Path, metadata: EpisodeMetadata, config: WriterConfig | None = None,
                 max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES):
        self.metadata = metadata
        self.config = config or WriterConfig()
        directory = Path(directory)
        self.final_path = directory / f"{metadata.episode_name}{EPISODE_SUFFIX}"
        self.partial_path = self.final_path.with_name(self.final_path.name + PARTIAL_SUFFIX)
        # Samples are bounded (in count per stream, and in bytes); rows, events, attributes and annotations
        # are small and never dropped, so they do not count against the bound.
        self._queue: queue.Queue = queue.Queue()
        self._queued_samples: Counter = Counter()
        self._refused_tail: dict[str, tuple[int, int]] = {}  # stream -> (sender, seq) of its last refused sample
        self._published: dict[str, tuple[int, int]] = {}  # stream -> (sender, seq) its driver published by the stop
        rates = metadata.expected_rates_hz or {}
        total_rate = sum(rates.values()) or 1.0
        self._stream_cap = {s: max(50, int(self.config.queue_size * r / total_rate)) for s, r in rates.items()}
        self._max_queue_bytes = max_queue_bytes
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._file: h5py.File | None = None
        self._streams: dict[str, _Table] = {}
        self._written_counts: dict[str, dict] = {}  # the loss counters last written per stream
        self._tables: dict[str, _Table] = {}
        self._last_seq: dict[str, int] = {}
        self._last_t: dict[str, int] = {}
        self._sender: dict[str, int] = {}
        self._epoch: Counter = Counter()
        self._pending_attrs: dict[str, dict] = defaultdict(dict)
        self._row_of_seq: dict[str, dict[int, int]] = defaultdict(dict)
        self._written: Counter = Counter()
        self._overflow: Counter = Counter()
        self._seq_gaps: Counter = Counter()
        self._non_monotonic: Counter = Counter()
        self._video_undecodable: Counter = Counter()  # video frames after a lost one, until the next keyframe
        self._video_preroll: Counter = Counter()       # video frames before a sender's first keyframe
        self._video_streams: set[str] = set()
        self._undecodable_run: dict[str, int | None] = {}  # stream -> last stored packet (None: none) of its current run
        self._last_packet: dict[str, int] = {}  # video stream -> the encoder's number of its last stored packet
        self._error: WriterError | None = None
        self._finished = threading.Event()
        self._end_ns = 0
        self._annotations: list | None = None
        self._annotations_changed = False
        self._pending_bytes = 0       # data appended to tables since the last flush
        self.stopped_cleanly = False  # a disk-full stop closed the file with everything before it readable
        self._values_repaired = 0
        self._stored_ratios: deque = deque(maxlen=5)  # file growth / bytes appended, of the last flushes
        self._items_refused = 0

    # --- producer side (any thread) --------------------------------------------
    def start(self) -> "EpisodeWriter":
        """Create the .partial file with its metadata and start the writer thread."""
        try:
            self.final_path.parent.mkdir(parents=True, exist_ok=True)
            if self.final_path.exists() or self.partial_path.exists():
                raise WriterError(f"episode {self.final_path} already exists; choose another episode name")
            # Created under a temporary name and renamed once its metadata is flushed: a kill during creation
            # never leaves a .partial that cannot be opened (only a stray .creating file).
            creating = self.partial_path.with_name(self.partial_path.name + ".creating")
            try:
                self._file = open_hdf5(creating, "w")
                self._write_metadata()
                self._file.flush()
                creating.replace(self.partial_path)
            except BaseException:  # nothing is left behind by a start that failed
                self._close_file()
                creating.unlink(missing_ok=True)
                raise
        except (OSError, ValueError, TypeError) as exc:
            raise WriterError(f"cannot create episode file {self.partial_path}: {exc}; check that the output "
                              f"directory exists, is writable and has free space") from None
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()
        return self

    def _enqueue(self, item: tuple) -> bool:
        """Queue a row, an event, attributes or annotations: never refused while the writer runs."""
        with self._lock:
            if self._error is not None or self._finished.is_set():
                return False
            self._queue.put_nowait(item)
            return True

    def submit(self, message: Message) -> bool:
        """Queue one sample; False (and counted as overflow of its stream) when that stream's share of the
        queue, or the byte bound, is used up: a flooding stream loses its own samples, not others'. Never blocks."""
        return self.submit_many([message]) == 1

    def submit_many(self, messages: list[Message]) -> int:
        """Queue samples in order as one queue entry (one wake-up of the writer for a batch); each is accepted
        or refused (counted) as by ``submit``. Returns how many were accepted. Never blocks."""
        accepted = []
        with self._lock:
            if self._error is not None or self._finished.is_set():
                return 0
            for message in messages:
                stream = message.stream
                cap = self._stream_cap.get(stream, 50)
                if self._queued_samples[stream] >= cap or self._queued_bytes + message.nbytes > self._max_queue_bytes:
                    self._overflow[stream] += 1
                    self._refused_tail[stream] = (message.sender, message.seq)
                    continue
                accepted.append(message)
                self._queued_samples[stream] += 1
                self._queued_bytes += message.nbytes
            if accepted:
                self._queue.put_nowait(("samples", accepted))
        return len(accepted)

    def submit_row(self, table: str, row) -> bool:
        """Queue one row of a table such as 'synced': a dict (column -> value), or an object whose
        ``row()`` makes that dict, called on the writer thread (keeps the work off the caller's)."""
        return self._enqueue(("row", table, row))

    def log_event(self, level: str, source: str, message: str, t_ns: int | None = None) -> None:
        """Record an event (error, warning, gap, operator action) in /events. Any value is recorded: text
        is made storable (control characters and lone surrogates escaped, cut to MAX_TEXT_CHARS) and a
        ``t_ns`` that is not an int64 time is replaced by now; each such repair is counted
        (``values_repaired``) and said in the message."""
        t = now_ns() if t_ns is None else storable_t_ns(t_ns)
        (level, fixed_level), (source, fixed_source) = (storable_text(level, MAX_NAME_CHARS),
                                                        storable_text(source, MAX_NAME_CHARS))
        message, fixed = storable_text(message)
        notes = [*(["text escaped or cut"] if fixed or fixed_level or fixed_source else []),
                 *([f"t_ns {t_ns!r:.40} is not a time: stamped on arrival"] if t is None else [])]
        if notes:
            with self._lock:
                self._values_repaired += 1
            message += f" [made storable: {'; '.join(notes)}]"
        self._enqueue(("event", now_ns() if t is None else t, level, source, message))

    def set_stream_attrs(self, stream: str, attrs: dict[str, Any]) -> None:
        """Attributes for /streams/<stream> (device info, for example); JSON-encoded when not scalar."""
        self.set_attrs(f"streams/{stream}", attrs)

    def set_attrs(self, group: str, attrs: dict[str, Any]) -> None:
        """Attributes for a group ('synced', 'streams/<stream>'), applied once the group exists."""
        self._enqueue(("attrs", group, attrs))

    def set_annotations(self, segments: list) -> None:
        """Subtask segments (capture_app.episode.annotations.Segment) to store in /annotations/subtasks, replacing
        what is there, at the next flush (an open segment has end_ns -1)."""
        self._enqueue(("annotations", list(segments)))

    def make_durable(self, timeout_s: float = 60.0) -> bool:
        """Flush everything submitted so far to disk and wait for it; False if the writer failed, stopped or
        did not get there within ``timeout_s`` (a loaded disk): then nothing is promised."""
        done = threading.Event()
        if not self._enqueue(("durable", done)):
            return False
        return done.wait(timeout_s) and self._error is None

    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(Counter(self._written), Counter(self._overflow), Counter(self._seq_gaps),
                               sum(self._queued_samples.values()), self._queued_bytes, str(self._error or ""),
                               Counter(self._video_undecodable), self._values_repaired, self._items_refused)

    @property
    def error(self) -> WriterError | None:
        return self._error

    def finish(self, attrs: dict[str, Any] | None = None, timeout: float = 60.0) -> Path:
        """Drain the queue, write final attributes, close and rename to ``.h5``. Returns the final path.

        On a writer error the file is kept as ``.partial`` (everything flushed so far is
        readable) and the error is raised.
        """
        self._end_ns = now_ns()
        self._queue.put(("final", attrs or {}))
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise WriterError(f"episode writer did not finish within {timeout:.0f} s; {self.partial_path} "
                                  f"holds what was flushed")
        if self._error is not None:
            if self.stopped_cleanly:  # a readable file marked failed: give it its final name
                self.partial_path.replace(self.final_path)
            raise self._error
        self.partial_path.replace(self.final_path)
        return self.final_path

    def discard(self) -> None:
        """Stop writing and delete the partial file (the operator threw the take away)."""
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(30)
        self._close_file()
        self.partial_path.unlink(missing_ok=True)

    # --- the writer thread --------------------------------------------------------
    def _write_metadata(self) -> None:
        m = self.metadata
        a = self._file.attrs
        a["format"] = FORMAT_NAME
        a["format_version"] = FORMAT_VERSION
        a["status"] = "recording"
        a["software_version"] = __version__
        a["created_wall_time"] = wall_clock_iso()
        a["start_monotonic_ns"] = now_ns()
        _set_attrs(a, {"episode_name": m.episode_name, "instruction": m.instruction, "task": m.task,  # made storable
                       "operator": m.operator, "rig_name": m.rig_name, "rig_config": m.rig_config_text})
        a["device_serials"] = json.dumps(m.device_serials)
        a["simulated"] = m.simulated
        a["sim_seed"] = m.sim_seed
        a["expected_rates_hz"] = json.dumps(m.expected_rates_hz)
        calibration = self._file.create_group("calibration")
        calibration.attrs["json"] = m.calibration_json
        calibration.attrs["calibration_id"] = m.calibration_id
        self._file.create_group("streams")
        events = self._file.create_group("events")
        self._tables["events"] = table = _Table(events)
        for column in ("level", "source", "message"):
            table.mark(column, "text")

    def _run(self) -> None:
        # Not niced: with other processes busy on the machine a niced writer starved and refused samples.
        prioritise_recorder_thread()
        interval_ns = int(self.config.flush_interval_s * NS_PER_S)
        next_flush = now_ns() + interval_ns
        try:
            stopping = False
            while not stopping:
                items = []
                try:
                    items.append(self._queue.get(timeout=max(0.0, (next_flush - now_ns()) / NS_PER_S)))
                    while True:  # and whatever else is waiting
                        items.append(self._queue.get_nowait())
                except queue.Empty:
                    pass
                for item in items:
                    if item is _STOP:
                        stopping = True
                        break
                    self._handle_or_refuse(item)
                if now_ns() >= next_flush:
                    self._flush()
                    next_flush = now_ns() + interval_ns
                elif items and not stopping:  # let the next items gather: one wake-up per WRITER_GATHER_S, not per item
                    time.sleep(min(WRITER_GATHER_S, max(0.0, (next_flush - now_ns()) / NS_PER_S)))
            self._flush()
        except DiskFullStop as exc:
            self._stop_for_disk_full(str(exc))
        except OSError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug must not lose the file: report it, keep what was flushed
            log.exception("episode writer crashed")
            self._fail(exc)
        finally:
            self._finished.set()
            self._close_file()

    def _fail(self, exc: BaseException) -> None:
        text = str(exc)
        disk_full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text or "errno = 28" in text
        if disk_full:
            free = shutil.disk_usage(self.partial_path.parent).free / 1e6
            fix = f"The disk is full ({free:.0f} MB free): free space or record to another --out directory."
        elif isinstance(exc, OSError):
            fix = "Check the output directory's permissions and device."
        else:
            fix = "This is a bug in capture-app: please report it with the log above."
        self._error = WriterError(
            f"writing {self.partial_path} failed: {type(exc).__name__}: {text}. Recording stopped; everything "
            f"flushed before this is kept in the .partial file. {fix}")
        log.error("%s", self._error)

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception as exc:
                log.error("closing %s failed: %s", self.partial_path, exc)
            self._file = None

    def _handle_or_refuse(self, item: tuple) -> None:
        """Handle one queued item; one whose value cannot be stored is refused, counted and logged as an
        event, and the writer goes on (the file and every other item are unaffected). Errors of the file
        itself (OSError, a full disk) still stop the writer."""
        try:
            self._handle(item)
        except (OSError, DiskFullStop):
            raise
        except Exception as exc:
            log.exception("episode writer: refused a %s item", item[0])
            with self._lock:
                self._items_refused += 1
            text, _ = storable_text(f"the writer refused a {item[0]} it could not store: {type(exc).__name__}: "
                                    f"{exc} ({self._items_refused} refused so far)")
            self._tables["events"].append({"t_ns": np.int64(now_ns()), "level": "error", "source": "writer",
                                           "message": text})

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "samples":
            messages: list[Message] = item[1]
            with self._lock:
                for message in messages:
                    self._queued_bytes -= message.nbytes
                    self._queued_samples[message.stream] -= 1
            for message in messages:
                self._append_sample(message)
        elif kind == "row":
            row = item[2] if isinstance(item[2], dict) else item[2].row()
            if "stream_seq" in row:
                row["stream_index"] = self._rows_of(row["stream_seq"])
            table = self._tables.get(item[1])
            if table is None:
                group = self._file.require_group(item[1])
                table = self._tables[item[1]] = _Table(group)
            table.append(row)
        elif kind == "event":
            _, t_ns, level, source, text = item
            self._tables["events"].append({"t_ns": np.int64(t_ns), "level": level, "source": source, "message": text})
        elif kind == "attrs":
            self._pending_attrs[item[1]].update(item[2])
        elif kind == "annotations":
            self._annotations = [_storable_segment(seg) for seg in item[1]]
            self._annotations_changed = True
        elif kind == "durable":
            self._flush()
            item[1].set()
        elif kind == "final":
            self._finalize(item[1])

    def _stream_table(self, message: Message) -> _Table:
        table = self._streams.get(message.stream)
        if table is None:
            group = self._file["streams"].create_group(message.stream)
            group.attrs["kind"] = STREAM_KINDS.get(message.stream, "unknown")
            group.attrs["expected_rate_hz"] = float(self.metadata.expected_rates_hz.get(message.stream, 0.0))
            table = self._streams[message.stream] = _Table(group)
            for name, array in message.arrays.items():
                encoding = message.encodings[name]
                if encoding == "h264":
                    table.mark(name, "bytes")
                    group.attrs[f"{name}_encoding"] = "h264"
                    group.attrs[f"{name}_shape"] = list(message.shapes[name])
                    self._video_streams.add(message.stream)
                elif encoding == "jpeg" or (array.dtype == np.uint8 and array.ndim == 3 and name == "color"):
                    if message.stream in self.config.video_streams:  # never silently: the take start checks this too
                        self._tables["events"].append({
                            "t_ns": np.int64(message.t_receive_ns), "level": "error", "source": message.stream,
                            "message": f"{message.stream} is in [writer] video_streams but arrived as {encoding} "
                                       f"colour: stored as JPEG (its driver does not encode H.264)"})
                    table.mark(name, "bytes")
                    group.attrs[f"{name}_encoding"] = "jpeg"
                    group.attrs[f"{name}_shape"] = list(message.shapes[name])
                elif name == "depth":
                    table.mark(name, "depth")
                    group.attrs["depth_scale_m"] = float(message.meta.get("depth_scale_m", 0.001))
        return table

    def _append_sample(self, message: Message) -> None:
        stream = message.stream
        if stream in self._sender and message.sender != self._sender[stream]:
            # a new sender (the driver process was restarted): its seq starts afresh; the gap in time stays visible
            self._epoch[stream] += 1
            self._last_seq.pop(stream, None)
            self._last_packet.pop(stream, None)
            self._tables["events"].append({
                "t_ns": np.int64(message.t_receive_ns), "level": "warning", "source": stream,
                "message": f"new sender on {stream} (driver restarted): sender epoch {self._epoch[stream]}; samples "
                           f"between the last one of the old sender and this one were not captured"})
        self._sender[stream] = message.sender
        last_seq = self._last_seq.get(stream)
        last_t = self._last_t.get(stream)
        if last_seq is not None and (message.seq <= last_seq or message.t_capture_ns <= last_t):
            self._non_monotonic[stream] += 1
            self._tables["events"].append({
                "t_ns": np.int64(message.t_receive_ns), "level": "error", "source": stream,
                "message": f"non-monotonic sample rejected: seq {message.seq} after {last_seq}, t_capture "
                           f"{message.t_capture_ns} after {last_t} (check the driver's clock)"})
            return
        if message.encodings.get("color") == "h264":
            last_packet = self._last_packet.get(stream)
            if not message.meta["keyframe"] and (last_packet is None or message.meta["packet"] != last_packet + 1):
                self._drop_undecodable(message, last_packet)
                return
            self._last_packet[stream] = message.meta["packet"]
        if last_seq is not None and message.seq > last_seq + 1:
            with self._lock:
                self._seq_gaps[stream] += message.seq - last_seq - 1
        self._last_seq[stream] = message.seq
        self._last_t[stream] = message.t_capture_ns
        table = self._stream_table(message)
        row = {
            "seq": np.uint64(message.seq),
            "t_capture_ns": np.int64(message.t_capture_ns),
            "t_device_ns": np.int64(NO_DEVICE_TIME if message.t_device_ns is None else message.t_device_ns),
            "t_publish_ns": np.int64(message.t_publish_ns),
            "t_receive_ns": np.int64(message.t_receive_ns),
            "tracking": np.uint8(TRACKING_CODES[message.tracking]),
            "sender_epoch": np.uint16(self._epoch[stream]),
            "clock_offset_ns": np.int64(message.clock_offset_ns),
        }
        for name, array in message.arrays.items():
            if table._special.get(name) == "bytes" and message.encodings[name] == "raw":
                try:  # a driver that did not encode its frames (encode_in = "writer", or a remote driver)
                    row[name] = encode_jpeg(array, self.config.jpeg_quality)
                except EncodeError as exc:
                    raise WriterError(f"{stream} seq {message.seq}: {exc}") from None
            else:
                row[name] = array
            if message.encodings[name] == "h264":
                row[f"{name}_keyframe"] = np.bool_(message.meta["keyframe"])
                row[f"{name}_packet"] = np.uint64(message.meta["packet"])
        table.append(row)
        self._pending_bytes += message.nbytes + ROW_HEADER_BYTES  # JPEG encoded here only shrinks it
        rows = self._row_of_seq[stream]
        rows[message.seq] = self._written[stream]
        if len(rows) > 2048:
            del rows[next(iter(rows))]
        with self._lock:
            self._written[stream] += 1

    def _drop_undecodable(self, message: Message, last_packet: int | None) -> None:
        """A video frame whose predecessor packet was not stored (the episode's first frames before a
        keyframe, or the frames after a lost packet) cannot be decoded: it is counted and not stored, so that
        every stored frame decodes. Logged once per run of such frames."""
        stream = message.stream
        with self._lock:
            (self._video_preroll if last_packet is None else self._video_undecodable)[stream] += 1
        if self._undecodable_run.get(stream, -1) != last_packet:  # the first frame of a run: say why
            self._undecodable_run[stream] = last_packet
            why = ("before the episode's first keyframe" if last_packet is None else
                   f"after a lost packet (packet {last_packet} was the last stored, seq {self._last_seq.get(stream)})")
            self._tables["events"].append({
                "t_ns": np.int64(message.t_receive_ns), "level": "info" if last_packet is None else "warning",
                "source": stream, "message": f"video frames {why} cannot be decoded: not stored until the next "
                                             f"keyframe (counted in video_{'preroll' if last_packet is None else 'undecodable'})"})

    def _rows_of(self, stream_seq: np.ndarray) -> np.ndarray:
        """Row indices in /streams/<s> of the samples a synced row used (-1: none, or not stored)."""
        return np.array([self._row_of_seq[s].get(int(q), -1) if q >= 0 else -1
                         for s, q in zip(SYNCED_STREAMS, stream_seq)], np.int64)

    def _check_free_space(self) -> None:
        """Stop before a flush that may not fit. Its size on disk is estimated from the bytes it appends
        times the stored/appended ratio of the last flushes (depth is compressed ~10-100x), doubled for
        safety; 1 until a flush was measured."""
        free = shutil.disk_usage(self.partial_path.parent).free
        needed = int(self._pending_bytes * min(1.0, 2 * max(self._stored_ratios, default=0.5)))
        if free < needed + DISK_MARGIN_BYTES:
            raise DiskFullStop(f"{free / 1e6:.1f} MB free, the next flush needs about {needed / 1e6:.1f} MB "
                               f"plus a {DISK_MARGIN_BYTES / 1e6:.0f} MB reserve")

    def _measure_stored_ratio(self, appended: int, size_before: int) -> None:
        """Remember how many bytes a flush of ``appended`` bytes added to the file (for the next estimate)."""
        if appended < STORED_RATIO_MIN_BYTES:
            return
        try:
            grown = self.partial_path.stat().st_size - size_before
        except OSError:
            return
        self._stored_ratios.append(max(0.0, grown / appended))

    def _stop_for_disk_full(self, detail: str) -> None:
        """Drop what is not yet written (counted), close the file cleanly as 'failed', report the error."""
        dropped = Counter()
        for stream, table in self._streams.items():
            dropped[stream] = len(table._pending.get("seq", []))
            table._pending.clear()
        for table in self._tables.values():
            table._pending.clear()
        text = (f"the disk of {self.partial_path.parent} is nearly full ({detail}): recording stopped before it "
                f"could corrupt the file; everything written before is kept. Free space or record to another --out "
                f"directory.")
        try:
            a = self._file.attrs
            a["status"] = "failed"
            a["failure"] = text
            a["end_monotonic_ns"] = now_ns()
            a["disk_full_dropped"] = json.dumps({k: v for k, v in dropped.items() if v})
            self._file.flush()
            self.stopped_cleanly = True
        except OSError as exc:
            text += f" (marking the file failed also failed: {exc}; run `capture-app recover`)"
        self._error = WriterError(f"writing {self.partial_path} stopped: {text}")
        log.error("%s", self._error)

    def note_published(self, published: dict[str, tuple[int, int]]) -> None:
        """Before ``finish``: per stream, (sender, seq) of the newest sample its driver had published by the stop
        (its last status before the stop). The sequence numbers after the last one stored (or refused) from the
        same sender are stored as the stream attribute ``undelivered``."""
        self._published = dict(published)

    def _undelivered(self, stream: str) -> int:
        published = self._published.get(stream)
        last = self._last_seq.get(stream)
        if published is None or last is None or published[0] != self._sender.get(stream):
            return 0
        refused = self._refused_tail.get(stream)
        if refused is not None and refused[0] == published[0]:
            last = max(last, refused[1])
        return max(0, int(published[1]) - last)

    def _tail_gap(self, stream: str) -> int:
        """Samples refused after the last one stored (no later sample shows them as a gap)."""
        refused = self._refused_tail.get(stream)
        last = self._last_seq.get(stream)
        if refused is None or last is None or refused[0] != self._sender.get(stream) or refused[1] <= last:
            return 0
        return refused[1] - last

    def _flush(self) -> None:
        self._check_free_space()
        appended, self._pending_bytes = self._pending_bytes, 0
        try:
            size_before = self.partial_path.stat().st_size
        except OSError:
            size_before = None
        for table in list(self._streams.values()) + list(self._tables.values()):
            table.write()
        for stream, table in self._streams.items():
            with self._lock:
                counts = {"seq_gaps": int(self._seq_gaps[stream]) + self._tail_gap(stream),
                          "writer_overflow": int(self._overflow[stream])}
            counts["non_monotonic"] = int(self._non_monotonic[stream])
            if stream in self._video_streams:
                counts["video_undecodable"] = int(self._video_undecodable[stream])
                counts["video_preroll"] = int(self._video_preroll[stream])
            if self._written_counts.get(stream) != counts:  # an attribute write costs ~0.1 ms: only on change
                _set_attrs(table.group.attrs, counts)
                self._written_counts[stream] = counts
        if self._values_repaired or self._items_refused:
            _set_attrs(self._file.attrs, {"writer_values_repaired": self._values_repaired,
                                          "writer_items_refused": self._items_refused})
        for path in [p for p in self._pending_attrs if _exists(self._file, p)]:
            _set_attrs(self._file[path], self._pending_attrs.pop(path))
        if self._annotations_changed:  # marks made while recording are on disk within a flush
            write_segments(self._file, self._annotations)
            self._annotations_changed = False
        self._file.flush()
        if size_before is not None:
            self._measure_stored_ratio(appended, size_before)

    def _finalize(self, attrs: dict[str, Any]) -> None:
        for stream, table in self._streams.items():
            _set_attrs(table.group.attrs, {"undelivered": self._undelivered(stream)})
        for stream in sorted(set(self.metadata.expected_rates_hz) - set(self._streams)):
            self._tables["events"].append({
                "t_ns": np.int64(self._end_ns), "level": "error", "source": stream,
                "message": f"stream {stream} delivered no sample during the episode (see the driver errors above)"})
        self._flush()
        a = self._file.attrs
        _set_attrs(a, attrs)
        a["end_monotonic_ns"] = self._end_ns
        if self._annotations is not None:  # again: the tick indices now see the whole /synced table
            write_segments(self._file, self._annotations)
        a["status"] = "complete"
        self._file.flush()


def _storable_segment(segment):
    """A subtask segment whose texts HDF5 stores and whose times are int64 (an open end stays -1)."""
    from dataclasses import replace
    start = storable_t_ns(segment.start_ns)
    end = -1 if segment.end_ns == -1 else storable_t_ns(segment.end_ns)
    return replace(segment, label=storable_text(segment.label, MAX_NAME_CHARS)[0],
                   description=storable_text(segment.description)[0], hand=storable_text(segment.hand, MAX_NAME_CHARS)[0],
                   start_ns=0 if start is None else start, end_ns=-1 if end is None else end)


def _exists(f: h5py.File, path: str) -> bool:
    """Whether ``path`` names an object in ``f``; False for a name HDF5 cannot look up (a NUL in it)."""
    try:
        return path in f
    except (ValueError, TypeError, UnicodeError):
        return False
