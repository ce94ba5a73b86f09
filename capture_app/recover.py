"""Recovering an episode left as ``.partial`` by a crash, a kill or a full disk.

Everything flushed before the crash is in the file. Datasets of one table may have been
extended unevenly when the writer died mid-flush: every table is trimmed to its shortest
column, the file is marked ``status = "recovered"`` with what was trimmed, and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from capture_app.clock import wall_clock_iso
from capture_app.episode_format import PARTIAL_SUFFIX
from capture_app.errors import EpisodeFormatError


def _tables(f: h5py.File):
    """Groups whose datasets are columns of one table (one row per sample / tick / event)."""
    for name, group in f.get("streams", {}).items():
        yield f"streams/{name}", group
    for name in ("synced", "events"):
        if name in f:
            yield name, f[name]


def recover(path: str | Path) -> tuple[Path, dict]:
    """Trim, mark and rename ``NAME.h5.partial`` to ``NAME.h5``. Returns the new path and rows trimmed per table."""
    path = Path(path)
    if not path.name.endswith(PARTIAL_SUFFIX):
        raise EpisodeFormatError(f"{path} is not a .partial episode; only files left by an interrupted recording "
                                 f"need recovering")
    target = path.with_name(path.name[: -len(PARTIAL_SUFFIX)])
    if target.exists():
        raise EpisodeFormatError(f"{target} already exists; move it away before recovering {path}")
    try:
        f = h5py.File(path, "r+")
    except OSError as exc:
        raise EpisodeFormatError(f"cannot open {path} ({exc}). If another process still writes it, stop that "
                                 f"first; if it was never flushed, nothing can be recovered.") from None
    trimmed = {}
    with f:
        last_receive = 0
        for name, group in _tables(f):
            columns = [d for d in group.values() if isinstance(d, h5py.Dataset)]
            if not columns:
                continue
            rows = min(len(d) for d in columns)
            cut = sum(len(d) - rows for d in columns)
            if cut:
                for d in columns:
                    d.resize(rows, axis=0)
                trimmed[name] = int(cut)
            if "t_receive_ns" in group and rows:
                last_receive = max(last_receive, int(group["t_receive_ns"][rows - 1]))
        f.attrs["status"] = "recovered"
        f.attrs["recovered_wall_time"] = wall_clock_iso()
        f.attrs["recovered_trimmed"] = json.dumps(trimmed)
        if "end_monotonic_ns" not in f.attrs:
            f.attrs["end_monotonic_ns"] = np.int64(last_receive)
    path.replace(target)
    return target, trimmed
