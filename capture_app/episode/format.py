"""The episode file layout (``docs/episode-format.md``): names, versions and a validator.

One HDF5 file per episode::

    /                      attrs: format, format_version, status, software_version, created_wall_time,
                                  start_monotonic_ns, stop_monotonic_ns, end_monotonic_ns, instruction, task, operator,
                                  episode_name, rig_name, rig_config (TOML text), device_serials (JSON),
                                  simulated, sim_seed
    /calibration           attrs: json (the calibration used while recording), calibration_id
    /streams/<stream>/     one group per stream, one row per received sample, in arrival order
        seq, t_capture_ns, t_device_ns, t_publish_ns, t_receive_ns, tracking
        <buffer>           the sample's data (raw arrays; "color" as JPEG blobs or H.264 packets with
                           "color_keyframe", "color_packet"; "depth" Blosc zstd)
        attrs: kind, expected_rate_hz, seq_gaps, writer_overflow, non_monotonic, undelivered, device (JSON);
               video: video_undecodable, video_preroll
    /synced/               one row per synchronizer tick (format 1.1: see docs)
    /annotations/subtasks  subtask segments (see docs)
    /events                t_ns, level, source, message: errors, warnings, gaps, operator actions
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from capture_app.episode.quality import episode_rate_hz, episode_span_ns

FORMAT_NAME = "capture_app.episode"
FORMAT_VERSION = "1.6"
PARTIAL_SUFFIX = ".partial"
EPISODE_SUFFIX = ".h5"
NO_DEVICE_TIME = np.iinfo(np.int64).min  # t_device_ns when the device has no clock of its own
TRACKING_CODES = {"ok": 0, "degraded": 1, "lost": 2}
TIME_COLUMNS = ("seq", "t_capture_ns", "t_device_ns", "t_publish_ns", "t_receive_ns", "tracking", "sender_epoch",
                "clock_offset_ns")
REQUIRED_ROOT_ATTRS = ("format", "format_version", "status", "software_version", "created_wall_time",
                       "start_monotonic_ns", "instruction", "operator", "rig_config", "device_serials")
STATUSES = ("recording", "complete", "recovered", "failed")


@dataclass
class StreamSummary:
    name: str
    kind: str
    samples: int
    rate_hz: float
    expected_rate_hz: float
    seq_gaps: int
    writer_overflow: int
    duration_s: float
    tracking_lost: int
    nbytes: int


@dataclass
class EpisodeSummary:
    path: str
    status: str
    format_version: str
    duration_s: float
    size_bytes: int
    instruction: str
    operator: str
    streams: list[StreamSummary] = field(default_factory=list)
    synced_rows: int = 0
    subtasks: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # data quality, not layout: e.g. a stream with no sample
    failure: str = ""
    quality: dict | None = None
    recovered_changes: dict | None = None  # what `capture-app recover` trimmed or dropped, per table
    losses: dict = field(default_factory=dict)  # bus messages dropped as malformed / not of this rig (root attrs)


def _dataset_bytes(group: h5py.Group) -> int:
    """Stored bytes of a group's datasets; variable-length blobs (JPEG) are counted by their lengths."""
    total = 0
    for item in group.values():
        if isinstance(item, h5py.Dataset):
            if h5py.check_vlen_dtype(item.dtype) is not None and len(item):
                total += sum(len(blob) for blob in item[:])
            else:
                total += item.id.get_storage_size()
    return total


def _json_or_none(text) -> dict | None:
    try:
        return json.loads(text) if text is not None else None
    except (TypeError, ValueError):
        return None


def _video_problems(name: str, group: h5py.Group) -> list[str]:
    """A video stream's layout: keyframe flags present, and every stored frame decodable (a keyframe
    before it, no frame missing in between)."""
    from capture_app.episode.frames import decodable_rows
    missing = [c for c in ("color_keyframe", "color_packet", "sender_epoch") if c not in group]
    if missing:
        return [f"/streams/{name}/{', '.join(missing)} missing (an H.264 stream needs its keyframe flags and "
                f"packet numbers)"]
    n = min(len(group["color_keyframe"]), len(group["color_packet"]), len(group["sender_epoch"]))
    ok = decodable_rows(group["color_packet"][:n], group["sender_epoch"][:n], group["color_keyframe"][:n])
    if not ok.all():
        return [f"/streams/{name}/color: {int((~ok).sum())} of {n} video frames cannot be decoded (first at row "
                f"{int(np.flatnonzero(~ok)[0])}): no keyframe before them, or a frame missing in between"]
    return []


