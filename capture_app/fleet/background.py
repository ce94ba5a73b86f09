"""Uploads while ``serve`` runs: a pass of ``capture-app upload`` in a low-priority child process
between takes, never during one (a take starting stops the pass at its next chunk; it resumes later)."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from capture_app.rig.child_process import child_env, cli_command

log = logging.getLogger(__name__)
UPLOAD_LOG = ".upload.log"  # in the episodes folder: what serve's upload passes printed


class BackgroundUploads:
    """Every ``interval_s`` while ``busy()`` is false, one upload pass (``command``) in a child process;
    when ``busy()`` turns true the running pass is sent SIGTERM."""

    def __init__(self, command: list[str], interval_s: float, busy: Callable[[], bool], poll_s: float = 0.2,
                 log_path: str | Path | None = None):
        self.command, self.interval_s, self.busy, self.poll_s = command, interval_s, busy, poll_s
        self.log_path = Path(log_path) if log_path else None  # each pass's summary and errors are appended here
        self.passes = self.stopped_for_take = 0
        self._child: subprocess.Popen | None = None
        self._asked_to_stop = False  # the running pass was sent SIGTERM for a take
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background-uploads", daemon=True)

    @classmethod
    def for_rig(cls, config_path: str, out_dir: str, interval_s: float, busy: Callable[[], bool]):
        return cls(cli_command("upload", "--config", str(config_path), "--out", str(out_dir), "--no-progress"),
                   interval_s, busy, log_path=Path(out_dir) / UPLOAD_LOG)

    def start(self) -> "BackgroundUploads":
        self._thread.start()
        return self

    def _run(self) -> None:
        last = -float("inf")
        while not self._stop.wait(self.poll_s):
            child = self._child
            if child is not None and child.poll() is not None:
                self._child = child = None
                last = time.monotonic()
            if self.busy():
                if child is not None and not self._asked_to_stop:
                    child.send_signal(signal.SIGTERM)  # stops after its current chunk, state saved
                    self._asked_to_stop = True
                    self.stopped_for_take += 1
                continue
            if child is None and time.monotonic() - last >= self.interval_s:
                log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
                try:
                    self._child = subprocess.Popen(self.command, env=child_env(), stdout=log, stderr=log)
                finally:
                    if log is not subprocess.DEVNULL:
                        log.close()  # the child holds its own descriptor
                self._asked_to_stop = False
                self.passes += 1
                last = time.monotonic()

    def running(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def close(self, timeout_s: float = 30) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signal.SIGTERM)
            try:
                self._child.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
