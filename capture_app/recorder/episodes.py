"""Episodes on a running recorder, one at a time: open the writer, feed it ticks, stop, discard, finish.

The intake hands samples to whichever writer ``current`` is; the synchronizer's ticks come here
(``on_tick``). Starting and stopping swap the writer under the synchronizer's lock, so a sample or a tick is
either in the episode or not, never half. Each take has a follower process that builds its final table while it
records (``capture_app.recorder.final_follower``); after the stop it writes the table and the quality report
within seconds, or, when it cannot, a child process computes them from the file
(``capture_app.recorder.final_table``). Either way their Python never holds this process's GIL.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from calibration.model import Calibration
from capture_app.core.clock import now_ns
from capture_app.core.errors import CaptureError
from capture_app.core.streams import SYNCED_STREAMS
from capture_app.episode.format import EPISODE_SUFFIX, PARTIAL_SUFFIX
from capture_app.recorder.final_follower import FinalTableFollower
from capture_app.recorder.intake import Intake
from capture_app.recorder.synchronizer import VALIDITY_NAMES, SyncedTick, Synchronizer
from capture_app.recorder.writer import EpisodeMetadata, EpisodeWriter
from capture_app.rig.child_process import child_env
from capture_app.rig.config import RigConfig

log = logging.getLogger(__name__)

FINALIZE_TIMEOUT_S = 600


def finalize_in_child_process(path: Path) -> dict | None:
    """Write the final table and quality report of a finished episode (``capture_app.recorder.final_table``) in a
    child process, so its Python work never holds this process's GIL; the report, or None if it failed
    (the episode then keeps its live table, and says why in the log)."""
    from capture_app.episode.file import open_episode
    try:
        result = subprocess.run([sys.executable, "-m", "capture_app.recorder.final_table", str(path)],
                                capture_output=True, text=True, timeout=FINALIZE_TIMEOUT_S, stdin=subprocess.DEVNULL,
                                env=child_env())
    except subprocess.TimeoutExpired:
        log.error("finalizing %s took over %d s; it keeps its live table (`capture-app resync` makes the final one)",
                  path, FINALIZE_TIMEOUT_S)
        return None
    if result.returncode != 0:
        log.error("%s", result.stderr.strip() or f"finalizing {path} failed (exit {result.returncode})")
        return None
    with open_episode(path) as f:
        return json.loads(f.attrs["quality"])


def episode_name(task: str = "", out_dir: str | Path | None = None) -> str:
    """A sortable default name: ``YYYYmmdd-HHMMSS[_task]``, with ``-2``, ``-3``... added when a take of that
    name is already in ``out_dir`` (a take aborted and started again within the same second)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", task).strip("-")[:40]
    name = f"{stamp}_{slug}" if slug else stamp
    if out_dir is None:
        return name

    def taken(candidate: str) -> bool:
        return any((Path(out_dir) / f"{candidate}{suffix}").exists()
                   for suffix in (EPISODE_SUFFIX, EPISODE_SUFFIX + PARTIAL_SUFFIX))

    candidate, k = name, 1
    while taken(candidate):
        k += 1
        candidate = f"{name}-{k}"
    return candidate


DRIFT_CATCH_UP_S = 3.0  # a take's stop waits at most this long for the drift watch to process its data
HELD_EVENTS = 100       # events logged between takes kept for the next take (the newest; older ones counted)
BEFORE_TAKE = "before this take: "  # how a held event's message begins in the next take's /events


