"""The final table built while the take records, so the verdict follows the stop within seconds.

The final table (docs/episode-format.md) evaluates every stored sample by its capture time. A row at
``t_eval`` depends on each stream's samples around ``t_eval`` only: the two that bracket it, the last two
before it, or the nearest frame (``capture_app.core.interpolation``). The writer stores each stream's samples
in increasing capture time (it refuses the rest), so once every stream of the rig has stored a sample
captured after ``t_eval`` (latency offset removed), no later sample can change that row: it is *settled*.

A follower process receives the samples the writer has flushed, block by block (``FinalTableFollower.feed``,
called on the writer's thread; it never blocks: a follower that falls behind is dropped and the stop computes
the table from the file as before). It computes each settled row with the same ``Synchronizer.compute_tick``
on the same samples as ``capture_app.recorder.resync`` would, keeps only the samples rows still to come can
use, and at the stop computes the unsettled tail, then writes the final table and the quality report into the
closed file (``capture_app.recorder.final_table.finalize_episode``). The result is the from-scratch table to
the bit (tests/test_final_follower.py). A stream that stops delivering mid-take holds every later row back
until the stop: that take's verdict takes as long as it did before.
"""

from __future__ import annotations

import logging
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np

from calibration.model import calibration_from_json
from capture_app.rig.child_process import child_env
from capture_app.rig.config import SyncConfig

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("t_capture_ns", "t_receive_ns", "seq", "tracking", "sender_epoch")
VALUE_COLUMN = {"pose": "pose", "keypoints": "keypoints"}  # buffer kind -> its value column
FEED_QUEUE_BLOCKS = 2000  # blocks (one per stream and flush) waiting for the follower: minutes of a take
FINISH_TIMEOUT_S = 600


class FinalTableFollower:
    """The recorder's handle on one take's follower process. ``feed`` from the writer's thread; ``finish``
    after the file is closed; ``abandon`` when the take is discarded."""

    def __init__(self, sync_config: SyncConfig, calibration_json: str, t0_ns: int, streams: list[str]):
        self.failed = ""  # why the follower cannot be used ("" while it can)
        self._queue: queue.Queue = queue.Queue(maxsize=FEED_QUEUE_BLOCKS)
        self._process = subprocess.Popen([sys.executable, "-m", "capture_app.recorder.final_follower"],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         env=child_env())
        self._queue.put(("setup", {"sync": sync_config.__dict__, "calibration_json": calibration_json,
                                   "t0_ns": int(t0_ns), "streams": list(streams)}))
        self._sender = threading.Thread(target=self._send, name="final-follower-feed", daemon=True)
        self._sender.start()

    def feed(self, stream: str, columns: dict[str, np.ndarray]) -> None:
        """Samples of ``stream`` just flushed to the file, as their columns (SAMPLE_COLUMNS and the value
        column). Never blocks: a full queue drops the follower (the stop then computes from the file)."""
        if self.failed:
            return
        try:
            self._queue.put_nowait(("block", stream, columns))
        except queue.Full:
            self.failed = "the follower fell behind the take"

    def _send(self) -> None:
        pipe = self._process.stdin
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                pickle.dump(item, pipe, protocol=pickle.HIGHEST_PROTOCOL)
                pipe.flush()
        except (OSError, ValueError) as exc:  # the process died
            self.failed = self.failed or f"the follower process ended: {exc}"

    def finish(self, path: Path, timeout_s: float = FINISH_TIMEOUT_S) -> bool:
        """Have the follower write the final table and the quality report into the closed episode at ``path``;
        False (and why in ``failed``) when it could not: then finalize from the file."""
        if not self.failed:
            self._queue.put(("finish", str(path)))
        self._queue.put(None)
        self._sender.join(timeout_s)
        try:
            _, stderr = self._process.communicate(timeout=timeout_s)  # closes its stdin: the end of the feed
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            self.failed = self.failed or f"the follower did not finish within {timeout_s:.0f} s"
            return False
        if self._process.returncode != 0 and not self.failed:
            self.failed = (stderr or b"").decode(errors="replace").strip()[-2000:] or \
                f"the follower exited with {self._process.returncode}"
        return not self.failed

    def abandon(self) -> None:
        """Stop the follower without writing anything (the take was discarded)."""
        self.failed = self.failed or "abandoned"
        self._process.kill()
        self._queue.put(None)
        self._sender.join(5)
        try:
            self._process.communicate()
        except (OSError, ValueError):  # its stdin broke with it
            self._process.wait()


