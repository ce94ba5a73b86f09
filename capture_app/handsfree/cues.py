"""Spoken and audible cues played by the recorder, so an operator with no screen hears what happened.

``CueSpeaker`` plays texts in order on its own thread: espeak-ng where installed (``[handsfree] cues =
"auto"`` or ``"speak"``), else a beep pattern (one high beep for a start, two for a stop, three low ones
for anything that needs attention) through ``aplay``/``paplay``/``pw-play``, else the terminal bell. Tests
(and anything else) pass ``sink``, a callable given each text instead of playing it.

``CueWatcher`` polls the recorder's state five times a second and says: the take started (``recording,
take 3``), each subtask by name, the stop (``take 3 saved`` / ``take aborted`` / ``take discarded``), the
quality verdict once the final table is written (``take 3 saved, quality ok`` / ``redo: left hand valid
61% ...``), a stream lost for a second while recording (``left glove lost``), a nearly full disk, and each
alarm of the live drift watch, recording or not (``ego camera mount slipped 2 degrees, re-seat it``,
``left glove latency off by 20 milliseconds, recalibrate``).
"""

from __future__ import annotations

import io
import logging
import queue
import shutil
import subprocess
import sys
import threading
import wave
from typing import Callable

import numpy as np

from capture_app.core.clock import now_ns

log = logging.getLogger(__name__)

PLAYERS = ("aplay", "paplay", "pw-play")
BEEPS = {"start": [(880, 0.12)], "stop": [(880, 0.1), (0, 0.08), (880, 0.1)],
         "alert": [(440, 0.15), (0, 0.1), (440, 0.15), (0, 0.1), (440, 0.15)]}
MAX_WAITING = 8
LOST_FOR_S = 1.0  # a stream lost this long while recording is said (a blink is not)  # cues waiting beyond this are skipped (and logged): a stale cue misleads


def beep_wav(pattern: list[tuple[float, float]], rate: int = 16000) -> bytes:
    """A WAV file (bytes, 16-bit mono) of ``pattern``: (frequency Hz or 0 for silence, seconds) pairs."""
    parts = []
    for freq, seconds in pattern:
        t = np.arange(int(seconds * rate)) / rate
        parts.append(0.4 * np.sin(2 * np.pi * freq * t) if freq else np.zeros_like(t))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.concatenate(parts) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def beep_kind(text: str) -> str:
    """Which beep pattern stands for a cue text when nothing can speak."""
    lowered = text.lower()
    if lowered.startswith("recording"):
        return "start"
    if any(w in lowered for w in ("lost", "redo", "full", "refused", "no take", "nothing", "discard", "abort",
                                  "cannot", "slipped", "latency")):
        return "alert"
    return "stop"