def validate_and_summarize(path: str | Path) -> EpisodeSummary:
    """Open an episode read-only, check it against the documented layout and summarise it.

    Problems (layout violations) are listed in ``summary.problems``; an unreadable
    file raises OSError from h5py.
    """
    from capture_app.episode.file import open_hdf5  # loads the filters (it imports this module)
    path = Path(path)
    with open_hdf5(path) as f:
        problems: list[str] = []
        attrs = f.attrs
        span = episode_span_ns(attrs)
        for key in REQUIRED_ROOT_ATTRS:
            if key not in attrs:
                problems.append(f"root attribute {key!r} missing")
        if attrs.get("format") != FORMAT_NAME:
            problems.append(f"root attribute format is {attrs.get('format')!r}, expected {FORMAT_NAME!r}")
        version = str(attrs.get("format_version", ""))
        if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
            problems.append(f"format_version {version!r} is not readable by this build ({FORMAT_VERSION})")
        status = str(attrs.get("status", ""))
        if status not in STATUSES:
            problems.append(f"status {status!r} not in {STATUSES}")
        if "calibration" not in f or "json" not in f["calibration"].attrs:
            problems.append("/calibration with attribute 'json' missing")
        else:
            try:
                json.loads(f["calibration"].attrs["json"])
            except (TypeError, ValueError):
                problems.append("/calibration json is not valid JSON")
        streams: list[StreamSummary] = []
        warnings: list[str] = []
        starts, ends = [], []
        for name, group in f.get("streams", {}).items():
            n = None
            for column in TIME_COLUMNS:
                if column not in group:
                    problems.append(f"/streams/{name}/{column} missing")
                    continue
                if n is None:
                    n = len(group[column])
                elif len(group[column]) != n:
                    problems.append(f"/streams/{name}/{column} has {len(group[column])} rows, expected {n}")
            n = n or 0
            for dataset_name, dataset in group.items():
                if isinstance(dataset, h5py.Dataset) and len(dataset) != n:
                    problems.append(f"/streams/{name}/{dataset_name} has {len(dataset)} rows, expected {n}")
            t = group["t_capture_ns"][:] if "t_capture_ns" in group else np.zeros(0, np.int64)
            if n > 1 and np.any(np.diff(t) <= 0):
                problems.append(f"/streams/{name}/t_capture_ns is not strictly increasing")
            if "seq" in group and "sender_epoch" in group and n > 1:
                epoch = group["sender_epoch"][:].astype(np.int64)
                seq = group["seq"][:].astype(np.int64)
                if np.any(np.diff(epoch) < 0):
                    problems.append(f"/streams/{name}/sender_epoch decreases")
                same = np.diff(epoch) == 0
                if np.any(np.diff(seq)[same] <= 0):
                    problems.append(f"/streams/{name}/seq is not strictly increasing within a sender epoch")
            if group.attrs.get("color_encoding") == "h264":
                problems.extend(_video_problems(name, group))
                if group.attrs.get("video_undecodable", 0):
                    warnings.append(f"{name}: {int(group.attrs['video_undecodable'])} video frames after lost ones "
                                    f"could not be decoded and were not stored")
            duration = (t[-1] - t[0]) / 1e9 if n > 1 else 0.0
            if n:
                starts.append(t[0])
                ends.append(t[-1])
            lost = int(np.sum(group["tracking"][:] == TRACKING_CODES["lost"])) if "tracking" in group else 0
            streams.append(StreamSummary(
                name=name, kind=str(group.attrs.get("kind", "?")), samples=n,
                rate_hz=episode_rate_hz(t, *span) if n else 0.0,  # over the take, as the quality report
                expected_rate_hz=float(group.attrs.get("expected_rate_hz", 0.0)),
                seq_gaps=int(group.attrs.get("seq_gaps", 0)), writer_overflow=int(group.attrs.get("writer_overflow", 0)),
                duration_s=duration, tracking_lost=lost, nbytes=_dataset_bytes(group)))
        synced_rows = len(f["synced/t_tick_ns"]) if "synced/t_tick_ns" in f else 0
        subtasks = len(f["annotations/subtasks/label"]) if "annotations/subtasks/label" in f else 0
        events = len(f["events/t_ns"]) if "events/t_ns" in f else 0
        try:
            expected = json.loads(attrs.get("expected_rates_hz", "{}"))
        except (TypeError, ValueError):
            expected = {}
        recorded = {s.name: s.samples for s in streams}
        for name in sorted(expected):
            if not recorded.get(name):
                warnings.append(f"stream {name} is configured but recorded no sample")
        if not streams and status == "recovered":
            warnings.append("no sample was written before the recording was interrupted (an empty episode)")
        elif not streams:
            problems.append("no streams in /streams")
        return EpisodeSummary(
            path=str(path), status=status, format_version=version,
            duration_s=(max(ends) - min(starts)) / 1e9 if starts else 0.0,
            size_bytes=path.stat().st_size, instruction=str(attrs.get("instruction", "")),
            operator=str(attrs.get("operator", "")), streams=streams, synced_rows=synced_rows,
            subtasks=subtasks, events=events, problems=problems, warnings=warnings,
            failure=str(attrs.get("failure", "")), quality=_json_or_none(attrs.get("quality")),
            recovered_changes=_json_or_none(attrs.get("recovered_changes")),
            losses={k: int(attrs[k]) for k in ("bus_malformed", "bus_unexpected") if k in attrs})