class SettledRows:
    """The follower's state: the samples rows still to come may use, and the rows computed so far.

    Pure computation on arrays (no I/O), so it can be driven by a test as well as by the process."""

    def __init__(self, sync_config: SyncConfig, calibration_json: str, t0_ns: int, streams: list[str]):
        from capture_app.recorder.synchronizer import Synchronizer
        self.calibration_json = calibration_json
        self.sync = Synchronizer(sync_config, calibration_from_json(calibration_json, "<follower>"))
        self.sync.receive_floor_ns = 0
        self.t0_ns, self.period_ns = int(t0_ns), self.sync.period_ns
        self.delay_ns = self.sync.delay_ns
        self.streams = [s for s in streams if s in self.sync.buffers]  # those that can deliver samples
        self.kept: dict[str, list[dict[str, np.ndarray]]] = {}  # stream -> blocks of the samples kept
        self._newest: dict[str, int] = {}  # stream -> capture time of its newest sample
        self.fed: dict[str, int] = {s: 0 for s in self.sync.buffers}  # samples received per stream
        self.first_k: int | None = None  # lattice index of the first row computed
        self.next_k: int | None = None   # and of the next one to compute
        self.rows: list[dict[str, np.ndarray]] = []
        self.broken = ""  # why the rows cannot be trusted ("" while they can)

    def add(self, stream: str, columns: dict[str, np.ndarray]) -> None:
        """Samples of ``stream`` in the order the writer stored them (kept as blocks: joined only when rows
        are computed, so a stream that holds the rows back costs no copying while it does)."""
        if stream not in self.sync.buffers or len(columns["seq"]) == 0:
            return
        times = columns["t_capture_ns"]
        newest = self._newest.get(stream)
        if np.any(np.diff(times) <= 0) or (newest is not None and int(times[0]) <= newest):
            self.broken = f"{stream}: capture times do not increase"  # the writer never stores this
        self.kept.setdefault(stream, []).append(columns)
        self._newest[stream] = int(times[-1])
        self.fed[stream] += len(columns["seq"])

    def _joined(self, stream: str) -> dict[str, np.ndarray]:
        blocks = self.kept[stream]
        if len(blocks) > 1:
            blocks[:] = [{name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}]
        return blocks[0]

    def compute_settled(self) -> int:
        """Compute every row that no later sample can change; returns how many were computed."""
        if self.broken or any(s not in self.kept for s in self.streams):
            return 0
        self._begin()
        horizon = min(self._newest[s] - self.sync.calibration.latency_offset_ns(s) for s in self.streams)
        if self.t0_ns + self.next_k * self.period_ns - self.delay_ns >= horizon:
            return 0  # nothing new is settled
        return self._compute_until(lambda t_eval: t_eval < horizon)

    def compute_rest(self, last_tick_ns: int) -> None:
        """At the stop (every sample is in): every row up to the tick ``last_tick_ns``."""
        if self.kept and not self.broken:
            self._begin()
            self._compute_until(lambda t_eval: t_eval + self.delay_ns <= last_tick_ns)

    def _begin(self) -> None:
        """The first row: the first tick of the lattice whose instant is at or after the earliest sample (the
        final table never starts before it; no stream ever delivers a sample captured before its first)."""
        if self.first_k is None:
            earliest = min(int(blocks[0]["t_capture_ns"][0]) - self.sync.calibration.latency_offset_ns(s)
                           for s, blocks in self.kept.items())
            self.first_k = self.next_k = -(-(earliest + self.delay_ns - self.t0_ns) // self.period_ns)

    def _compute_until(self, settled) -> int:
        self._load()
        computed = 0
        while settled(self.t0_ns + self.next_k * self.period_ns - self.delay_ns):
            t_tick = self.t0_ns + self.next_k * self.period_ns
            self.rows.append(self.sync.compute_tick(t_tick, np.iinfo(np.int64).max).row())
            self.next_k += 1
            computed += 1
        if computed:
            self._forget_used()
        return computed

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

    def rows_for(self, tick_times_ns: np.ndarray) -> dict[str, np.ndarray] | None:
        """The computed rows of exactly ``tick_times_ns`` as columns, or None if they are not all here."""
        if self.broken or not self.rows:
            return None
        ticks = np.asarray(tick_times_ns, np.int64)
        k = (ticks - self.t0_ns) // self.period_ns
        if np.any((ticks - self.t0_ns) % self.period_ns) or k[0] < self.first_k or k[-1] >= self.next_k:
            return None
        if np.any(np.diff(k) != 1):
            return None
        chosen = self.rows[int(k[0] - self.first_k): int(k[-1] - self.first_k) + 1]
        return {name: np.stack([r[name] for r in chosen]) for name in chosen[0]}


def _differs(f: h5py.File, rows: SettledRows, config: SyncConfig) -> str:
    """'' when the follower computed with what the file's final table uses (its samples, its calibration,
    its synchronizer settings); else what differs."""
    from capture_app.recorder.synchronizer import Synchronizer
    calibration_json = str(f["calibration"].attrs["json"])
    if calibration_json != rows.sync.calibration.to_json() and calibration_json != rows.calibration_json:
        return "the episode's calibration is not the one followed"
    file_sync = Synchronizer(config, calibration_from_json(calibration_json, "<episode>"))
    if (file_sync.period_ns, file_sync.delay_ns, file_sync.limits) != (rows.period_ns, rows.delay_ns,
                                                                       rows.sync.limits):
        return "the episode's synchronizer settings are not the ones followed"
    for stream, n in rows.fed.items():
        stored = len(f[f"streams/{stream}/seq"]) if f"streams/{stream}/seq" in f else 0
        if stored != n:
            return f"{stream}: {n} samples followed, {stored} in the file"
    return ""


def main() -> int:
    """The follower process: read the setup, blocks and the finish from stdin (pickled by the recorder)."""
    from capture_app.recorder.final_table import finalize_episode
    source = sys.stdin.buffer
    _, setup = pickle.load(source)
    rows = SettledRows(SyncConfig(**setup["sync"]), setup["calibration_json"], setup["t0_ns"], setup["streams"])
    while True:
        try:
            item = pickle.load(source)
        except EOFError:
            return 0  # abandoned: nothing to write
        if item[0] == "block":
            rows.add(item[1], item[2])
            rows.compute_settled()
        elif item[0] == "finish":
            path = Path(item[1])

            def rows_source(f, ticks, config):
                why = rows.broken or _differs(f, rows, config)
                if why:
                    print(f"follower: computing {path} from the file ({why})", file=sys.stderr)
                    return None
                rows.compute_rest(int(ticks[-1]))
                return rows.rows_for(ticks)

            finalize_episode(path, rows_source=rows_source)
            return 0


if __name__ == "__main__":
    sys.exit(main())
