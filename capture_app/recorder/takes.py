"""Takes on a running capture session, driven by operator commands: start, subtask marks, stop, discard.

This is what the control channel (``capture_app.recorder.control_server``) calls. Every command returns
only once what it changed is durable in the episode file, so an acknowledged mark survives a
killed monitor and a killed recorder alike. The subtask marks live here, in the recorder, not
in any monitor: a monitor that dies mid-take loses nothing, one that attaches later sees them.

Finishing a take closes and renames the file before the command returns; the final table and
quality report are then written (by the take's follower process, ``capture_app.recorder.final_follower``) while
the next take may already record; ``on_take_finished`` reports them (the state feed's ``take`` message, the
cues) and the log says the verdict in one line (``verdict_line``).
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from capture_app.episode.annotations import Annotator
from capture_app.core.clock import NS_PER_S, now_ns
from capture_app.core.errors import CaptureError
from capture_app.recorder.session import CaptureSession

log = logging.getLogger(__name__)

OUTCOMES = ("saved", "aborted")
HISTORY_TAKES = 30  # the finished takes a monitor attaching later is shown (takes.history)


def take_summary(take: dict) -> dict:
    """A finished take as ``takes.history`` lists it: ``name``, ``path``, ``outcome``, ``duration_s`` and
    ``report``, the quality report cut to its verdict, problems, each hand's valid share and each stream's
    losses (None while it is computed or if it could not be)."""
    report = take.get("report")
    if report is not None:
        report = {"verdict": report.get("verdict"), "problems": list(report.get("problems") or []),
                  "hands": {h: {"valid": v.get("valid")} for h, v in (report.get("hands") or {}).items()},
                  "streams": {s: {k: v.get(k, 0) for k in ("seq_gaps", "writer_overflow", "rejected", "tracking_lost")}
                              for s, v in (report.get("streams") or {}).items()}}
    return {"name": take.get("name", ""), "path": take.get("path", ""), "outcome": take.get("outcome", ""),
            "duration_s": take.get("duration_s"), "report": report, "verdict_after_s": take.get("verdict_after_s"),
            "checking": take.get("outcome") in OUTCOMES and take.get("report") is None and not take.get("checked")}


def _origin(default_source: str, by: str, via: str, onset_ns: int | None) -> tuple[str, str]:
    """The /events source of a command (``via`` if given: gesture, pedal, voice, ...) and the words that say
    who gave it and, with ``onset_ns``, how long after its onset it was done (ms)."""
    said = f" by {by}" if by else ""
    if via:
        said += f" via {via}"
        if onset_ns is not None:
            said += f", {(now_ns() - int(onset_ns)) / 1e6:.0f} ms after its onset"
    return (via or default_source), said


class Takes:
    """One recorder's takes. Thread-safe: commands are serialised by a lock."""

    def __init__(self, session: CaptureSession, out_dir: str | Path,
                 on_take_finished: Callable[[dict], None] | None = None):
        self.session = session
        self.out_dir = Path(out_dir)
        self.on_take_finished = on_take_finished or (lambda report: None)
        self._lock = threading.Lock()
        self.annotator = Annotator()
        self.take_count = 0
        self.finishing = 0              # takes whose final table is being computed
        self.last_take: dict | None = None
        self.episode: dict = {}        # name, path, task, instruction, operator of the take recording now
        self.operator = ""             # of the last take started (a monitor attaching later shows it)
        self.history: list[dict] = []  # take_summary of the takes finished, oldest first (the last HISTORY_TAKES)
        self._finalizers: list[threading.Thread] = []

    # --- commands -------------------------------------------------------------------
    def start(self, name: str | None = None, task: str = "", instruction: str = "", operator: str = "",
              by: str = "", via: str = "", onset_ns: int | None = None) -> dict:
        """Open a new episode file (its metadata on disk before this returns). With ``via`` (gesture, pedal,
        voice, ...) the start is also an /events entry of that source with its latency from ``onset_ns``."""
        with self._lock:
            writer = self.session.start_episode(self.out_dir, name=name or None, task=task, instruction=instruction,
                                                operator=operator)
            if via:
                source, said = _origin("session", by, via, onset_ns)
                writer.log_event("info", source, "take started" + said)
                self._make_durable(writer)
            self.annotator = Annotator()
            self.operator = operator
            self.episode = {"name": writer.metadata.episode_name, "path": str(writer.partial_path), "task": task,
                            "instruction": instruction, "operator": operator,
                            "t_start_ns": self.session.episode_started_ns}
            return dict(self.episode)

    def mark_start(self, label: str, t_ns: int, description: str = "", hand: str = "both", by: str = "",
                   via: str = "", onset_ns: int | None = None) -> dict:
        """Start subtask ``label`` at ``t_ns`` (host monotonic ns of the tick the annotator saw, or a gesture's
        onset)."""
        with self._lock:
            writer = self._writer()
            self.annotator.start(label, int(t_ns), description, hand)
            source, said = _origin("annotator", by, via, onset_ns)
            writer.log_event("info", source, f"subtask {label!r} started" + said, t_ns=t_ns)
            return self._store_marks(writer)

    def mark_end(self, t_ns: int, by: str = "", via: str = "", onset_ns: int | None = None) -> dict:
        """End the open subtask at ``t_ns``."""
        with self._lock:
            writer = self._writer()
            if self.annotator.end(int(t_ns)) is None:
                raise CaptureError("no subtask is open to end")
            source, said = _origin("annotator", by, via, onset_ns)
            writer.log_event("info", source, "subtask ended" + said, t_ns=t_ns)
            return self._store_marks(writer)

    def undo(self, by: str = "", via: str = "", onset_ns: int | None = None) -> dict:
        """Take back the last subtask start or end."""
        with self._lock:
            writer = self._writer()
            if not self.annotator.undo():
                raise CaptureError("nothing to undo")
            source, said = _origin("annotator", by, via, onset_ns)
            writer.log_event("info", source, "last subtask mark undone" + said)
            return self._store_marks(writer)

    def note(self, text: str, by: str = "") -> dict:
        """A free-text operator note in /events."""
        with self._lock:
            writer = self._writer()
            writer.log_event("info", "operator", text + (f" ({by})" if by else ""))
            self._make_durable(writer)
            return {}

    def stop(self, outcome: str = "saved", by: str = "", via: str = "", onset_ns: int | None = None) -> dict:
        """End the take: the file is closed and renamed before this returns; its quality follows. An open
        subtask ends at ``onset_ns`` when given (a gesture's onset: the command pose is not part of it)."""
        if outcome not in OUTCOMES:
            raise CaptureError(f"outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
        with self._lock:
            writer = self._writer()
            t_end = now_ns()
            segment_end = t_end if onset_ns is None else min(t_end, max(int(onset_ns), self.episode["t_start_ns"]))
            finished = self.annotator.finished(segment_end)
            writer.set_annotations(finished)
            source, said = _origin("session", by, via, onset_ns)
            writer.log_event("info", source, f"take {outcome}" + said)
            path = self.session.stop_episode({"outcome": outcome}, finalize=False)
            self.take_count += 1
            take = {"name": self.episode["name"], "path": str(path), "outcome": outcome, "report": None,
                    "duration_s": (t_end - self.episode["t_start_ns"]) / NS_PER_S, "t_stop_ns": t_end,
                    "verdict_after_s": None}  # every key now: the state feed may read this dict at any time
            self.last_take, self.episode = take, {}
            self._remember(take)
            self.annotator = Annotator()
            self.finishing += 1
            thread = threading.Thread(target=self._finalize, args=(take,), name="take-finalize", daemon=True)
            self._finalizers = [t for t in self._finalizers if t.is_alive()] + [thread]
            thread.start()
            return {**take, "segments": [asdict(s) for s in finished]}

    def discard(self, by: str = "", via: str = "", onset_ns: int | None = None) -> dict:
        """Throw the take away: no file is left."""
        with self._lock:
            self._writer()
            self.session.discard_episode()
            log.info("take %s discarded%s", self.episode.get("name"), _origin("session", by, via, onset_ns)[1])
            take = {"name": self.episode.get("name", ""), "path": "", "outcome": "discarded", "report": None}
            self.last_take, self.episode = take, {}
            self._remember(take)
            self.annotator = Annotator()
            return dict(take)

    def wait_finalized(self, timeout_s: float = 600) -> None:
        """Wait for every finished take's final table (at shutdown, and in tests)."""
        for thread in list(self._finalizers):
            thread.join(timeout_s)

    # --- state ----------------------------------------------------------------------
    def state(self) -> dict:
        """What a monitor shows about takes: recording or not, the marks, the last take, disk left."""
        session = self.session
        writer = session.writer
        out = {"recording": writer is not None, "take_count": self.take_count, "finishing": self.finishing,
               "last_take": self.last_take, "episode": dict(self.episode), "operator": self.operator,
               "history": [dict(t) for t in self.history],
               "segments": [asdict(s) for s in self.annotator.segments],
               "current": self.annotator.current.label if self.annotator.current else ""}
        try:
            free = shutil.disk_usage(self.out_dir if self.out_dir.exists() else self.out_dir.parent).free
        except OSError:
            free = 0
        out["free_disk_mb"] = free / 1e6
        if writer is not None:
            elapsed = (now_ns() - session.episode_started_ns) / NS_PER_S
            try:
                size = writer.partial_path.stat().st_size
            except OSError:
                size = 0
            rate = size / elapsed if elapsed > 1 else 0.0
            out.update(elapsed_s=elapsed, file_mb=size / 1e6,
                       minutes_left=(free / rate / 60) if rate > 0 else None)
        return out

    def log_warning(self, source: str, text: str) -> None:
        """A warning in the take's /events, if a take is recording (not waited for: it is not a command)."""
        writer = self.session.writer
        if writer is not None:
            writer.log_event("warning", source, text)

    # --- internals ------------------------------------------------------------------
    def _remember(self, take: dict) -> None:
        """Into ``history`` (under the lock); a take already there (its quality now known) is replaced."""
        summary = take_summary(take)
        for i, known in enumerate(self.history):
            if known["path"] and known["path"] == summary["path"]:
                self.history[i] = summary
                return
        self.history = (self.history + [summary])[-HISTORY_TAKES:]

    def _writer(self):
        writer = self.session.writer
        if writer is None:
            raise CaptureError("no take is recording")
        return writer

    def _store_marks(self, writer) -> dict:
        writer.set_annotations(self.annotator.segments)
        self._make_durable(writer)
        return {"segments": [asdict(s) for s in self.annotator.segments],
                "current": self.annotator.current.label if self.annotator.current else ""}

    @staticmethod
    def _make_durable(writer) -> None:
        if not writer.make_durable():
            raise CaptureError(f"the mark is queued but not yet on disk ({writer.error or 'the writer is slow'}); "
                               f"it is kept in the recorder and written with the take")

    def _finalize(self, take: dict) -> None:
        try:
            take["report"] = self.session.episodes.finalize(Path(take["path"]))
        finally:
            take["verdict_after_s"] = round((now_ns() - take["t_stop_ns"]) / NS_PER_S, 2)
            with self._lock:
                self.finishing -= 1
                self._remember({**take, "checked": True})
            self.on_take_finished(dict(take))
            log.info("%s", verdict_line(take))


def verdict_line(take: dict) -> str:
    """The line a headless recorder (``capture-app serve``) logs when a take's verdict is ready."""
    report = take.get("report")
    if report is None:
        said = "its final table could not be written (see above; `capture-app resync` retries)"
    elif report.get("verdict") == "ok":
        said = "quality OK"
    else:
        said = "quality REDO: " + "; ".join(report.get("problems") or [])
    return f"take {take.get('name', '')} {take.get('outcome', '')}: {said} ({take.get('verdict_after_s', 0):.1f} s " \
           f"after the stop)"