def format_summary(s: EpisodeSummary) -> str:
    """Human-readable summary, as printed by ``capture-app inspect``."""
    recovered = "  (RECOVERED after an interrupted recording)" if s.status == "recovered" else ""
    lines = [
        f"{s.path}{recovered}",
        f"  status {s.status}, format {s.format_version}, {s.duration_s:.2f} s, {s.size_bytes / 1e6:.1f} MB",
        f"  instruction: {s.instruction!r}   operator: {s.operator!r}",
        *([f"  FAILED: {s.failure}"] if s.failure else []),
        f"  {'stream':<22}{'kind':<11}{'samples':>8}{'rate Hz':>10}{'expected':>10}{'gaps':>6}{'overflow':>9}"
        f"{'lost trk':>9}{'MB':>8}",
    ]
    for st in s.streams:
        lines.append(f"  {st.name:<22}{st.kind:<11}{st.samples:>8}{st.rate_hz:>10.2f}{st.expected_rate_hz:>10.1f}"
                     f"{st.seq_gaps:>6}{st.writer_overflow:>9}{st.tracking_lost:>9}{st.nbytes / 1e6:>8.2f}")
    lines.append(f"  synced rows: {s.synced_rows}   subtasks: {s.subtasks}   events: {s.events}")
    if s.losses:
        lines.append("  bus: " + ", ".join(f"{n} {k.removeprefix('bus_')} message(s) dropped"
                                             for k, n in s.losses.items()))
    if s.status == "recovered":
        changed = "; ".join(f"{table}: {', '.join(map(str, what))}" for table, what in (s.recovered_changes or {}).items())
        lines.append(f"  recovery changed: {changed or 'nothing (every dataset read back whole)'}")
    if s.quality:
        from capture_app.episode.quality import format_report
        lines.append(format_report(s.quality))
    else:
        lines.append("  quality: no report (the episode was not finished; `capture-app resync` computes it)")
    if s.warnings:
        lines.append("  WARNINGS:")
        lines.extend(f"    - {w}" for w in s.warnings)
    if s.problems:
        lines.append("  LAYOUT PROBLEMS:")
        lines.extend(f"    - {p}" for p in s.problems)
    return "\n".join(lines)
