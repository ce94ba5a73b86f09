"""The per-user registry of running recorders, so a monitor can find (and attach to) a recorder whose window
was killed instead of starting a second one on the same rig.

One private directory per user: ``$XDG_RUNTIME_DIR/capture-app/recorders`` when the runtime directory is the
user's own with mode 0700, else ``/tmp/capture-app-recorders-UID``; made 0700 and refused (``None``: no
registry, said in the log) when it is a symlink, another user's, or open to group or others. Each running
recorder writes ``PID.json`` (mode 0600): ``pid``, ``start_time`` (``/proc/PID/stat`` field 22, so a reused
pid is never taken for it), ``control`` (its control endpoint), ``rig`` (the rig's name), ``out`` (where it
saves episodes), ``log`` (its log file, or "") and ``started`` (Unix time, s). Entries of dead recorders are
ignored and removed by whoever reads them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import time
from pathlib import Path

from capture_app.rig.run_dirs import _start_time

log = logging.getLogger(__name__)

FALLBACK_PARENT = Path("/tmp")  # without a private $XDG_RUNTIME_DIR (tests point it elsewhere)


def registry_dir(create: bool = True) -> Path | None:
    """This user's private registry directory (made if missing and ``create``), or None if none is safe."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    candidates = []
    if runtime:
        try:
            st = os.stat(runtime)
            if st.st_uid == uid and not st.st_mode & 0o077:
                candidates.append(Path(runtime) / "capture-app" / "recorders")
        except OSError:
            pass
    candidates.append(FALLBACK_PARENT / f"capture-app-recorders-{uid}")
    for directory in candidates:
        try:
            if create:
                directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                directory.mkdir(mode=0o700, exist_ok=True)
            st = os.lstat(directory)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
            log.warning("recorder registry %s is not a private directory of this user (mode %o, owner %d): not "
                        "used; remove it so that monitors can find running recorders", directory,
                        stat.S_IMODE(st.st_mode), st.st_uid)
            continue
        return directory
    return None


def register(control: str, rig: str, out: str, log_path: str = "", directory: Path | None = None) -> Path | None:
    """Note this process as a running recorder; the entry's path (None without a safe registry)."""
    directory = directory or registry_dir()
    if directory is None:
        return None
    pid = os.getpid()
    entry = {"pid": pid, "start_time": _start_time(pid), "control": control, "rig": rig, "out": str(out),
             "log": str(log_path), "started": time.time()}
    path = directory / f"{pid}.json"
    temporary = directory / f".{pid}.json.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(entry, f)
    os.replace(temporary, path)
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def registered(control: str, rig: str, out: str, log_path: str = ""):
    """``register`` for the life of the block."""
    path = register(control, rig, out, log_path)
    try:
        yield path
    finally:
        unregister(path)


def running_recorders(directory: Path | None = None) -> list[dict]:
    """The live recorders of this user, oldest first; entries of dead ones (or of a reused pid) are removed."""
    directory = directory or registry_dir(create=False)
    if directory is None:
        return []
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            alive = _start_time(int(entry["pid"])) == entry["start_time"] and entry["start_time"] is not None
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours to judge
        if alive:
            out.append(entry)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(out, key=lambda e: e.get("started", 0))
