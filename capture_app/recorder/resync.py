"""Offline synchronization of a recorded episode: the final table, the live table, resync.

The same ``Synchronizer.compute_tick`` runs over the recorded samples. For the **final**
table (``/synced`` of a finished episode) every sample counts by its capture time, however
late it arrived, over the whole episode including its tail: a row is invalid only when its
data does not exist or is lost. The **live** table (``/synced_live``) is what the recorder
computed while recording, each sample visible from its receive time on; ``live_rows``
reproduces it exactly, so the live behaviour stays auditable. Resync with another
calibration (a corrected head mount, new latency offsets) re-derives the final table; the
previous /synced is kept under /synced_versions/<n> with the calibration it used, and the
/synced attribute ``version`` counts the versions.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from calibration.model import Calibration, calibration_from_json
from capture_app import __version__
from capture_app.episode.annotations import read_segments, write_segments
from capture_app.core.clock import wall_clock_iso
from capture_app.rig.config import SyncConfig
from capture_app.episode.file import open_episode
from capture_app.episode.format import TRACKING_CODES
from capture_app.core.errors import EpisodeFormatError
from capture_app.core.streams import SYNCED_STREAMS
from capture_app.recorder.synchronizer import Synchronizer
from capture_app.recorder.columns import set_attrs

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
        if path not in f:
            continue
        group = f[path]
        n = len(group["seq"])
        column = {"pose": "pose", "keypoints": "keypoints"}.get(sync.buffers[stream].kind)
        epochs = group["sender_epoch"][:] if "sender_epoch" in group else np.zeros(n, np.uint16)
        sync.load_stream(stream, group["t_capture_ns"][:], group["t_receive_ns"][:], group["seq"][:].astype(np.int64),
                         group["tracking"][:], group[column][:] if column else None, epochs.astype(np.int64))


EVERY_SAMPLE = np.iinfo(np.int64).max  # a receive cutoff that makes every recorded sample visible


def compute_rows(f: h5py.File, calibration: Calibration, tick_times_ns: np.ndarray,
                 sync_config: SyncConfig, *, final: bool = True, receive_floor_ns: int = 0) -> dict[str, np.ndarray]:
    """Synced rows (column -> stacked array) for the given tick times from an open episode:
    ``final`` uses every sample by capture time; otherwise each tick sees only the samples received by
    its tick time and at or after ``receive_floor_ns``, as the live recorder did."""
    sync = Synchronizer(sync_config, calibration)
    sync.receive_floor_ns = 0 if final else receive_floor_ns
    _load_buffers(sync, f)
    cutoff = EVERY_SAMPLE if final else None
    rows = [sync.compute_tick(int(t), cutoff).row() for t in tick_times_ns]
    columns = {name: np.stack([r[name] for r in rows]) for name in rows[0]} if rows else {}
    if columns:
        columns["lateness_ns"][:] = 0
        visible_by = np.full(len(tick_times_ns), EVERY_SAMPLE) if final else columns["t_tick_ns"]
        columns["stream_index"] = _row_indices(f, columns["stream_seq"], visible_by)
    return columns


def live_table(f: h5py.File) -> h5py.Group:
    """The table the recorder computed live (/synced_live, or /synced of a file not yet finalized)."""
    if "synced_live" in f:
        return f["synced_live"]
    if "synced" in f and f["synced"].attrs.get("table", "live") == "live":
        return f["synced"]
    raise EpisodeFormatError(f"{f.filename}: no live synced table (episode too short, or not an episode)")


def live_rows(f: h5py.File, calibration: Calibration | None = None) -> dict[str, np.ndarray]:
    """The live table recomputed from the raw streams (equal to /synced_live with its own calibration)."""
    live = live_table(f)
    calibration = calibration or calibration_from_json(str(f["calibration"].attrs["json"]), f"{f.filename}:/calibration")
    return compute_rows(f, calibration, live["t_tick_ns"][:], sync_config_from_attrs(live.attrs), final=False,
                        receive_floor_ns=int(live.attrs.get("receive_floor_ns", 0)))


# The parts of the action (docs/episode-format.md, action_valid) and the streams each needs.
ACTION_PARTS = {"left_wrist": ("head_tracker", "left_wrist_tracker"), "right_wrist": ("head_tracker", "right_wrist_tracker"),
                "left_fingers": ("left_glove",), "right_fingers": ("right_glove",)}


def action_span_ns(first_last: dict[str, tuple[int, int]], start_ns: int | None = None,
                   stop_ns: int | None = None) -> tuple[int, int] | None:
    """The span (t_eval, ns) of the final table. ``first_last``: stream -> (first, last) capture time with its
    latency offset removed, for the streams that have samples. Each part of the action (ACTION_PARTS) has data
    from the latest first to the earliest last sample of its streams. The span begins at the take's start
    ``start_ns`` moved into [earliest, latest] of the parts' begins, and ends at its stop ``stop_ns`` moved
    into [earliest, latest] of the parts' ends (None: the latest begin, the earliest end). So the rows cover
    the take where the action has data, reach out to where every part has data, and never run where no part
    has any. Cameras never move it. None when no part has data."""
    parts = []
    for streams in ACTION_PARTS.values():
        if all(s in first_last for s in streams):
            begin, end = max(first_last[s][0] for s in streams), min(first_last[s][1] for s in streams)
            if begin <= end:
                parts.append((begin, end))
    if not parts:
        return None
    begins, ends = [a for a, _ in parts], [b for _, b in parts]
    start = max(begins) if start_ns is None else start_ns
    stop = min(ends) if stop_ns is None else stop_ns
    return min(max(start, min(begins)), max(begins)), min(max(stop, min(ends)), max(ends))


def final_tick_times(f: h5py.File, live_attrs, config: SyncConfig, calibration: Calibration) -> np.ndarray:
    """The live tick grid (same origin and period) over ``action_span_ns`` (latency offsets removed; the
    take's start and stop from the root attributes): every tick whose t_eval lies in the span. A camera
    delivering frames captured before the start, or running on after the trackers stop, cannot move it; a
    stream that fails shows as missing in its rows. Without any action data: from the earliest first to the
    latest last sample of every stream."""
    live_ticks = f["synced_live/t_tick_ns"] if "synced_live/t_tick_ns" in f else f["synced/t_tick_ns"]
    origin = int(live_ticks[0])
    period = int(round(1e9 / config.rate_hz))
    delay = int(round(config.delay_ms * 1e6))
    first_last = {}
    for s in SYNCED_STREAMS:
        path = f"streams/{s}/t_capture_ns"
        if path in f and len(f[path]):
            offset = calibration.latency_offset_ns(s)
            first_last[s] = (int(f[path][0]) - offset, int(f[path][-1]) - offset)
    if not first_last:
        return np.array([origin], np.int64)
    attrs = f.attrs
    start = int(attrs["start_monotonic_ns"]) if "start_monotonic_ns" in attrs else None
    stop = attrs.get("stop_monotonic_ns", attrs.get("end_monotonic_ns"))
    span = action_span_ns(first_last, start, None if stop is None else int(stop))
    if span is None:
        span = (min(a for a, _ in first_last.values()), max(b for _, b in first_last.values()))
    start_eval, end_eval = span
    first = origin + -(-(start_eval + delay - origin) // period) * period  # first grid tick with t_eval >= start
    count = max(1, (end_eval + delay - first) // period + 1)
    return first + period * np.arange(count, dtype=np.int64)


def _row_indices(f: h5py.File, stream_seq: np.ndarray, tick_ns: np.ndarray, streams=SYNCED_STREAMS) -> np.ndarray:
    """Per tick and stream, the row of the sample used: the last row with that seq received by
    ``tick_ns`` (seq numbers restart when a driver restarts, so seq alone is not unique). Only the columns of
    ``streams`` are resolved (the others stay -1)."""
    index = np.full(stream_seq.shape, -1, np.int64)
    for j, stream in enumerate(SYNCED_STREAMS):
        if f"streams/{stream}/seq" not in f or stream not in streams:
            continue
        seqs = f[f"streams/{stream}/seq"][:].astype(np.int64)
        received = f[f"streams/{stream}/t_receive_ns"][:]
        index[:, j] = last_rows_received_by(seqs, received, stream_seq[:, j], tick_ns)
    return index


def last_rows_received_by(seqs: np.ndarray, received: np.ndarray, wanted: np.ndarray,
                          cutoff_ns: np.ndarray) -> np.ndarray:
    """For each query i: the largest row r with ``seqs[r] == wanted[i]`` and ``received[r] <= cutoff_ns[i]``
    (-1 when there is none, or ``wanted[i] < 0``). Vectorized where the receive stamps never decrease with the
    row (a recorded stream); row by row otherwise."""
    wanted = np.asarray(wanted, np.int64)
    cutoff_ns = np.asarray(cutoff_ns, np.int64)
    result = np.full(len(wanted), -1, np.int64)
    if len(seqs) == 0:
        return result
    if np.any(np.diff(received) < 0):
        rows_of: dict[int, list[int]] = {}
        for row, seq in enumerate(seqs):
            rows_of.setdefault(int(seq), []).append(row)
        for i, w in enumerate(wanted):
            rows = [r for r in rows_of.get(int(w), ()) if received[r] <= cutoff_ns[i]]
            if w >= 0 and rows:
                result[i] = rows[-1]
        return result
    n = len(seqs)
    order = np.lexsort((np.arange(n), seqs))  # by seq, then row: within a seq, receive stamps never decrease
    groups, group_of = np.unique(seqs[order], return_inverse=True)
    received_sorted = np.sort(received)
    rank = np.searchsorted(received_sorted, received[order], side="left")  # received[r] <= c <=> rank < count(<= c)
    key = group_of.astype(np.int64) * (n + 1) + rank  # ascending
    g = np.searchsorted(groups, wanted)
    present = (wanted >= 0) & (g < len(groups)) & (groups[np.minimum(g, len(groups) - 1)] == wanted)
    allowed = np.searchsorted(received_sorted, cutoff_ns, side="right") - 1  # largest rank received by the cutoff
    position = np.searchsorted(key, g.astype(np.int64) * (n + 1) + allowed, side="right") - 1
    found = present & (allowed >= 0) & (position >= 0)
    found &= group_of[np.maximum(position, 0)] == g
    result[found] = order[position[found]]
    return result


def _write_table(f: h5py.File, name: str, columns: dict[str, np.ndarray], attrs: dict) -> None:
    group = f.create_group(name)
    for column, values in columns.items():
        group.create_dataset(column, data=values, chunks=True, maxshape=(None, *values.shape[1:]))
    for key, value in attrs.items():
        group.attrs[key] = value


def final_rows(f: h5py.File, calibration: Calibration, tick_times_ns: np.ndarray, sync_config: SyncConfig,
               computed: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The final table's columns for ``tick_times_ns``: ``computed`` (rows already computed by the same
    ``compute_tick`` on every sample, ``capture_app.recorder.final_follower``, with or without ``stream_index``)
    or computed here from the file; ``lateness_ns`` 0, and ``stream_index`` from the file unless ``computed``
    has it."""
    if computed is None:
        return compute_rows(f, calibration, tick_times_ns, sync_config, final=True)
    columns = dict(computed)
    columns["lateness_ns"] = np.zeros(len(tick_times_ns), np.int64)
    if "stream_index" not in columns:
        columns["stream_index"] = _row_indices(f, columns["stream_seq"], np.full(len(tick_times_ns), EVERY_SAMPLE))
    return columns


def write_final_table(f: h5py.File, calibration: Calibration, *, version: int = 1,
                      rows_source=None) -> dict[str, np.ndarray]:
    """Compute the final table into /synced; the live one becomes /synced_live (once), an older final
    one goes to /synced_versions/<version - 1>. Returns the columns. ``rows_source(f, ticks, config)``, when
    given, may supply the rows already computed (or None: they are computed here)."""
    live = live_table(f)
    live_attrs = dict(live.attrs)
    config = sync_config_from_attrs(live_attrs)
    ticks = final_tick_times(f, live_attrs, config, calibration)
    computed = rows_source(f, ticks, config) if rows_source is not None else None
    columns = final_rows(f, calibration, ticks, config, computed)
    if "synced_final_tmp" in f:  # left by a resync killed before its rename: scratch, never the table of record
        del f["synced_final_tmp"]
    _write_table(f, "synced_final_tmp", columns, live_attrs)  # written whole before anything is renamed
    if "synced" in f and f["synced"].attrs.get("table", "live") == "live" and "synced_live" not in f:
        f["synced"].attrs["table"] = "live"
        f.move("synced", "synced_live")
    elif "synced" in f:
        old = f["synced"]
        if "calibration_json" not in old.attrs:
            old.attrs["calibration_json"] = str(f["calibration"].attrs["json"])
        f.require_group("synced_versions")
        f.move("synced", f"synced_versions/{version - 1}")
    f.move("synced_final_tmp", "synced")
    segments = read_segments(f)
    if segments:  # their tick indices refer to /synced: point them into the new table
        write_segments(f, segments)
    set_attrs(f["synced"], {"table": "final", "receive_cutoff": "none: every sample by capture time",
                             "rows_computed": "during the take" if computed is not None else "from the file",
                             "version": version, "calibration_id": calibration.calibration_id,
                             "calibration_json": calibration.to_json(),
                             "latency_offsets_ns": {s: calibration.latency_offset_ns(s) for s in SYNCED_STREAMS}})
    return columns


def resync_episode(path: str | Path, calibration: Calibration | None = None) -> int:
    """Recompute the final /synced table of the episode at ``path``; returns the new version number.

    ``calibration`` None re-derives with the calibration embedded in the episode. The live table is kept.
    """
    path = Path(path)
    with open_episode(path, "r+") as f:
        live_table(f)  # raises a clear error when there is nothing to resync
        if calibration is None:
            calibration = calibration_from_json(str(f["calibration"].attrs["json"]), f"{path}:/calibration")
        is_final = "synced" in f and f["synced"].attrs.get("table", "live") == "final"
        version = int(f["synced"].attrs.get("version", 1)) + 1 if is_final else 1
        write_final_table(f, calibration, version=version)
        set_attrs(f["synced"], {"resynced_wall_time": wall_clock_iso(), "resynced_by": f"capture-app {__version__}"})
        return version
