"""The recorder's private temporary directory (``/tmp/capture-app-*``: its ipc sockets, the driver
processes' rig file), and the sweeping of those left by recorders that were killed.

Each directory holds ``owner`` with the recorder's pid and its process start time (``/proc/PID/stat``
field 22), so a reused pid is not taken for the recorder. A new recorder removes the directories of
dead recorders owned by the same user; one whose owner file is missing or unreadable is left alone
(it may be being created).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "capture-app-"
OWNER_FILE = "owner"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may hold spaces and ')'


def _owner_alive(directory: Path) -> bool | None:
    """True / False whether the recorder that made ``directory`` still runs; None when unknown."""
    try:
        pid_text, start = (directory / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return _start_time(pid) == start


def sweep_dead(parent: str | Path | None = None) -> list[Path]:
    """Remove the run directories of dead recorders owned by this user; returns those removed."""
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    try:
        candidates = list(parent.glob(PREFIX + "*"))
    except OSError:
        return removed
    for directory in candidates:
        try:
            if not directory.is_dir() or directory.is_symlink() or directory.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if _owner_alive(directory) is False:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    if removed:
        log.info("removed %d run director%s of killed recorders: %s", len(removed), "y" if len(removed) == 1 else "ies",
                 ", ".join(map(str, removed)))
    return removed


def make_run_dir(parent: str | Path | None = None) -> Path:
    """A new private (0700) run directory for this process, after sweeping those of dead recorders."""
    sweep_dead(parent)
    directory = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    (directory / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return directory
