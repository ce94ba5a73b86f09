"""Stopping an episode before a full disk corrupts it.

HDF5 that hits ENOSPC in the middle of a flush can leave a file that does not open. The writer asks
``DiskGuard.check`` before each flush: the flush's size on disk is estimated from the bytes it appends
times the stored/appended ratio measured on earlier flushes (depth compresses ~10-100x), doubled for
safety; when free space would not hold it plus a reserve, the writer stops cleanly instead.
"""

from __future__ import annotations

import shutil
from collections import deque
from pathlib import Path

DISK_MARGIN_BYTES = 8 * 1024 * 1024  # free space kept for HDF5 metadata and a clean close
STORED_RATIO_MIN_BYTES = 1 << 20  # a flush smaller than this says little about compression


class DiskFullStop(Exception):
    """Free space would not hold the next flush: stop before HDF5 hits ENOSPC (which corrupts the file)."""


class DiskGuard:
    """Free-space checks for one growing file (``path``), with the compression ratios of its last flushes."""

    def __init__(self, path: Path):
        self.path = path
        self._stored_ratios: deque = deque(maxlen=5)  # file growth / bytes appended, of the last flushes

    def check(self, appending_bytes: int) -> None:
        """Raise DiskFullStop when a flush appending ``appending_bytes`` (uncompressed) may not fit."""
        free = shutil.disk_usage(self.path.parent).free
        needed = int(appending_bytes * min(1.0, 2 * max(self._stored_ratios, default=0.5)))
        if free < needed + DISK_MARGIN_BYTES:
            raise DiskFullStop(f"{free / 1e6:.1f} MB free, the next flush needs about {needed / 1e6:.1f} MB "
                               f"plus a {DISK_MARGIN_BYTES / 1e6:.0f} MB reserve")

    def file_size(self) -> int | None:
        """The file's size in bytes now (None when it cannot be read)."""
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    def measured(self, appended: int, size_before: int | None) -> None:
        """Remember how many bytes a flush of ``appended`` bytes added to the file (for the next estimate)."""
        if size_before is None or appended < STORED_RATIO_MIN_BYTES:
            return
        size_after = self.file_size()
        if size_after is not None:
            self._stored_ratios.append(max(0.0, (size_after - size_before) / appended))
