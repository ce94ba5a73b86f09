"""Logs every loss into the recording episode: stream health changes, writer refusals, invalid hands.

The dispatcher only sees streams that deliver; a stream that stops delivering changes state
without any message. This thread looks four times a second at the stream monitor, the writer's
refusal counts and the newest synced tick's validity, and writes each change, with its reason,
to the episode's ``/events``, so a glove that stops before the end of a take, a writer that
refuses samples or a hand that goes invalid leaves a trace in the file and not only on the screen.
"""

from __future__ import annotations

import threading
from typing import Callable

from capture_app.recorder.health import StreamMonitor
from capture_app.rig.priority import prioritise_recorder_thread
from capture_app.recorder.synchronizer import VALIDITY_NAMES

POLL_S = 0.25


class StreamWatch:
    def __init__(self, monitor: StreamMonitor, writer: Callable[[], object | None],
                 latest_tick: Callable[[], object | None] = lambda: None):
        self._monitor = monitor
        self._writer = writer
        self._latest_tick = latest_tick
        self._states: dict[str, str] = {}
        self._refused: dict[str, int] = {}
        self._valid: dict[str, bool] = {}
        self._episode = None  # the writer the states were last logged to
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-watch", daemon=True)

    def start(self) -> "StreamWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def check(self) -> None:
        """Compare each stream's state with the last one seen; log the changes while recording."""
        writer = self._writer()
        new_episode = writer is not None and writer is not self._episode
        self._episode = writer
        for stream, status in self._monitor.snapshot().items():
            previous = self._states.get(stream)
            self._states[stream] = status.state
            if new_episode and status.state not in ("ok", "waiting"):  # how the episode begins
                writer.log_event("warning" if status.state == "degraded" else "error", stream,
                                 f"stream {stream} is {status.state} as the episode starts: {status.reason}")
                continue
            if writer is None or previous is None or previous == status.state or status.state == "waiting":
                continue
            level = {"lost": "error", "degraded": "warning"}.get(status.state, "info")
            reason = f": {status.reason}" if status.reason else ""
            writer.log_event(level, stream, f"stream {stream} {previous} -> {status.state}{reason}")
        if writer is not None:
            self._check_refusals(writer, new_episode)
            self._check_validity(writer, new_episode)

    def _check_refusals(self, writer, new_episode: bool) -> None:
        """Samples the writer refused (its queue share was full) since the last look, per stream."""
        if new_episode:
            self._refused = {}
        for stream, refused in writer.stats().overflow.items():
            before = self._refused.get(stream, 0)
            if refused > before:
                self._refused[stream] = refused
                writer.log_event("error", stream, f"writer refused {refused - before} sample(s) of {stream} "
                                                  f"(queue full; {refused} this take): the machine is overloaded")

    def _check_validity(self, writer, new_episode: bool) -> None:
        """The synced action's validity per hand part: each change is an event (row times in /synced)."""
        tick = self._latest_tick()
        if tick is None:
            return
        if new_episode:
            self._valid = {}
        for name, valid in zip(VALIDITY_NAMES, (bool(v) for v in tick.action_valid)):
            before = self._valid.get(name, True)
            self._valid[name] = valid
            if valid != before:
                writer.log_event("info" if valid else "warning", "synced",
                                 f"{name} {'valid again' if valid else 'invalid'} in the synced action",
                                 t_ns=tick.t_eval_ns)

    def _run(self) -> None:
        prioritise_recorder_thread()
        while not self._stop.wait(POLL_S):
            self.check()
