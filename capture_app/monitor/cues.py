"""Spoken cues for the operator (start, stop, subtask marks) with espeak-ng where installed, else a beep.

Speaking runs in its own short-lived process (never blocks the GUI); a cue that arrives while
the previous one is still speaking replaces it.
"""

from __future__ import annotations

import shutil
import subprocess


class Cues:
    def __init__(self, enabled: bool = True, voice_command: str | None = None):
        self.enabled = enabled
        self.command = voice_command or shutil.which("espeak-ng") or shutil.which("espeak")
        self._speaking: subprocess.Popen | None = None
        self.said: list[str] = []  # what was cued, for the log and tests

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        self.said.append(text)
        if self.command is None:
            from PySide6 import QtWidgets
            QtWidgets.QApplication.beep()
            return
        if self._speaking is not None and self._speaking.poll() is None:
            self._speaking.kill()
        self._speaking = subprocess.Popen([self.command, "-s", "190", text], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
