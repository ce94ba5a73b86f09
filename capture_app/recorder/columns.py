"""Growing HDF5 columns: the writer's table of named columns and its attribute helper.

A ``ColumnTable`` holds rows appended in memory until ``write`` appends them to one dataset per column
of an HDF5 group (created on first use, chunked for appending). Images are variable-length byte
columns (JPEG files, H.264 packets), depth a Blosc-compressed column. Used only on the writer's thread.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from capture_app.core.values import storable_text

TIME_CHUNK = 1024  # rows per chunk of a small column
# Depth: Blosc zstd level 3 with byte shuffle. On the simulated 640x480 depth: 3.8 kB a frame in 0.8 ms,
# where lz4 + bitshuffle (the choice before 2026-12-02) took 16 kB in 0.7 ms (docs/performance.md)
DEPTH_FILTER = hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.SHUFFLE)


def set_attrs(target, attrs: dict[str, Any]) -> None:
    """Store ``attrs`` on a group, dataset or attribute set: scalars and strings as they are (strings made
    storable), anything else as JSON text (what JSON cannot say is shown by repr)."""
    if isinstance(target, (h5py.Group, h5py.Dataset)):
        target = target.attrs
    for key, value in attrs.items():
        if isinstance(value, str):
            target[key] = storable_text(value, limit=1 << 20)[0]
        elif isinstance(value, (int, float, bool, np.integer, np.floating)):
            target[key] = value
        else:  # ensure_ascii escapes NUL and surrogates
            target[key] = json.dumps(value, default=repr)


def exists(f: h5py.File, path: str) -> bool:
    """Whether ``path`` names an object in ``f``; False for a name HDF5 cannot look up (a NUL in it)."""
    try:
        return path in f
    except (ValueError, TypeError, UnicodeError):
        return False


class ColumnTable:
    """Appends rows of named columns to datasets in one group; columns are created on first use."""

    def __init__(self, group: h5py.Group):
        self.group = group
        self._pending: dict[str, list] = defaultdict(list)
        self._special: dict[str, str] = {}
        self._datasets: dict[str, h5py.Dataset] = {}  # h5py lookups cost ~0.1 ms each: keep the handles
        self._rows: dict[str, int] = {}
        self.last_written: dict[str, np.ndarray] = {}  # the plain columns' rows of the last write, as arrays

    def mark(self, column: str, kind: str) -> None:
        """Declare ``column`` as 'bytes' (variable-length: JPEG files, H.264 packets), 'depth' (Blosc image)
        or 'text'."""
        self._special[column] = kind

    def kind(self, column: str) -> str | None:
        """What ``mark`` declared ``column`` to be (None: a plain array column)."""
        return self._special.get(column)

    def append(self, row: dict[str, Any]) -> None:
        for name, value in row.items():
            self._pending[name].append(value)

    def pending_rows(self, column: str) -> int:
        """Rows of ``column`` appended but not yet written."""
        return len(self._pending.get(column, ()))

    def drop_pending(self) -> None:
        """Forget the rows not yet written (a disk-full stop)."""
        self._pending.clear()

    def _create(self, name: str, first: Any) -> h5py.Dataset:
        kind = self._special.get(name)
        if kind == "bytes":
            return self.group.create_dataset(name, (0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8), chunks=(64,))
        if kind == "text":
            return self.group.create_dataset(name, (0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,))
        first = np.asarray(first)
        if kind == "depth":
            return self.group.create_dataset(name, (0, *first.shape), maxshape=(None, *first.shape), dtype=first.dtype,
                                             chunks=(1, *first.shape), **DEPTH_FILTER)
        rows_per_chunk = max(1, min(TIME_CHUNK, (256 * 1024) // max(1, first.nbytes)))
        return self.group.create_dataset(name, (0, *first.shape), maxshape=(None, *first.shape), dtype=first.dtype,
                                         chunks=(rows_per_chunk, *first.shape))

    def write(self) -> int:
        """Append the pending rows to the file; returns how many rows were written."""
        written = 0
        self.last_written = {}
        for name, values in self._pending.items():
            if not values:
                continue
            dataset = self._datasets.get(name)
            if dataset is None:
                dataset = self.group[name] if name in self.group else self._create(name, values[0])
                self._datasets[name] = dataset
                self._rows[name] = dataset.shape[0]
            start = self._rows[name]
            dataset.resize(start + len(values), axis=0)
            self._rows[name] = start + len(values)
            if self._special.get(name) in ("bytes", "text", "depth"):
                # one by one: h5py mis-broadcasts a 1-row object array; and h5py holds the GIL for a whole
                # write call, so a depth frame (compressed inside HDF5, ~0.5 ms) at a time lets the
                # synchronizer's tick in between instead of waiting for a flush's every frame
                for i, v in enumerate(values):
                    dataset[start + i] = v
            else:
                dataset[start:] = self.last_written[name] = np.array(values)  # 10x faster than stacking 0-d arrays
            written = len(values)
        self._pending.clear()
        return written
