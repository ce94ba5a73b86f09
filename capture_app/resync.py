"""Offline resync: recompute an episode's /synced group from its raw streams.

The same ``Synchronizer.compute_tick`` runs over the recorded samples, each made visible
at its recorded receive time, so with the calibration used live the rows equal the live
ones. With another calibration (a corrected head mount, new latency offsets) the rows
are re-derived; the previous /synced is kept under /synced_versions/<n> with the
calibration it used, and /synced attribute ``version`` counts the versions.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from calibration.model import Calibration, calibration_from_json
from capture_app import __version__
from capture_app.bus import Message
from capture_app.clock import wall_clock_iso
from capture_app.config import SyncConfig
from capture_app.episode_format import TRACKING_CODES
from capture_app.errors import EpisodeFormatError
from capture_app.streams import SYNCED_STREAMS
from capture_app.synchronizer import StreamBuffer, Synchronizer
from capture_app.writer import _set_attrs

_TRACKING_NAMES = {code: name for name, code in TRACKING_CODES.items()}


def sync_config_from_attrs(attrs) -> SyncConfig:
    """The SyncConfig a /synced group was computed with."""
    return SyncConfig(rate_hz=float(attrs["rate_hz"]), delay_ms=int(attrs["delay_ns"]) / 1e6,
                      max_interpolation_gap_ms=int(attrs["max_interpolation_gap_ns"]) / 1e6,
                      max_extrapolation_ms=int(attrs["max_extrapolation_ns"]) / 1e6,
                      max_image_offset_ms=int(attrs["max_image_offset_ns"]) / 1e6)


def _load_buffers(sync: Synchronizer, f: h5py.File) -> None:
    """Fill the synchronizer's buffers with every recorded sample (no eviction)."""
    for stream in SYNCED_STREAMS:
        path = f"streams/{stream}"
        buffer = sync.buffers[stream]
        if path not in f:
            continue
        group = f[path]
        n = len(group["seq"])
        sync.buffers[stream] = buffer = StreamBuffer(buffer.kind, n + 1)
        seq = group["seq"][:].astype(np.int64)
        t_capture = group["t_capture_ns"][:]
        t_receive = group["t_receive_ns"][:]
        tracking = group["tracking"][:]
        epochs = group["sender_epoch"][:] if "sender_epoch" in group else np.zeros(n, np.uint16)
        column = {"pose": "pose", "keypoints": "keypoints"}.get(buffer.kind)
        values = group[column][:] if column else None
        for i in range(n):
            message = Message(stream, int(seq[i]), int(t_capture[i]), None, 0, _TRACKING_NAMES[int(tracking[i])],
                              {column: values[i]} if column else {}, {}, {}, t_receive_ns=int(t_receive[i]),
                              sender=int(epochs[i]))
            sync.ingest(message)


def compute_rows(f: h5py.File, calibration: Calibration, tick_times_ns: np.ndarray,
                 sync_config: SyncConfig) -> dict[str, np.ndarray]:
    """Synced rows (column -> stacked array) for the given tick times from an open episode."""
    sync = Synchronizer(sync_config, calibration)
    sync.receive_floor_ns = int(f["synced"].attrs.get("receive_floor_ns", 0)) if "synced" in f else 0
    _load_buffers(sync, f)
    rows = [sync.compute_tick(int(t)).row() for t in tick_times_ns]
    columns = {name: np.stack([r[name] for r in rows]) for name in rows[0]} if rows else {}
    if columns:
        columns["lateness_ns"][:] = 0
        columns["stream_index"] = _row_indices(f, columns["stream_seq"], columns["t_tick_ns"])
    return columns


def _row_indices(f: h5py.File, stream_seq: np.ndarray, tick_ns: np.ndarray) -> np.ndarray:
    """Per tick and stream, the row of the sample used: the last row with that seq received by the
    tick (seq numbers restart when a driver restarts, so seq alone is not unique)."""
    index = np.full(stream_seq.shape, -1, np.int64)
    for j, stream in enumerate(SYNCED_STREAMS):
        if f"streams/{stream}/seq" not in f:
            continue
        seqs = f[f"streams/{stream}/seq"][:].astype(np.int64)
        received = f[f"streams/{stream}/t_receive_ns"][:]
        rows_of: dict[int, list[int]] = {}
        for row, seq in enumerate(seqs):
            rows_of.setdefault(int(seq), []).append(row)
        for i, wanted in enumerate(stream_seq[:, j]):
            rows = [r for r in rows_of.get(int(wanted), ()) if received[r] <= tick_ns[i]]
            if wanted >= 0 and rows:
                index[i, j] = rows[-1]
    return index


def resync_episode(path: str | Path, calibration: Calibration | None = None) -> int:
    """Rewrite /synced of the episode at ``path``; returns the new version number.

    ``calibration`` None re-derives with the calibration embedded in the episode.
    """
    path = Path(path)
    with h5py.File(path, "a") as f:
        if "synced/t_tick_ns" not in f:
            raise EpisodeFormatError(f"{path}: no /synced/t_tick_ns to resync (episode too short or not an episode)")
        old = f["synced"]
        if calibration is None:
            calibration = calibration_from_json(str(f["calibration"].attrs["json"]), f"{path}:/calibration")
        config = sync_config_from_attrs(old.attrs)
        columns = compute_rows(f, calibration, old["t_tick_ns"][:], config)
        version = int(old.attrs.get("version", 1))
        old_attrs = dict(old.attrs)
        if "calibration_json" not in old_attrs:
            old.attrs["calibration_json"] = str(f["calibration"].attrs["json"])
        f.require_group("synced_versions")
        f.move("synced", f"synced_versions/{version}")
        new = f.create_group("synced")
        for name, values in columns.items():
            new.create_dataset(name, data=values, chunks=True, maxshape=(None, *values.shape[1:]))
        for key, value in old_attrs.items():
            new.attrs[key] = value
        _set_attrs(new, {"version": version + 1, "calibration_id": calibration.calibration_id,
                         "calibration_json": calibration.to_json(), "resynced_wall_time": wall_clock_iso(),
                         "resynced_by": f"capture-app {__version__}",
                         "latency_offsets_ns": {s: calibration.latency_offset_ns(s) for s in SYNCED_STREAMS}})
        return version + 1
