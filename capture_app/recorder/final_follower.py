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
the bit (tests/test_final_follower.py). A stream that stops delivering mid-take no longer holds the later rows
back (``settled_rows.SILENT_S``); if it speaks again, the rows computed without it are computed at the stop from
the samples stored around them.

What the stop used to read back from the whole file, the follower keeps as it goes
(``capture_app.recorder.settled_rows``): the rows as column blocks, each row's ``stream_index``, every sample's
capture and receive times for the quality report. The blocks waiting in the feed are sent together, and rows
are computed once per batch, so a follower that the machine starves catches up in fewer, larger steps. Its
finish reports the seconds each step took (``FinalTableFollower.timings``; bench/verdict_latency.py prints them).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np

from calibration.model import calibration_from_json
from capture_app.rig.child_process import child_env
from capture_app.rig.config import SyncConfig

from capture_app.recorder.settled_rows import SAMPLE_COLUMNS, VALUE_COLUMN, SettledRows  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

_EMPTY = ("empty",)  # nothing waiting in the feed
TIMINGS_PREFIX = "follower-timings "  # the finish's stderr line with the seconds of each step (JSON)
REPORT_PREFIX = "follower-report "  # and the one with the quality report it wrote (JSON, as in the file)
FEED_QUEUE_BLOCKS = 2000  # blocks (one per stream and flush) waiting for the follower: minutes of a take
FINISH_TIMEOUT_S = 600


class FinalTableFollower:
    """The recorder's handle on one take's follower process. ``feed`` from the writer's thread; ``finish``
    after the file is closed; ``abandon`` when the take is discarded."""

    def __init__(self, sync_config: SyncConfig, calibration_json: str, t0_ns: int, streams: list[str],
                 rig_config_text: str = ""):
        self.failed = ""  # why the follower cannot be used ("" while it can)
        self.timings: dict = {}  # after ``finish``: the seconds each step of the finish took (the process's report)
        self.report: dict | None = None  # after a ``finish`` that succeeded: the quality report it wrote
        self._queue: queue.Queue = queue.Queue(maxsize=FEED_QUEUE_BLOCKS)
        self._process = subprocess.Popen([sys.executable, "-m", "capture_app.recorder.final_follower"],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         env=child_env())
        self._queue.put(("setup", {"sync": sync_config.__dict__, "calibration_json": calibration_json,
                                   "t0_ns": int(t0_ns), "streams": list(streams),
                                   "rig_config_text": rig_config_text}))
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
                if item[0] == "block":  # with every block waiting behind it: one message, one computation
                    blocks = [item[1:]]
                    item = self._next_block_or_other()
                    while item is not None and item[0] == "block":
                        blocks.append(item[1:])
                        item = self._next_block_or_other()
                    pickle.dump(("blocks", blocks), pipe, protocol=pickle.HIGHEST_PROTOCOL)
                    if item is _EMPTY:
                        pipe.flush()
                        continue
                    if item is None:
                        break
                pickle.dump(item, pipe, protocol=pickle.HIGHEST_PROTOCOL)
                pipe.flush()
        except (OSError, ValueError) as exc:  # the process died
            self.failed = self.failed or f"the follower process ended: {exc}"

    def _next_block_or_other(self):
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return _EMPTY

    def finish(self, path: Path, timeout_s: float = FINISH_TIMEOUT_S) -> bool:
        """Have the follower write the final table and the quality report into the closed episode at ``path``;
        False (and why in ``failed``) when it could not: then finalize from the file."""
        sent = time.monotonic()
        if not self.failed:
            self._queue.put(("finish", str(path), sent))
        self._queue.put(None)
        self._sender.join(timeout_s)
        try:
            _, stderr = self._process.communicate(timeout=timeout_s)  # closes its stdin: the end of the feed
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            self.failed = self.failed or f"the follower did not finish within {timeout_s:.0f} s"
            return False
        for line in (stderr or b"").decode(errors="replace").splitlines():
            for prefix, name in ((TIMINGS_PREFIX, "timings"), (REPORT_PREFIX, "report")):
                if line.startswith(prefix):
                    try:
                        setattr(self, name, json.loads(line[len(prefix):]))
                    except ValueError:
                        pass
        self.timings["returned_after_s"] = round(time.monotonic() - sent, 4)
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
    from capture_app.recorder.final_table import thresholds_from_rig
    source = sys.stdin.buffer
    _, setup = pickle.load(source)
    rows = SettledRows(SyncConfig(**setup["sync"]), setup["calibration_json"], setup["t0_ns"], setup["streams"])
    thresholds_from_rig(setup.get("rig_config_text", ""))  # its imports now, not after the stop
    while True:
        try:
            item = pickle.load(source)
        except EOFError:
            return 0  # abandoned: nothing to write
        if item[0] == "blocks":
            for stream, columns in item[1]:
                rows.add(stream, columns)
            rows.compute_settled()
        elif item[0] == "finish":
            finish(rows, Path(item[1]), item[2])
            sys.stderr.flush()
            os._exit(0)  # the file is closed and the lines are out: no teardown of what it followed


def finish(rows: SettledRows, path: Path, stop_sent_monotonic: float) -> dict:
    """Write the final table and the report of the closed episode at ``path`` from what ``rows`` followed (or
    from the file where it cannot be trusted); print the timings line; return the report."""
    from capture_app.recorder.final_table import finalize_episode
    from capture_app.recorder.resync import EVERY_SAMPLE, _row_indices
    timings = {"finish_read_after_s": round(time.monotonic() - stop_sent_monotonic, 4),
               "rows_during_take": rows.rows_computed}
    trusted = False

    def rows_source(f, ticks, config):
        nonlocal trusted
        why = rows.broken or _differs(f, rows, config)
        if why:
            print(f"follower: computing {path} from the file ({why})", file=sys.stderr)
            return None
        clock = time.perf_counter()
        rows.compute_rest(int(ticks[-1]))
        timings["tail_rows"] = rows.rows_computed - timings["rows_during_take"]
        timings["hole_rows"] = sum(b - a for a, b in rows.holes)
        timings["silent"] = sorted(rows.assumed_silent)
        timings["spoke_again"] = rows.spoke_again[-10:]
        timings["tail_s"] = round(time.perf_counter() - clock, 4)
        def read(stream, start, stop):  # the stored samples a hole's rows use
            group = f[f"streams/{stream}"]
            return {name: group[name][start:stop] for name in (*SAMPLE_COLUMNS, *VALUE_COLUMN.values())
                    if name in group}

        columns = rows.rows_for(ticks, lambda hole: rows.rows_between(hole, read))
        if columns is not None and rows.seq_restarted:  # their stream_index the old way, from the file
            columns = dict(columns)
            redone = _row_indices(f, columns["stream_seq"], np.full(len(ticks), EVERY_SAMPLE), rows.seq_restarted)
            index = columns["stream_index"].copy()
            for j, stream in enumerate(rows.synced_streams):
                if stream in rows.seq_restarted:
                    index[:, j] = redone[:, j]
            columns["stream_index"] = index
        trusted = columns is not None
        return columns

    def recorded(stream):
        if not trusted:
            return None
        times = rows.recorded_times(stream)
        return None if times is None else (*times, rows.tracking_lost[stream])

    report = finalize_episode(path, rows_source=rows_source, recorded=recorded, timings=timings)
    timings["total_s"] = round(time.monotonic() - stop_sent_monotonic, 4)
    print(TIMINGS_PREFIX + json.dumps(timings), file=sys.stderr)
    print(REPORT_PREFIX + json.dumps(report), file=sys.stderr)
    return report


if __name__ == "__main__":
    sys.exit(main())
