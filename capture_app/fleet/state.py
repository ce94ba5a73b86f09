"""The uploader's durable local state: one small JSON file in the episodes folder (docs/upload.md,
"State file"), replaced atomically (write a temporary file, fsync it, rename, fsync the folder), so a
power cut leaves either the old or the new state, never a torn one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from capture_app.core.errors import CaptureError

STATE_FORMAT = "capture-app-upload-state"
STATE_VERSION = 1
STATE_FILE = ".upload-state.json"
STATUSES = ("pending", "uploading", "verified", "deleted")  # verified = uploaded and checked on the destination


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably: temporary file + fsync + rename + fsync of the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UploadState:
    """Per local file (name relative to the episodes folder) its upload record: ``status``, ``size``,
    ``mtime_ns``, ``sha256``, ``bytes_sent``, ``attempts``, ``error``, times, and the episode's summary
    (``info``) kept for the heartbeat after the local copy is deleted."""

    def __init__(self, folder: str | Path, destination: str):
        self.folder = Path(folder)
        self.path = self.folder / STATE_FILE
        self.destination = destination
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise CaptureError(f"{self.path}: unreadable upload state ({exc}); move it aside to start over "
                                   f"(every episode is then checked against the destination again)") from None
            if data.get("format") != STATE_FORMAT or data.get("version") != STATE_VERSION:
                raise CaptureError(f"{self.path}: not a version {STATE_VERSION} upload state "
                                   f"(format {data.get('format')!r}, version {data.get('version')!r})")
            if data.get("destination") != destination:
                raise CaptureError(f"{self.path}: records uploads to {data.get('destination')!r}, not {destination!r}; "
                                   f"move it aside to upload this folder to the new destination")
            self.entries = data["files"]

    def entry(self, name: str) -> dict:
        return self.entries.setdefault(name, {"status": "pending", "attempts": 0, "bytes_sent": 0})

    def save(self) -> None:
        data = {"format": STATE_FORMAT, "version": STATE_VERSION, "destination": self.destination,
                "saved_at": time.time(), "files": self.entries}
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    def with_status(self, *statuses: str) -> list[str]:
        return sorted(n for n, e in self.entries.items() if e["status"] in statuses)
