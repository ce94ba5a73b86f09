"""The writer's per-stream sample path: each sample checked against its stream's sequence, appended to
``/streams/<name>`` and accounted for.

Used only on the writer's thread, except the counters that ``lock`` guards (read by ``EpisodeWriter.stats``
from other threads). What it counts per stream (docs/episode-format.md): ``seq_gaps`` (sequence numbers
never stored, including those refused after the last one stored), ``non_monotonic`` (samples refused
because their seq or capture time went backwards), for H.264 streams ``video_preroll`` and
``video_undecodable`` (frames that could not be decoded, not stored), and at the end ``undelivered``
(published by the driver before the stop, never received).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from typing import Callable

import h5py
import numpy as np

from capture_app.bus.message import Message, SampleBlock
from capture_app.core.errors import WriterError
from capture_app.core.streams import STREAM_KINDS, SYNCED_STREAMS
from capture_app.episode.format import NO_DEVICE_TIME, TRACKING_CODES
from capture_app.episode.image_codec import EncodeError, encode_jpeg
from capture_app.recorder.columns import ColumnTable

ROW_HEADER_BYTES = 64  # a sample's seq, times, tracking, epoch and offset columns
ROW_RUNS_REMEMBERED = 256  # per stream: runs of consecutive seqs stored in consecutive rows (``rows_of``)

EventSink = Callable[[int, str, str, str], None]  # (t_ns, level, source, message) -> appended to /events


class StreamStore:
    """The /streams group of one episode file: a ColumnTable per stream and its sequence bookkeeping."""

    def __init__(self, streams_group: h5py.Group, expected_rates_hz: dict[str, float], video_streams: list[str],
                 jpeg_quality: int, event: EventSink, lock: threading.Lock):
        self.group = streams_group
        self.tables: dict[str, ColumnTable] = {}
        self._expected = expected_rates_hz
        self._configured_video = set(video_streams)
        self._jpeg_quality = jpeg_quality
        self._event = event
        self._lock = lock
        self.written: Counter = Counter()   # under lock
        self.seq_gaps: Counter = Counter()  # under lock
        self.video_undecodable: Counter = Counter()  # under lock: video frames after a lost one, until a keyframe
        self.video_preroll: Counter = Counter()      # under lock: video frames before a sender's first keyframe
        self.non_monotonic: Counter = Counter()
        self.video_streams: set[str] = set()
        self.appended_bytes = 0  # since the last take_appended_bytes()
        self._last_seq: dict[str, int] = {}
        self._last_t: dict[str, int] = {}
        self._sender: dict[str, int] = {}
        self._epoch: Counter = Counter()
        self._row_runs: dict[str, deque] = defaultdict(deque)  # stream -> (first seq, first row, n), oldest first
        self._deferred: dict[str, list] = defaultdict(list)  # stream -> (batch, sender epoch) not yet in its table
        self._undecodable_run: dict[str, int | None] = {}  # stream -> last stored packet (None: none) of its run
        self._last_packet: dict[str, int] = {}  # video stream -> the encoder's number of its last stored packet

    def take_appended_bytes(self) -> int:
        """Bytes appended since the last call (raw sizes: JPEG encoded here only shrinks them)."""
        appended, self.appended_bytes = self.appended_bytes, 0
        return appended

    def append(self, message: Message) -> None:
        """Store one sample, or refuse it (counted, with an event) when its seq or capture time goes backwards,
        or when it is an H.264 frame that cannot be decoded."""
        stream = message.stream
        if self._deferred.get(stream):  # rows stay in arrival order
            self._settle_stream(stream)
        if stream in self._sender and message.sender != self._sender[stream]:
            # a new sender (the driver process was restarted): its seq starts afresh; the gap in time stays visible
            self._epoch[stream] += 1
            self._last_seq.pop(stream, None)
            self._last_packet.pop(stream, None)
            self._event(message.t_receive_ns, "warning", stream,
                        f"new sender on {stream} (driver restarted): sender epoch {self._epoch[stream]}; samples "
                        f"between the last one of the old sender and this one were not captured")
        self._sender[stream] = message.sender
        last_seq = self._last_seq.get(stream)
        last_t = self._last_t.get(stream)
        if last_seq is not None and (message.seq <= last_seq or message.t_capture_ns <= last_t):
            self.non_monotonic[stream] += 1
            self._event(message.t_receive_ns, "error", stream,
                        f"non-monotonic sample rejected: seq {message.seq} after {last_seq}, t_capture "
                        f"{message.t_capture_ns} after {last_t} (check the driver's clock)")
            return
        if message.encodings.get("color") == "h264":
            last_packet = self._last_packet.get(stream)
            if not message.meta["keyframe"] and (last_packet is None or message.meta["packet"] != last_packet + 1):
                self._drop_undecodable(message, last_packet)
                return
            self._last_packet[stream] = message.meta["packet"]
        if last_seq is not None and message.seq > last_seq + 1:
            with self._lock:
                self.seq_gaps[stream] += message.seq - last_seq - 1
        self._last_seq[stream] = message.seq
        self._last_t[stream] = message.t_capture_ns
        table = self._table_of(message)
        table.append(self._row(message, table))
        self.appended_bytes += message.nbytes + ROW_HEADER_BYTES
        self._remember_rows(stream, message.seq, 1)
        with self._lock:
            self.written[stream] += 1

    def append_block(self, block: SampleBlock) -> None:
        """Store a batch of samples as ``append`` of each would: when every one of them would be stored (the
        stream's sender, seq and capture time increasing, plain array columns), its bookkeeping is done now and
        its rows are built with the stream's other such batches at the next ``settle``; one by one otherwise."""
        stream = block.stream
        last_seq, last_t = self._last_seq.get(stream), self._last_t.get(stream)
        table = self.tables.get(stream)
        t = block.t_capture_ns
        if (self._sender.get(stream) != block.sender or last_seq is None or block.seq <= last_seq
                or t[0] <= last_t or (block.n > 1 and bool((t[1:] <= t[:-1]).any())) or table is None
                or any(table.kind(name) is not None for name in block.arrays)):
            for message in block.messages():
                self.append(message)
            return
        deferred = self._deferred[stream]
        if deferred and deferred[-1][0].arrays.keys() != block.arrays.keys():
            self._settle_stream(stream)
        if block.seq > last_seq + 1:
            with self._lock:
                self.seq_gaps[stream] += block.seq - last_seq - 1
        n = block.n
        self._last_seq[stream], self._last_t[stream] = block.seq + n - 1, int(t[-1])
        deferred.append((block, self._epoch[stream]))
        self.appended_bytes += n * (block.nbytes // n + ROW_HEADER_BYTES)
        self._remember_rows(stream, block.seq, n)
        with self._lock:
            self.written[stream] += n

    def settle(self) -> None:
        """Every batch ``append_block`` deferred becomes rows of its stream's table (before a table write)."""
        for stream in list(self._deferred):
            self._settle_stream(stream)

    def _settle_stream(self, stream: str) -> None:
        """The deferred batches of ``stream``, in order, as one block of rows: each column built in one array
        operation over the batches (a flush holds ~25 tracker batches per stream), not per batch."""
        deferred = self._deferred.pop(stream, None)
        if not deferred:
            return
        blocks = [block for block, _ in deferred]
        counts = np.fromiter((block.n for block in blocks), np.int64, len(blocks))

        def per_block(values, dtype) -> np.ndarray:
            """One value per batch, repeated for each of its samples."""
            return np.repeat(np.fromiter(values, dtype, len(blocks)), counts)

        columns = {
            "seq": np.concatenate([block.seqs for block in blocks]).astype(np.uint64),
            "t_capture_ns": np.concatenate([block.t_capture_ns for block in blocks]),
            "t_device_ns": np.array([NO_DEVICE_TIME if d is None else d for block in blocks
                                     for d in (block.t_device_ns or (None,) * block.n)], np.int64),
            "t_publish_ns": per_block((block.t_publish_ns for block in blocks), np.int64),
            "t_receive_ns": per_block((block.t_receive_ns for block in blocks), np.int64),
            "tracking": np.array([TRACKING_CODES[state] for block in blocks for state in block.tracking], np.uint8),
            "sender_epoch": per_block((epoch for _, epoch in deferred), np.uint16),
            "clock_offset_ns": per_block((block.clock_offset_ns for block in blocks), np.int64),
            **{name: np.concatenate([block.arrays[name] for block in blocks]) for name in blocks[0].arrays},
        }
        self.tables[stream].append_block(columns, int(counts.sum()))

    def _row(self, message: Message, table: ColumnTable) -> dict:
        row = {
            "seq": np.uint64(message.seq),
            "t_capture_ns": np.int64(message.t_capture_ns),
            "t_device_ns": np.int64(NO_DEVICE_TIME if message.t_device_ns is None else message.t_device_ns),
            "t_publish_ns": np.int64(message.t_publish_ns),
            "t_receive_ns": np.int64(message.t_receive_ns),
            "tracking": np.uint8(TRACKING_CODES[message.tracking]),
            "sender_epoch": np.uint16(self._epoch[message.stream]),
            "clock_offset_ns": np.int64(message.clock_offset_ns),
        }
        for name, array in message.arrays.items():
            if table.kind(name) == "bytes" and message.encodings[name] == "raw":
                try:  # a driver that did not encode its frames (encode_in = "writer", or a remote driver)
                    row[name] = encode_jpeg(array, self._jpeg_quality)
                except EncodeError as exc:
                    raise WriterError(f"{message.stream} seq {message.seq}: {exc}") from None
            else:
                row[name] = array
            if message.encodings[name] == "h264":
                row[f"{name}_keyframe"] = np.bool_(message.meta["keyframe"])
                row[f"{name}_packet"] = np.uint64(message.meta["packet"])
        return row

    def _table_of(self, message: Message) -> ColumnTable:
        """The stream's table, created with its group and column kinds from its first sample."""
        table = self.tables.get(message.stream)
        if table is not None:
            return table
        group = self.group.create_group(message.stream)
        group.attrs["kind"] = STREAM_KINDS.get(message.stream, "unknown")
        group.attrs["expected_rate_hz"] = float(self._expected.get(message.stream, 0.0))
        table = self.tables[message.stream] = ColumnTable(group)
        for name, array in message.arrays.items():
            encoding = message.encodings[name]
            if encoding == "h264":
                table.mark(name, "bytes")
                group.attrs[f"{name}_encoding"] = "h264"
                group.attrs[f"{name}_shape"] = list(message.shapes[name])
                self.video_streams.add(message.stream)
            elif encoding == "jpeg" or (array.dtype == np.uint8 and array.ndim == 3 and name == "color"):
                if message.stream in self._configured_video:  # never silently: the take start checks this too
                    self._event(message.t_receive_ns, "error", message.stream,
                                f"{message.stream} is in [writer] video_streams but arrived as {encoding} "
                                f"colour: stored as JPEG (its driver does not encode H.264)")
                table.mark(name, "bytes")
                group.attrs[f"{name}_encoding"] = "jpeg"
                group.attrs[f"{name}_shape"] = list(message.shapes[name])
            elif name == "depth":
                table.mark(name, "depth")
                group.attrs["depth_scale_m"] = float(message.meta.get("depth_scale_m", 0.001))
        return table

    def _drop_undecodable(self, message: Message, last_packet: int | None) -> None:
        """A video frame whose predecessor packet was not stored (the episode's first frames before a
        keyframe, or the frames after a lost packet) cannot be decoded: it is counted and not stored, so that
        every stored frame decodes. Logged once per run of such frames."""
        stream = message.stream
        with self._lock:
            (self.video_preroll if last_packet is None else self.video_undecodable)[stream] += 1
        if self._undecodable_run.get(stream, -1) != last_packet:  # the first frame of a run: say why
            self._undecodable_run[stream] = last_packet
            why = ("before the episode's first keyframe" if last_packet is None else
                   f"after a lost packet (packet {last_packet} was the last stored, seq {self._last_seq.get(stream)})")
            self._event(message.t_receive_ns, "info" if last_packet is None else "warning", stream,
                        f"video frames {why} cannot be decoded: not stored until the next keyframe (counted in "
                        f"video_{'preroll' if last_packet is None else 'undecodable'})")

    def _remember_rows(self, stream: str, first_seq: int, n: int) -> None:
        """Seqs ``first_seq`` .. ``first_seq + n - 1`` are the stream's next ``n`` rows (before ``written``
        counts them): one run per stretch without a gap or a new sender."""
        runs, first_row = self._row_runs[stream], self.written[stream]
        if runs and runs[-1][0] + runs[-1][2] == first_seq and runs[-1][1] + runs[-1][2] == first_row:
            seq, row, count = runs[-1]
            runs[-1] = (seq, row, count + n)
            return
        runs.append((first_seq, first_row, n))
        if len(runs) > ROW_RUNS_REMEMBERED:
            runs.popleft()

    def row_of(self, stream: str, seq: int) -> int:
        """The row in /streams/<stream> of its newest stored sample numbered ``seq`` (-1: not stored, or older
        than the last ``ROW_RUNS_REMEMBERED`` runs)."""
        for first_seq, first_row, count in reversed(self._row_runs.get(stream, ())):
            if first_seq <= seq < first_seq + count:
                return first_row + seq - first_seq
        return -1

    def rows_of(self, stream_seq: np.ndarray) -> np.ndarray:
        """Row indices in /streams/<s> of the samples a synced row used (-1: none, or not stored)."""
        return np.array([self.row_of(s, int(q)) if q >= 0 else -1 for s, q in zip(SYNCED_STREAMS, stream_seq)],
                        np.int64)

    def last_stored(self, stream: str) -> tuple[int, int] | None:
        """(sender, seq) of the stream's last stored sample (None: none yet)."""
        if stream not in self._last_seq:
            return None
        return self._sender[stream], self._last_seq[stream]

    def tail_gap(self, stream: str, refused_tail: tuple[int, int] | None) -> int:
        """Samples refused after the last one stored (no later sample shows them as a gap); ``refused_tail``
        is (sender, seq) of the stream's last refused sample."""
        last = self.last_stored(stream)
        if refused_tail is None or last is None or refused_tail[0] != last[0] or refused_tail[1] <= last[1]:
            return 0
        return refused_tail[1] - last[1]

    def undelivered(self, stream: str, published: tuple[int, int] | None,
                    refused_tail: tuple[int, int] | None) -> int:
        """Sequence numbers the stream's sender had ``published`` (sender, seq) by the stop after the last one
        stored or refused: samples that never arrived."""
        last = self.last_stored(stream)
        if published is None or last is None or published[0] != last[0]:
            return 0
        newest = last[1]
        if refused_tail is not None and refused_tail[0] == published[0]:
            newest = max(newest, refused_tail[1])
        return max(0, int(published[1]) - newest)

    def loss_counts(self, stream: str, refused_tail: tuple[int, int] | None, overflow: int) -> dict[str, int]:
        """The loss attributes of /streams/<stream> now (caller holds the lock)."""
        counts = {"seq_gaps": int(self.seq_gaps[stream]) + self.tail_gap(stream, refused_tail),
                  "writer_overflow": int(overflow), "non_monotonic": int(self.non_monotonic[stream])}
        if stream in self.video_streams:
            counts["video_undecodable"] = int(self.video_undecodable[stream])
            counts["video_preroll"] = int(self.video_preroll[stream])
        return counts
