"""The state of a take's final-table follower: the rows no later sample can change, computed as samples come.

Pure computation on arrays (no I/O), driven by the follower process (``capture_app.recorder.final_follower``)
and by tests. The final table (docs/episode-format.md) evaluates every stored sample by its capture time; a row
at ``t_eval`` depends on each stream's samples around ``t_eval`` only (``capture_app.core.interpolation``), so
once every stream has stored a sample captured after ``t_eval`` (latency offset removed) the row is *settled*.

Besides the rows it keeps what the stop would otherwise read back from the whole file (each O(take length)):

- the rows as column blocks (stacked batch by batch, joined once at the end);
- each row's ``stream_index`` (the row of the sample used, ``resync._row_indices`` with every sample visible:
  the last row holding that ``seq``): resolved when the row is computed, from the samples then kept, for every
  stream whose sequence numbers have only increased so far (the sample with that seq is then the only one);
  a stream whose seq ever repeats or goes back (a driver restart) is resolved at the end the old way, from
  the file, for every row;
- per stream the capture and receive times of every sample (16 bytes a sample, ~60 MB for an hour of the
  full rig) and the count of samples with tracking lost, for the quality report (``final_table.quality_report``).

A stream that falls silent (nothing from it while the stream furthest ahead advanced ``SILENT_S``, or nothing
at all while the others have delivered for that long; a stream that delivers late but delivers is not silent)
no longer holds the rows back: they are computed as if it delivered nothing more, which is what the final
table holds if it stays silent to the stop (a glove whose battery died). If it speaks again, every row from its last sample before the silence on could change (its
``stream_dt_ns`` at least): those rows are dropped and become a *hole*, computed at the stop from the samples
stored around them (``rows_between``); the rows after the hole are followed as before.

Everything it returns is what the from-file path computes with the same functions on the same values: the
result is equal to the bit (tests/test_final_follower.py).
"""

from __future__ import annotations

import numpy as np

from calibration.model import calibration_from_json
from capture_app.episode.format import TRACKING_CODES
from capture_app.rig.config import SyncConfig

SAMPLE_COLUMNS = ("t_capture_ns", "t_receive_ns", "seq", "tracking", "sender_epoch")
VALUE_COLUMN = {"pose": "pose", "keypoints": "keypoints"}  # buffer kind -> its value column
EVERY_SAMPLE = np.iinfo(np.int64).max
SILENT_S = 3.0  # nothing from a stream while the others' capture times advance this far: rows go on without it