class Episodes:
    """The episode being recorded (at most one) and the accounting that belongs to it."""

    def __init__(self, config: RigConfig, calibration: Calibration, synchronizer: Synchronizer):
        self.config = config
        self.calibration = calibration
        self.synchronizer = synchronizer
        self.intake: Intake | None = None  # set by the recorder once built (the intake reads ``current``)
        self._writer: EpisodeWriter | None = None
        self.started_ns = 0
        self.last_quality_report: dict | None = None  # of the last episode finished
        # this take's invalid synced rows per hand part, from the part's first valid row on; the rows before
        # it (its streams had no data yet since the take's receive floor) are counted apart, so the live
        # verdict is not red for a whole take over its first ticks (docs/control.md, losses)
        self.invalid_rows: dict[str, int] = {name: 0 for name in VALIDITY_NAMES}
        self.invalid_rows_at_start: dict[str, int] = {name: 0 for name in VALIDITY_NAMES}
        self._part_started: dict[str, bool] = {name: False for name in VALIDITY_NAMES}
        self._rejected_at_start: dict = {}
        self._sender_changes_at_start: dict = {}
        self._malformed_at_start = 0
        self._followers: dict[Path, FinalTableFollower] = {}  # finished episodes whose follower has the table
        self.drift_summary = None  # since_ns -> the drift watch's summary, stored as the attribute ``drift``
        self._drift: dict[Path, _DriftSummary] = {}  # stopped takes whose drift summary is not yet in the file
        # events logged while no take records (a pedal lost, a drift alarm), for the next take's /events
        self._held_lock = threading.Lock()
        self._held: collections.deque = collections.deque(maxlen=HELD_EVENTS)
        self._held_dropped = 0

    def current(self) -> EpisodeWriter | None:
        """The writer of the episode recording now, or None."""
        return self._writer

    def log_event(self, level: str, source: str, text: str) -> None:
        """An event into the recording episode. Between takes it is held (the newest ``HELD_EVENTS``) and
        written into the next take when it starts, at the time it happened, its message beginning with
        ``BEFORE_TAKE``: a pedal lost between takes is in the take whose marks it affects."""
        with self._held_lock:
            writer = self._writer
            if writer is None:
                self._held_dropped += len(self._held) == self._held.maxlen
                self._held.append((now_ns(), level, source, text))
                return
        writer.log_event(level, source, text)

    def _write_held_events(self, writer: EpisodeWriter) -> None:
        """The events held since the last take, into ``writer`` (the take just started)."""
        with self._held_lock:
            held, dropped = list(self._held), self._held_dropped
            self._held.clear()
            self._held_dropped = 0
        if dropped:
            writer.log_event("warning", "session", f"{BEFORE_TAKE}{dropped} older event(s) between takes not kept "
                                                   f"here (only the newest {HELD_EVENTS}); the recorder's log has "
                                                   f"them all", t_ns=held[0][0])
        for t_ns, level, source, text in held:
            writer.log_event(level, source, BEFORE_TAKE + text, t_ns=t_ns)

    def on_tick(self, tick: SyncedTick) -> None:
        """A synced tick (the synchronizer's thread): into the episode's live table, invalid parts counted
        (``invalid_rows`` after the part's first valid row of the take, ``invalid_rows_at_start`` before)."""
        writer = self._writer
        if writer is not None and tick.t_tick_ns >= self.started_ns:
            writer.submit_row("synced", tick)  # the writer thread builds the row
            started = self._part_started
            for name, valid in zip(VALIDITY_NAMES, tick.action_valid):
                if valid:
                    started[name] = True
                elif started[name]:
                    self.invalid_rows[name] += 1
                else:
                    self.invalid_rows_at_start[name] += 1

    def start(self, out_dir: str | Path, *, name: str | None = None, instruction: str = "", task: str = "",
              operator: str = "") -> EpisodeWriter:
        """Open a new episode file and start writing every sample and tick into it."""
        intake = self.intake
        if self._writer is not None:
            raise CaptureError("an episode is already recording; stop or discard it first")
        if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}", name):
            raise CaptureError(f"episode name {name!r}: use letters, digits, '-', '_' and '.' (no '/'), "
                               f"starting with a letter or digit")
        intake.check_video_streams()
        devices = {h.stream: h.device for h in intake.driver_health().values() if h.device}
        serials = {d.stream: d.serial for d in self.config.drivers if d.serial}
        serials.update({s: str(dev.get("serial")) for s, dev in devices.items() if dev.get("serial")})
        metadata = EpisodeMetadata(
            episode_name=name or episode_name(task, out_dir), instruction=instruction, task=task, operator=operator,
            rig_name=self.config.name, rig_config_text=self.config.source_text,
            calibration_json=self.calibration.to_json(), calibration_id=self.calibration.calibration_id,
            device_serials=serials, expected_rates_hz=intake.expected_rates, simulated=self.config.is_simulated,
            sim_seed=self.config.sim_seed)
        follower = FinalTableFollower(self.config.sync, metadata.calibration_json, self.synchronizer.t0_ns,
                                      [s for s in intake.expected_rates if s in SYNCED_STREAMS],
                                      rig_config_text=metadata.rig_config_text)
        try:
            writer = EpisodeWriter(out_dir, metadata, self.config.writer, follower=follower).start()
        except BaseException:
            follower.abandon()
            raise
        for stream, device in devices.items():
            writer.set_stream_attrs(stream, {"device": device})
        self._rejected_at_start = dict(intake.checker.rejected)
        self._sender_changes_at_start = dict(intake.checker.sender_changes)
        self.invalid_rows = {name: 0 for name in VALIDITY_NAMES}
        self.invalid_rows_at_start = {name: 0 for name in VALIDITY_NAMES}
        self._part_started = {name: False for name in VALIDITY_NAMES}
        self._malformed_at_start = intake.malformed_total()
        with self.synchronizer.lock:
            self.started_ns = now_ns()
            self.synchronizer.receive_floor_ns = self.started_ns + 1
            intake.begin_take()
            self._writer = writer
        writer.set_attrs("synced", self.synchronizer.describe())
        writer.log_event("info", "session", "episode started")
        self._write_held_events(writer)
        return writer

    def _detach_writer(self) -> EpisodeWriter:
        with self.synchronizer.lock:
            writer, self._writer = self._writer, None
            self.synchronizer.receive_floor_ns = 0
        if writer is None:
            raise CaptureError("no episode is recording")
        return writer

    def stop(self, attrs: dict | None = None, finalize: bool = True) -> Path:
        """Finish the episode (drain, close, rename) and return its path. Blocks until written and, with
        ``finalize``, until its final table and quality report are (``last_quality_report``)."""
        intake = self.intake
        stopped_ns = intake.begin_stop()
        intake.drain_to_now(lambda level, text: self.log_event(level, "session", text))
        for name, client in intake.clock_clients.items():  # the clock measurements, beside the raw stamps
            for m in list(client.estimator.measurements):
                if m.t_local_ns >= self.started_ns and self._writer is not None:
                    self._writer.submit_row(f"clock_sync/{name}", {"t_local_ns": np.int64(m.t_local_ns),
                                                                   "offset_ns": np.int64(m.offset_ns),
                                                                   "rtt_ns": np.int64(m.rtt_ns)})
        self._store_rejections()
        writer = self._detach_writer()
        writer.note_published(intake.take_published())
        summary = {"stop_monotonic_ns": stopped_ns,
                   "synchronizer": {"rate_hz": self.config.sync.rate_hz, "delay_ms": self.config.sync.delay_ms},
                   "bus_malformed": intake.malformed_total() - self._malformed_at_start,
                   "bus_unexpected": intake.unexpected_messages}
        drift = _DriftSummary(self.drift_summary, self.started_ns) if self.drift_summary is not None else None
        try:
            path = writer.finish({**summary, **(attrs or {})})
        except BaseException:
            writer.follower.abandon()
            raise
        self._followers[path] = writer.follower
        if drift is not None:
            self._drift[path] = drift
        if finalize:
            self.last_quality_report = self.finalize(path)
        return path

    def finalize(self, path: Path) -> dict | None:
        """The final table and quality report of a stopped episode: from the rows its follower computed while
        it recorded (seconds after the stop, whatever the take's length), else from the file in a child process;
        the report, or None if both failed (the episode keeps its live table; the log says why)."""
        from capture_app.episode.file import open_episode
        self._store_drift(Path(path))
        follower = self._followers.pop(Path(path), None)
        if follower is not None:
            if follower.finish(Path(path)):
                if follower.report is not None:  # as it wrote it into the file
                    return follower.report
                with open_episode(path) as f:
                    return json.loads(f.attrs["quality"])
            log.warning("%s: the final table is computed from the file (%s)", path, follower.failed)
        return finalize_in_child_process(Path(path))

    def _store_rejections(self) -> None:
        """Per stream, the messages refused during this episode by reason (attribute ``rejected``)."""
        writer = self._writer
        if writer is None:
            return
        during: dict[str, dict[str, int]] = {}
        for (stream, reason), n in self.intake.checker.rejected.items():
            n -= self._rejected_at_start.get((stream, reason), 0)
            if n:
                during.setdefault(stream, {})[reason] = n
        for stream in self.intake.expected_rates:
            changes = self.intake.checker.sender_changes[stream] - self._sender_changes_at_start.get(stream, 0)
            writer.set_stream_attrs(stream, {"rejected": during.get(stream, {}), "sender_changes": changes})

    def discard(self) -> None:
        """Throw the current episode away: no file is left."""
        writer = self._detach_writer()
        writer.discard()
        writer.follower.abandon()

    def close(self) -> None:
        """Stop the followers of episodes never finalized (their files keep the live table)."""
        for follower in self._followers.values():
            follower.abandon()
        self._followers.clear()
        for path in list(self._drift):
            self._store_drift(path)

    def _store_drift(self, path: Path) -> None:
        """The drift watch's summary of the take at ``path`` (taken from its stop on) into the closed file,
        as the root attribute ``drift`` the quality report reads."""
        from capture_app.episode.file import open_episode
        drift = self._drift.pop(path, None)
        if drift is None:
            return
        try:
            with open_episode(path, "r+") as f:
                f.attrs["drift"] = drift.json()
        except (OSError, KeyError, CaptureError) as exc:
            log.error("%s: the drift summary could not be stored (%s)", path, exc)


class _DriftSummary:
    """The drift watch's summary of a take, taken on a thread from the take's stop on: the watch may need up to
    DRIFT_CATCH_UP_S to process what arrived before the stop, and the stop (and the next take) need not wait."""

    def __init__(self, summary, since_ns: int):
        self._json = json.dumps({"error": "the drift watch gave no summary"})
        self._thread = threading.Thread(target=self._take, args=(summary, since_ns), name="drift-summary",
                                        daemon=True)
        self._thread.start()

    def _take(self, summary, since_ns: int) -> None:
        try:
            self._json = json.dumps(summary(since_ns, catch_up_s=DRIFT_CATCH_UP_S))
        except Exception as exc:  # the watch's bug must not lose the take
            log.exception("drift summary failed")
            self._json = json.dumps({"error": f"the drift summary failed: {exc}"})

    def json(self) -> str:
        self._thread.join(DRIFT_CATCH_UP_S + 30)
        return self._json
