"""Recovering an episode left unfinished by a crash, a kill or a full disk.

Everything flushed before the crash is in the file, but a writer killed mid-flush (or stopped
by a full disk) can leave columns of one table extended unevenly and, in the worst case,
chunks that cannot be read back. Recovery reads every dataset back, row block by row block,
trims each table to the rows that every one of its columns can deliver (dropping a column
that cannot be read at all), marks the file ``status = "recovered"`` with what it trimmed
and dropped, and gives it its final name. It accepts ``NAME.h5.partial`` and a ``NAME.h5``
still marked ``recording``; running it again on a recovered file changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from capture_app.core.clock import wall_clock_iso
from capture_app.episode.file import open_episode
from capture_app.episode.format import PARTIAL_SUFFIX
from capture_app.core.errors import EpisodeFormatError

READ_BLOCK = 256


def _tables(f: h5py.File):
    """Groups whose datasets are columns of one table (one row per sample / tick / event)."""
    for name, group in f.get("streams", {}).items():
        yield f"streams/{name}", group
    for name in ("synced", "synced_live", "events"):
        if name in f:
            yield name, f[name]
    for name, group in f.get("clock_sync", {}).items():
        yield f"clock_sync/{name}", group


def _not_damage(exc: BaseException, dataset: h5py.Dataset) -> None:
    """A read that failed because an HDF5 filter is not available is not damage: refuse, change nothing."""
    text = str(exc).lower()
    if "filter" in text or "plugin" in text:
        raise EpisodeFormatError(f"{dataset.name} cannot be decoded here ({exc}): an HDF5 filter is missing "
                                 f"(pip install hdf5plugin); the file was left unchanged") from None


def readable_rows(dataset: h5py.Dataset) -> int:
    """How many leading rows of ``dataset`` read back without an error. EpisodeFormatError when a read
    fails for a missing filter rather than damage."""
    n = len(dataset)
    for start in range(0, n, READ_BLOCK):
        stop = min(n, start + READ_BLOCK)
        try:
            dataset[start:stop]
        except (OSError, RuntimeError, ValueError) as exc:
            _not_damage(exc, dataset)
            for row in range(start, stop):  # find the first bad row of the block
                try:
                    dataset[row]
                except (OSError, RuntimeError, ValueError):
                    return row
    return n


def _open(path: Path) -> h5py.File:
    return open_episode(path, "r+", hint=". If another process still writes it, stop that first; if the disk is "
                                         "full, free some space; if it was never flushed, nothing can be recovered.")


def recover(path: str | Path) -> tuple[Path, dict]:
    """Verify, trim, mark and rename an interrupted episode. Returns its final path and what was changed
    per table (rows trimmed, or ``"dropped <column>"``); an empty dict when nothing had to change."""
    path = Path(path)
    target = path.with_name(path.name[: -len(PARTIAL_SUFFIX)]) if path.name.endswith(PARTIAL_SUFFIX) else path
    if target != path and target.exists():
        raise EpisodeFormatError(f"{target} already exists; move it away before recovering {path}")
    with _open(path) as f:
        status = str(f.attrs.get("status", ""))
        if status in ("complete", "failed") and target == path:
            raise EpisodeFormatError(f"{path} is {status}, not an interrupted recording: nothing to recover")
        if status == "recovered" and target == path:
            return path, {}
        changes: dict[str, object] = {}
        last_receive = 0
        # every column is read back before anything changes: a refusal (a missing filter) leaves the file as it was
        scanned = [(name, group, [(key, d) for key, d in group.items() if isinstance(d, h5py.Dataset)])
                   for name, group in list(_tables(f))]
        scanned = [(name, group, columns, {key: readable_rows(d) for key, d in columns})
                   for name, group, columns in scanned]
        for name, group, columns, readable in scanned:
            for key, d in columns:
                if readable[key] == 0 and len(d) > 0:  # nothing of it reads back: drop the column
                    del group[key]
                    changes.setdefault(name, []).append(f"dropped {key}")
                    readable.pop(key)
            if not readable:
                continue
            rows = min(readable.values())
            cut = sum(len(group[key]) - rows for key in readable)
            if cut:
                for key in readable:
                    group[key].resize(rows, axis=0)
                changes.setdefault(name, []).append(f"trimmed {cut} values to {rows} rows")
            if "t_receive_ns" in group and rows:
                last_receive = max(last_receive, int(group["t_receive_ns"][rows - 1]))
        f.attrs["status"] = "recovered"
        f.attrs["recovered_wall_time"] = wall_clock_iso()
        f.attrs["recovered_changes"] = json.dumps(changes)
        if "end_monotonic_ns" not in f.attrs:
            f.attrs["end_monotonic_ns"] = np.int64(last_receive)
    if target != path:
        path.replace(target)
    return target, changes