class CueSpeaker:
    """Plays cue texts one after another (``say`` returns at once)."""

    def __init__(self, mode: str = "auto", sink: Callable[[str], None] | None = None):
        self.sink = sink
        self.mode = mode
        self.speech = shutil.which("espeak-ng") or shutil.which("espeak") if mode in ("auto", "speak") else None
        if mode == "speak" and self.speech is None:
            log.warning("hands-free: [handsfree] cues = \"speak\" but espeak-ng is not installed (apt-get install "
                        "espeak-ng); beeping instead")
        self.player = next((p for p in map(shutil.which, PLAYERS) if p), None)
        self.said: list[str] = []
        self.skipped = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="handsfree-cues", daemon=True)
        self._thread.start()

    def say(self, text: str) -> None:
        if self.mode == "off":
            return
        log.info("cue: %s", text)
        self.said.append(text)
        if self._queue.qsize() >= MAX_WAITING:
            self.skipped += 1
            log.warning("hands-free: cue %r skipped: %d cues still waiting to be played", text, MAX_WAITING)
            return
        self._queue.put(text)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            text = self._queue.get()
            if text is None:
                return
            try:
                self._play(text)
            except Exception:  # a cue that cannot play must not stop the next
                log.exception("hands-free: cue %r could not be played", text)

    def _play(self, text: str) -> None:
        if self.sink is not None:
            self.sink(text)
        elif self.speech is not None:
            subprocess.run([self.speech, "-s", "175", text], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
        elif self.player is not None:
            subprocess.run([self.player, "-"], input=beep_wav(BEEPS[beep_kind(text)]), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
        else:
            sys.stderr.write("\a" * (1 if beep_kind(text) == "start" else 2 if beep_kind(text) == "stop" else 3))
            sys.stderr.flush()


def _spoken_stream(stream: str) -> str:
    return stream.replace("_", " ")


def verdict_text(take: dict, number: int) -> str:
    """The cue for a finished take's quality report: ``take 12 saved, quality ok`` or ``redo: ...``."""
    report = take.get("report")
    if report is None:
        return f"take {number}: the quality could not be computed"
    if report.get("verdict") == "ok":
        return f"take {number} {take.get('outcome', 'saved')}, quality ok"
    problems = report.get("problems") or ["quality below the thresholds"]
    return "redo: " + "; ".join(str(p) for p in problems[:2])


class CueWatcher:
    """Says the recorder's changes (``state()`` of ``Takes`` and the session's stream states)."""

    def __init__(self, takes, session, say: Callable[[str], None], disk_warn_mb: float = 2000.0,
                 period_s: float = 0.2, missing: Callable[[], list[str]] | None = None):
        self.takes = takes
        self.missing = missing or (lambda: [])  # hands-free inputs not working now, said when a take starts
        self.session = session
        self.say = say
        self.disk_warn_mb = disk_warn_mb
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="handsfree-cue-watch", daemon=True)
        self._recording = False
        self._labels: list = []
        self._current = ""
        self._last_take = None
        self._last_number = 0
        self._verdict_said = None
        self._lost: set = set()             # streams said lost (said again only after being ok)
        self._lost_since: dict = {}         # stream -> when it was first seen lost (ns)
        self._disk_low = False
        self._drift_said = 0                # drift alarms said (how many the watch had raised)

    def start(self) -> "CueWatcher":
        self._observe(initial=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self._observe()
            except Exception:
                log.exception("hands-free: cue watch failed once")

    def _observe(self, initial: bool = False) -> None:
        state = self.takes.state()
        say = (lambda text: None) if initial else self.say
        recording = state["recording"]
        if recording and not self._recording:
            say(", ".join([f"recording, take {state['take_count'] + 1}"] + [f"{m} missing" for m in self.missing()]))
            self._labels, self._current, self._lost = [], "", set()
        if recording:
            self._say_marks(state, say)
            t = now_ns()
            for stream, status in self.session.stream_status().items():
                if status.state != "lost":
                    self._lost_since.pop(stream, None)
                    if status.state == "ok":
                        self._lost.discard(stream)
                    continue
                since = self._lost_since.setdefault(stream, t)
                if stream not in self._lost and t - since >= LOST_FOR_S * 1e9:
                    self._lost.add(stream)
                    say(f"{_spoken_stream(stream)} lost")
        last = state["last_take"]
        if last is not None and last is not self._last_take:
            self._last_take, self._last_number = last, state["take_count"]
            if last["outcome"] == "discarded":
                say("take discarded")
            else:
                say(f"take {state['take_count']} {last['outcome']}")
        if last is not None and last.get("report") is not None and self._verdict_said is not last \
                and last["outcome"] == "saved":
            self._verdict_said = last
            say(verdict_text(last, self._last_number))
        self._say_drift(say)
        low = state["free_disk_mb"] < self.disk_warn_mb
        if low and not self._disk_low:
            minutes = state.get("minutes_left")
            say("disk nearly full" + (f", {minutes:.0f} minutes left" if minutes else ""))
        self._disk_low = low
        self._recording = recording

    def _say_drift(self, say) -> None:
        """Say the drift watch's new alarms (capture_app/recorder/drift_watch.py), each once, in order."""
        drift = getattr(self.session, "drift", None)
        if drift is None:
            return
        alarms, self._drift_said = drift.alarms_after(self._drift_said)
        for alarm in alarms:
            say(alarm.get("spoken") or alarm["text"])

    def _say_marks(self, state: dict, say) -> None:
        """Say new subtasks by name, an ended one as ended, and a mark taken back, comparing the segments
        (label, start, end) with the previous look (several marks between two looks are all said)."""
        segments = [(s["label"], s.get("start_ns"), s.get("end_ns", -1)) for s in state["segments"]]
        old = self._labels
        if segments == old:
            return
        starts = {(label, start) for label, start, _ in old}
        if len(segments) < len(old) or any((label, start) not in {(l, s) for l, s, _ in segments}
                                           for label, start, _ in old):
            say("mark undone")
        else:
            for i, (label, start, end) in enumerate(segments):
                previous = old[i] if i < len(old) else None
                if (label, start) not in starts:
                    say(label)
                elif previous is not None and previous[2] != end and end == -1:
                    say("mark undone")                 # an end taken back: open again
                last = i == len(segments) - 1
                if last and end != -1 and (previous is None or previous[2] == -1):
                    say(f"{label} ended")              # closed and nothing started after it
        self._labels, self._current = segments, state["current"]
