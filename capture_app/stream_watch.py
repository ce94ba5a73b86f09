"""Logs every change of a stream's health (ok / degraded / lost) into the recording episode.

The dispatcher only sees streams that deliver; a stream that stops delivering changes state
without any message. This thread looks at the stream monitor four times a second and writes
each change, with its reason, to the episode's ``/events``, so a glove that stops before the
end of a take leaves a trace in the file and not only on the screen.
"""

from __future__ import annotations

import threading
from typing import Callable

from capture_app.health import StreamMonitor

POLL_S = 0.25


class StreamWatch:
    def __init__(self, monitor: StreamMonitor, writer: Callable[[], object | None]):
        self._monitor = monitor
        self._writer = writer
        self._states: dict[str, str] = {}
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

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.check()
