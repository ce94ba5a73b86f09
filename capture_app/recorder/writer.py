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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from capture_app.episode.annotations import write_segments
from capture_app.bus.message import Message, SampleBlock
from capture_app.core.clock import NS_PER_S, now_ns
from capture_app.rig.config import WriterConfig
from capture_app.episode.file import open_hdf5
from capture_app.episode.format import EPISODE_SUFFIX, PARTIAL_SUFFIX
from capture_app.core.errors import WriterError
from capture_app.rig.priority import prioritise_recorder_thread
from capture_app.core.values import MAX_NAME_CHARS, storable_t_ns, storable_text
from capture_app.recorder.columns import ColumnTable, exists, set_attrs
from capture_app.recorder.disk_guard import DiskFullStop, DiskGuard
from capture_app.recorder.episode_header import EpisodeMetadata, write_header
from capture_app.recorder.stream_store import StreamStore
from capture_app.recorder.writer_budget import DEFAULT_MAX_QUEUE_BYTES, shed_limit, whole_or_split
from capture_app.recorder.final_follower import SAMPLE_COLUMNS, VALUE_COLUMN
from capture_app.core.streams import SYNCED_STREAMS

log = logging.getLogger(__name__)

# the writer sleeps this long after draining its queue: the dispatcher queues a batch every few ms and the
# file is flushed every flush_interval_s anyway; waking for each batch cost ~1 ms of CPU per tick
WRITER_GATHER_S = 0.01
_STOP = object()


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
    depth_cpu_s: float = 0.0  # CPU seconds the depth filter (Blosc in HDF5) took: part of the encoders' floor


class EpisodeWriter:
    """Writes one episode file from samples, synced rows and events submitted by other threads."""

    def __init__(self, directory: str | Path, metadata: EpisodeMetadata, config: WriterConfig | None = None,
                 max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES, follower=None):
        self.metadata = metadata
        self.follower = follower  # a FinalTableFollower fed every flushed block of the synced streams, or None
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
        self._store: StreamStore | None = None  # /streams, once the file exists
        self._written_counts: dict[str, dict] = {}  # the loss counters last written per stream
        self._tables: dict[str, ColumnTable] = {}  # /events, /synced and other tables of rows
        self._pending_attrs: dict[str, dict] = defaultdict(dict)
        self._overflow: Counter = Counter()
        self._error: WriterError | None = None
        self._finished = threading.Event()
        self._end_ns = 0
        self._annotations: list | None = None
        self._annotations_changed = False
        self.stopped_cleanly = False  # a disk-full stop closed the file with everything before it readable
        self._values_repaired = 0
        self._disk = DiskGuard(self.partial_path)
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
            for message in whole_or_split(messages, self._queued_samples, self._stream_cap, self._queued_bytes,
                                           self._max_queue_bytes):
                stream = message.stream
                if isinstance(message, SampleBlock):  # fits whole (_whole_or_split)
                    accepted.append(message)
                    self._queued_samples[stream] += message.n
                    self._queued_bytes += message.nbytes
                    continue
                cap = self._stream_cap.get(stream, 50)
                byte_limit = shed_limit(stream, self._max_queue_bytes)
                if self._queued_samples[stream] >= cap or self._queued_bytes + message.nbytes > byte_limit:
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
            store = self._store
            return WriterStats(Counter(store.written if store else ()), Counter(self._overflow),
                               Counter(store.seq_gaps if store else ()), sum(self._queued_samples.values()),
                               self._queued_bytes, str(self._error or ""),
                               Counter(store.video_undecodable if store else ()), self._values_repaired,
                               self._items_refused,
                               sum(t.depth_cpu_ns for t in list(store.tables.values())) / 1e9 if store else 0.0)

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
        write_header(self._file, self.metadata)
        events = self._file.create_group("events")
        self._tables["events"] = table = ColumnTable(events)
        for column in ("level", "source", "message"):
            table.mark(column, "text")
        self._store = StreamStore(self._file.create_group("streams"), self.metadata.expected_rates_hz, self.config.video_streams,
                                  self.config.jpeg_quality, self._append_event, self._lock)

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
                    self._queued_samples[message.stream] -= getattr(message, "n", 1)
            for message in messages:
                if isinstance(message, SampleBlock):
                    self._store.append_block(message)
                else:
                    self._store.append(message)
        elif kind == "row":
            row = item[2] if isinstance(item[2], dict) else item[2].row()
            if "stream_seq" in row:
                row["stream_index"] = self._store.rows_of(row["stream_seq"])
            table = self._tables.get(item[1])
            if table is None:
                group = self._file.require_group(item[1])
                table = self._tables[item[1]] = ColumnTable(group)
            table.append(row)
        elif kind == "event":
            self._append_event(*item[1:])
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

    def _append_event(self, t_ns: int, level: str, source: str, message: str) -> None:
        """Append a row to /events (writer thread only; values already storable)."""
        self._tables["events"].append({"t_ns": np.int64(t_ns), "level": level, "source": source, "message": message})

    def _stop_for_disk_full(self, detail: str) -> None:
        """Drop what is not yet written (counted), close the file cleanly as 'failed', report the error."""
        dropped = Counter()
        self._store.settle()
        for stream, table in self._store.tables.items():
            dropped[stream] = table.pending_rows("seq")
            table.drop_pending()
        for table in self._tables.values():
            table.drop_pending()
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

    def _flush(self) -> None:
        store = self._store
        self._disk.check(store.appended_bytes)
        appended = store.take_appended_bytes()
        size_before = self._disk.file_size()
        store.settle()
        for table in list(store.tables.values()) + list(self._tables.values()):
            table.write()
        for stream, table in store.tables.items():
            with self._lock:
                counts = store.loss_counts(stream, self._refused_tail.get(stream), self._overflow[stream])
            if self._written_counts.get(stream) != counts:  # an attribute write costs ~0.1 ms: only on change
                set_attrs(table.group.attrs, counts)
                self._written_counts[stream] = counts
        if self._values_repaired or self._items_refused:
            set_attrs(self._file.attrs, {"writer_values_repaired": self._values_repaired,
                                          "writer_items_refused": self._items_refused})
        for path in [p for p in self._pending_attrs if exists(self._file, p)]:
            set_attrs(self._file[path], self._pending_attrs.pop(path))
        if self._annotations_changed:  # marks made while recording are on disk within a flush
            write_segments(self._file, self._annotations)
            self._annotations_changed = False
        self._file.flush()
        self._disk.measured(appended, size_before)
        if self.follower is not None:  # what is on disk now, in the order stored
            for stream, table in store.tables.items():
                if table.last_written and stream in SYNCED_STREAMS:
                    self.follower.feed(stream, {name: table.last_written[name]
                                                for name in (*SAMPLE_COLUMNS, *VALUE_COLUMN.values())
                                                if name in table.last_written})

    def _finalize(self, attrs: dict[str, Any]) -> None:
        store = self._store
        for stream, table in store.tables.items():
            undelivered = store.undelivered(stream, self._published.get(stream), self._refused_tail.get(stream))
            set_attrs(table.group.attrs, {"undelivered": undelivered})
        for stream in sorted(set(self.metadata.expected_rates_hz) - set(store.tables)):
            self._tables["events"].append({
                "t_ns": np.int64(self._end_ns), "level": "error", "source": stream,
                "message": f"stream {stream} delivered no sample during the episode (see the driver errors above)"})
        self._flush()
        a = self._file.attrs
        set_attrs(a, attrs)
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