class SettledRows:
    """The samples rows still to come may use, the rows computed so far and what the report needs."""

    def __init__(self, sync_config: SyncConfig, calibration_json: str, t0_ns: int, streams: list[str]):
        from capture_app.core.streams import SYNCED_STREAMS
        from capture_app.recorder.synchronizer import Synchronizer
        self.calibration_json = calibration_json
        self.sync_config = sync_config
        self.sync = Synchronizer(sync_config, calibration_from_json(calibration_json, "<follower>"))
        self.sync.receive_floor_ns = 0
        self.t0_ns, self.period_ns = int(t0_ns), self.sync.period_ns
        self.delay_ns = self.sync.delay_ns
        self.streams = [s for s in streams if s in self.sync.buffers]  # those that can deliver samples
        self.synced_streams = SYNCED_STREAMS  # the columns of stream_seq / stream_index
        self.kept: dict[str, list[dict[str, np.ndarray]]] = {}  # stream -> blocks of the samples kept
        self.dropped: dict[str, int] = {s: 0 for s in self.sync.buffers}  # samples let go from the front
        self._newest: dict[str, int] = {}  # stream -> capture time of its newest sample
        self._first: dict[str, int] = {}  # stream -> its first sample's instant (capture time - latency offset)
        self._lead_when_heard: dict[str, int] = {}  # stream -> the newest instant of any stream at its last block
        self.spoke_again: list[str] = []  # streams that delivered after rows were computed without them
        self._last_seq: dict[str, int] = {}  # stream -> seq of its newest sample
        self.seq_restarted: set[str] = set()  # streams whose seq did not always increase
        self.fed: dict[str, int] = {s: 0 for s in self.sync.buffers}  # samples received per stream
        self.times: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}  # stream -> (capture, receive) blocks
        self.tracking_lost: dict[str, int] = {s: 0 for s in self.sync.buffers}
        self.first_k: int | None = None  # lattice index of the first row computed
        self.next_k: int | None = None   # and of the next one to compute
        self.blocks: list[tuple[int, dict[str, np.ndarray]]] = []  # (first k, columns) of the rows computed
        self.holes: list[tuple[int, int]] = []  # [k, k_end) of rows to compute from the file at the end
        self.silent_ns = int(SILENT_S * 1e9)
        # streams rows were computed without: stream -> its newest sample's instant then (None: it had none)
        self.assumed_silent: dict[str, int | None] = {}
        self.broken = ""  # why the rows cannot be trusted ("" while they can)

    @property
    def rows_computed(self) -> int:
        """Rows computed so far (the holes not counted)."""
        return sum(len(columns["t_tick_ns"]) for _, columns in self.blocks)

    def add(self, stream: str, columns: dict[str, np.ndarray]) -> None:
        """Samples of ``stream`` in the order the writer stored them (kept as blocks: joined only when rows
        are computed, so a stream that holds the rows back costs no copying while it does)."""
        if stream not in self.sync.buffers or len(columns["seq"]) == 0:
            return
        times = columns["t_capture_ns"]
        newest = self._newest.get(stream)
        if np.any(np.diff(times) <= 0) or (newest is not None and int(times[0]) <= newest):
            self.broken = f"{stream}: capture times do not increase"  # the writer never stores this
        seq = columns["seq"].astype(np.int64)
        last = self._last_seq.get(stream)
        if np.any(np.diff(seq) <= 0) or (last is not None and int(seq[0]) <= last):
            self.seq_restarted.add(stream)
        self._last_seq[stream] = int(seq[-1])
        if stream in self.assumed_silent:  # it spoke again: the rows computed without it may differ
            self.spoke_again.append(stream)
            self._unassume(stream, self.assumed_silent.pop(stream), int(times[0]))
        self.kept.setdefault(stream, []).append(columns)
        self._first.setdefault(stream, int(times[0]) - self.sync.calibration.latency_offset_ns(stream))
        self.times.setdefault(stream, []).append((np.asarray(times, np.int64),
                                                  np.asarray(columns["t_receive_ns"], np.int64)))
        self.tracking_lost[stream] += int(np.sum(columns["tracking"] == TRACKING_CODES["lost"]))
        self._newest[stream] = int(times[-1])
        self._lead_when_heard[stream] = max(self._instant(s) for s in self._newest)
        self.fed[stream] += len(columns["seq"])

    def _joined(self, stream: str) -> dict[str, np.ndarray]:
        blocks = self.kept[stream]
        if len(blocks) > 1:
            blocks[:] = [{name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}]
        return blocks[0]

    def _instant(self, stream: str) -> int:
        """The newest sample's capture time of ``stream`` with its latency offset removed (t_eval's clock)."""
        return self._newest[stream] - self.sync.calibration.latency_offset_ns(stream)

    def compute_settled(self) -> int:
        """Compute every row that no later sample can change, but a silent stream's; returns how many."""
        if self.broken or not self.kept:
            return 0
        heard = [s for s in self.streams if s in self.kept]
        if not heard:
            return 0
        lead = max(self._instant(s) for s in heard)
        earliest = min(self._first.values())
        silent = [s for s in self.streams if (self._lead_when_heard[s] if s in self.kept else earliest) <
                  lead - self.silent_ns]
        if len(heard) < len(self.streams) and set(self.streams) - set(heard) - set(silent):
            return 0  # a stream yet to deliver its first sample, not yet for long: wait for it
        self._begin()
        horizon = min(self._instant(s) for s in heard if s not in silent)
        if self.t0_ns + self.next_k * self.period_ns - self.delay_ns >= horizon:
            self._forget_used()  # a stream catching up after a silence brings samples no row will use
            return 0  # nothing new is settled
        for stream in silent:
            if stream not in self.assumed_silent:
                self.assumed_silent[stream] = self._instant(stream) if stream in self.kept else None
        return self._compute_until(lambda t_eval: t_eval < horizon)

    def _unassume(self, stream: str, last_instant: int | None, first_capture_ns: int) -> None:
        """``stream`` delivered again after rows were computed without it: every row whose instant is at or after
        its last sample before the silence (all rows, if it had none) goes into a hole."""
        if self.first_k is None:
            return
        if last_instant is None:  # its first sample: every row, and the rows may have to start earlier
            first_instant = first_capture_ns - self.sync.calibration.latency_offset_ns(stream)
            self.first_k = min(self.first_k, -(-(first_instant + self.delay_ns - self.t0_ns) // self.period_ns))
            k = self.first_k
        else:
            k = max(self.first_k, -(-(last_instant + self.delay_ns - self.t0_ns) // self.period_ns))
        if k >= self.next_k:
            return
        kept = []
        for k0, columns in self.blocks:
            if k0 < k:
                kept.append((k0, {name: values[:k - k0] for name, values in columns.items()} if
                              k0 + len(columns["t_tick_ns"]) > k else columns))
        self.blocks = kept
        holes = [(a, b) for a, b in self.holes if b <= k] + [(min([k] + [a for a, b in self.holes if b > k]),
                                                              self.next_k)]
        self.holes = holes

    def compute_rest(self, last_tick_ns: int) -> None:
        """At the stop (every sample is in): every row up to the tick ``last_tick_ns``."""
        if self.kept and not self.broken:
            self._begin()
            self._compute_until(lambda t_eval: t_eval + self.delay_ns <= last_tick_ns)

    def _begin(self) -> None:
        """The first row: the first tick of the lattice whose instant is at or after the earliest sample (the
        final table never starts before it; no stream ever delivers a sample captured before its first)."""
        if self.first_k is None:
            earliest = min(self._first.values())
            self.first_k = self.next_k = -(-(earliest + self.delay_ns - self.t0_ns) // self.period_ns)

    def _compute_until(self, settled) -> int:
        self._load()
        rows = []
        while settled(self.t0_ns + self.next_k * self.period_ns - self.delay_ns):
            t_tick = self.t0_ns + self.next_k * self.period_ns
            rows.append(self.sync.compute_tick(t_tick, EVERY_SAMPLE).row())
            self.next_k += 1
        if rows:
            block = {name: np.stack([r[name] for r in rows]) for name in rows[0]}
            block["stream_index"] = self._stream_index(block["stream_seq"])
            self.blocks.append((self.next_k - len(rows), block))
            self._forget_used()
        return len(rows)

    def _stream_index(self, stream_seq: np.ndarray) -> np.ndarray:
        """Per row and stream, the stream's row holding ``stream_seq`` (-1 for none), from the samples kept now:
        each row used one of them. Columns of streams whose seq did not always increase stay -1 here
        (``stream_index`` resolves them at the end)."""
        index = np.full(stream_seq.shape, -1, np.int64)
        for j, stream in enumerate(self.synced_streams):
            if stream not in self.kept or stream in self.seq_restarted:
                continue
            seqs = self._joined(stream)["seq"].astype(np.int64)
            wanted = stream_seq[:, j]
            position = np.searchsorted(seqs, wanted)
            found = (wanted >= 0) & (position < len(seqs))
            found &= seqs[np.minimum(position, len(seqs) - 1)] == wanted
            index[found, j] = self.dropped[stream] + position[found]
        return index

    def _load(self) -> None:
        for stream in self.kept:
            c = self._joined(stream)
            column = VALUE_COLUMN.get(self.sync.buffers[stream].kind)
            self.sync.load_stream(stream, c["t_capture_ns"], c["t_receive_ns"], c["seq"].astype(np.int64),
                                  c["tracking"], c[column] if column else None, c["sender_epoch"].astype(np.int64))

    def _forget_used(self) -> None:
        """Drop the samples no row still to come can use: all but the last two captured before the next row's
        instant (the bracket's left side, and extrapolation's two) and every one after it."""
        t_next = self.t0_ns + self.next_k * self.period_ns - self.delay_ns
        for stream in self.kept:
            c = self._joined(stream)
            t = c["t_capture_ns"] - self.sync.calibration.latency_offset_ns(stream)
            before = int(np.searchsorted(t, t_next, side="right"))
            drop = max(0, before - 2)
            if drop:
                self.kept[stream] = [{name: values[drop:] for name, values in c.items()}]
                self.dropped[stream] += drop

    def rows_for(self, tick_times_ns: np.ndarray, from_file=None) -> dict[str, np.ndarray] | None:
        """The computed rows of exactly ``tick_times_ns`` as columns (``stream_index`` -1 in the columns of
        ``seq_restarted`` streams), or None if they are not all here. The rows of holes come from
        ``from_file(ticks)`` (``resync.compute_rows``; None: a hole makes the answer None)."""
        if self.broken or not (self.blocks or self.holes):
            return None
        ticks = np.asarray(tick_times_ns, np.int64)
        k = (ticks - self.t0_ns) // self.period_ns
        if np.any((ticks - self.t0_ns) % self.period_ns) or k[0] < self.first_k or k[-1] >= self.next_k:
            return None
        if np.any(np.diff(k) != 1):
            return None
        pieces = [(k0, columns) for k0, columns in self.blocks]
        for a, b in self.holes:
            a, b = max(a, int(k[0])), min(b, int(k[-1]) + 1)
            if a < b:
                if from_file is None:
                    return None
                pieces.append((a, from_file(self.t0_ns + self.period_ns * np.arange(a, b, dtype=np.int64))))
        pieces.sort(key=lambda piece: piece[0])
        names = list(pieces[0][1])
        chosen, at = [], int(k[0])
        for k0, columns in pieces:
            n = len(columns["t_tick_ns"])
            if k0 + n <= at or k0 > k[-1]:
                continue
            if k0 > at:
                return None  # rows missing (never here)
            chosen.append({name: columns[name][at - k0: int(k[-1]) + 1 - k0] for name in names})
            at = k0 + n
        if at <= k[-1]:
            return None
        return {name: np.concatenate([c[name] for c in chosen]) for name in names}

    def rows_between(self, tick_times_ns: np.ndarray, read) -> dict[str, np.ndarray]:
        """The rows of ``tick_times_ns`` (a hole) from each stream's stored samples around them only (so the stop
        reads what the hole needs, not the whole take): ``read(stream, start, stop)`` gives the stream's
        columns (SAMPLE_COLUMNS and the value column) of its rows [start, stop) as stored. A row uses at most
        the two samples on either side of its instant, so these are the from-file rows."""
        from capture_app.recorder.synchronizer import Synchronizer
        sync = Synchronizer(self.sync_config, self.sync.calibration)
        sync.receive_floor_ns = 0
        ticks = np.asarray(tick_times_ns, np.int64)
        first, last = int(ticks[0]) - self.delay_ns, int(ticks[-1]) - self.delay_ns
        windows = {}
        for stream in self.sync.buffers:
            times = self.recorded_times(stream)
            if times is None:
                continue
            t = times[0] - self.sync.calibration.latency_offset_ns(stream)
            start = max(0, int(np.searchsorted(t, first, side="right")) - 3)
            stop = min(len(t), int(np.searchsorted(t, last, side="right")) + 3)
            c = read(stream, start, stop)
            column = VALUE_COLUMN.get(sync.buffers[stream].kind)
            sync.load_stream(stream, c["t_capture_ns"], c["t_receive_ns"], c["seq"].astype(np.int64),
                             c["tracking"], c[column] if column else None, c["sender_epoch"].astype(np.int64))
            windows[stream] = (start, c["seq"].astype(np.int64))
        rows = [sync.compute_tick(int(t), EVERY_SAMPLE).row() for t in ticks]
        columns = {name: np.stack([r[name] for r in rows]) for name in rows[0]}
        index = np.full(columns["stream_seq"].shape, -1, np.int64)
        for j, stream in enumerate(self.synced_streams):
            if stream in windows and stream not in self.seq_restarted:
                start, seqs = windows[stream]
                wanted = columns["stream_seq"][:, j]
                position = np.searchsorted(seqs, wanted)
                found = (wanted >= 0) & (position < len(seqs))
                found &= seqs[np.minimum(position, len(seqs) - 1)] == wanted
                index[found, j] = start + position[found]
        columns["stream_index"] = index
        return columns

    def recorded_times(self, stream: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Every sample's capture and receive times of ``stream`` (ns, as stored), or None if none was fed."""
        blocks = self.times.get(stream)
        if not blocks:
            return None
        if len(blocks) > 1:
            blocks[:] = [(np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]))]
        return blocks[0]
