"""Growing HDF5 columns: the writer's table of named columns and its attribute helper.

A ``ColumnTable`` holds rows appended in memory until ``write`` appends them to one dataset per column
of an HDF5 group (created on first use, chunked for appending). Images are variable-length byte
columns (JPEG files, H.264 packets), depth a Blosc-compressed column. Used only on the writer's thread.
"""

from __future__ import annotations

import json
import time
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
        self._pending: dict[str, list] = defaultdict(list)  # rows appended one by one, not yet written
        self._blocks: dict[str, list] = defaultdict(list)   # arrays of rows, in order, before the rows pending
        self._special: dict[str, str] = {}
        self._datasets: dict[str, h5py.Dataset] = {}  # h5py lookups cost ~0.1 ms each: keep the handles
        self._rows: dict[str, int] = {}
        self._row_shape: dict[str, tuple] = {}  # a row's shape, per column
        self.depth_cpu_ns = 0  # thread CPU spent writing (compressing) depth images
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

    def append_block(self, columns: dict[str, np.ndarray], n: int) -> None:
        """Append ``n`` rows at once: each column an array with a leading dimension ``n`` (plain columns only)."""
        for name, values in columns.items():
            self._settle(name)
            self._blocks[name].append(values)

    def _settle(self, name: str) -> None:
        """The rows of ``name`` appended one by one so far become one array, after its blocks."""
        rows = self._pending.get(name)
        if rows:
            self._blocks[name].append(np.array(rows))  # 10x faster than stacking 0-d arrays
            rows.clear()

    def pending_rows(self, column: str) -> int:
        """Rows of ``column`` appended but not yet written."""
        return len(self._pending.get(column, ())) + sum(len(b) for b in self._blocks.get(column, ()))

    def drop_pending(self) -> None:
        """Forget the rows not yet written (a disk-full stop)."""
        self._pending.clear()
        self._blocks.clear()

    def _create(self, name: str, first: Any) -> h5py.Dataset:
        kind = self._special.get(name)
        if kind == "bytes":
            return self.group.create_dataset(name, (0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8), chunks=(64,))
        if kind == "text":
            return self.group.create_dataset(name, (0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,))
        first = np.asarray(first)
        if kind == "depth":
            # rdcc_nbytes=1: no chunk cache (one byte is less than any frame), so HDF5 compresses and writes each
            # frame when it is written, not when the next frame evicts it or the file is flushed
            return self.group.create_dataset(name, (0, *first.shape), maxshape=(None, *first.shape), dtype=first.dtype,
                                             chunks=(1, *first.shape), rdcc_nbytes=1, **DEPTH_FILTER)
        rows_per_chunk = max(1, min(TIME_CHUNK, (256 * 1024) // max(1, first.nbytes)))
        return self.group.create_dataset(name, (0, *first.shape), maxshape=(None, *first.shape), dtype=first.dtype,
                                         chunks=(rows_per_chunk, *first.shape))

    def write(self) -> int:
        """Append the pending rows to the file; returns how many rows were written."""
        written = 0
        self.last_written = {}
        for name in [n for n in self._blocks if self._blocks[n]]:
            self._settle(name)
        for name in [*self._blocks, *(n for n in self._pending if n not in self._blocks)]:
            blocks = self._blocks.get(name)
            values = (blocks[0] if len(blocks) == 1 else np.concatenate(blocks)) if blocks else self._pending[name]
            if len(values) == 0:
                continue
            dataset = self._datasets.get(name)
            if dataset is None:
                dataset = self.group[name] if name in self.group else self._create(name, values[0])
                self._datasets[name] = dataset
                self._rows[name], self._row_shape[name] = dataset.shape[0], dataset.shape[1:]
            start = self._rows[name]
            dataset.id.set_extent((start + len(values), *self._row_shape[name]))  # Dataset.resize, without its checks
            self._rows[name] = start + len(values)
            if self._special.get(name) == "depth":
                # one frame a call: h5py holds the GIL for a whole write call, so a depth frame (compressed
                # inside HDF5, ~0.5 ms) at a time lets the synchronizer's tick in between instead of waiting
                # for a flush's every frame. The dataset has no chunk cache (``_create``), so each frame is
                # compressed here, in its own write, not later inside the file's flush.
                cpu_start_ns = time.thread_time_ns()
                for i, v in enumerate(values):
                    dataset[start + i] = v
                self.depth_cpu_ns += time.thread_time_ns() - cpu_start_ns  # the depth filter: part of the floor
            elif self._special.get(name) in ("bytes", "text"):
                _write_objects(dataset, start, values)
            else:
                self.last_written[name] = array = np.asarray(values) if blocks else np.array(values)
                _write_rows(dataset, start, array)
            written = len(values)
        self._pending.clear()
        self._blocks.clear()
        return written


def _write_rows(dataset: h5py.Dataset, start: int, rows: np.ndarray) -> None:
    """``dataset[start:start + len(rows)] = rows`` through h5py's low-level API: the high-level selection
    machinery cost ~0.1 ms per call, on every column of every stream at every flush."""
    rows = np.ascontiguousarray(rows, dtype=dataset.dtype)
    file_space = dataset.id.get_space()
    file_space.select_hyperslab((start, *(0,) * (rows.ndim - 1)), rows.shape)
    dataset.id.write(h5py.h5s.create_simple(rows.shape), file_space, rows)


def _write_objects(dataset: h5py.Dataset, start: int, values) -> None:
    """``dataset[start:start + len(values)] = values`` for a variable-length column (bytes or text), in one
    low-level write: h5py's ``dataset[i] = v`` per frame cost ~0.1 ms each, and it mis-broadcasts a 1-row
    object array given whole."""
    rows = np.empty(len(values), dtype=dataset.dtype)
    for i, value in enumerate(values):  # element by element: numpy would make a 2-D array of equal-length frames
        rows[i] = value
    file_space = dataset.id.get_space()
    file_space.select_hyperslab((start,), (len(rows),))
    dataset.id.write(h5py.h5s.create_simple((len(rows),)), file_space, rows)
