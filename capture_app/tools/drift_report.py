"""``capture-app drift EPISODE``: what the live drift watch found during a take, and the calibration that repairs it.

The recorder stores its drift watch's findings in each episode (root attribute ``drift``, docs/episode-format.md,
"Drift"): the alarms (mount slips with their size and instant, latency changes with the estimated lag) and per
watched mount its net change since the calibration. ``--write-calibration OUT`` writes the episode's calibration
with the ego camera mount corrected by that change (``T_headtracker_cam @ Delta``) and, where a latency alarm was
raised, the suggested latency offsets; ``capture-app resync EPISODE --calibration OUT`` then recomputes the take's
final table with it, which is right for the rows after the slip (the rows before it were right with the old
calibration: split the take at the slip if both parts matter).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from calibration.model import Calibration, calibration_from_json
from capture_app.core.errors import CaptureError
from capture_app.episode.file import open_episode


def read_drift(path: str | Path) -> tuple[dict, Calibration]:
    """(the episode's drift record, its calibration); CaptureError when the episode has none."""
    with open_episode(path) as f:
        text = f.attrs.get("drift")
        calibration = calibration_from_json(str(f["calibration"].attrs["json"]), f"{path}:/calibration")
    if text is None:
        raise CaptureError(f"{path}: no drift record (recorded before the drift watch, or not by `record`/`serve`)")
    try:
        return json.loads(text), calibration
    except ValueError:
        raise CaptureError(f"{path}: the drift attribute is not JSON; the file is damaged") from None


def corrected_calibration(drift: dict, calibration: Calibration) -> Calibration:
    """The calibration with the ego camera mount corrected and the suggested latency offsets applied."""
    head = (drift.get("mounts") or {}).get("head") or {}
    changes = {}
    if head.get("T_headtracker_cam_corrected") is not None:
        T = np.array(head["T_headtracker_cam_corrected"], dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise CaptureError("the drift record's corrected T_headtracker_cam is not a finite 4x4 matrix")
        changes["T_headtracker_cam"] = T
    latency = dict(calibration.latency_offsets_ms)
    for alarm in drift.get("alarms", []):
        if alarm.get("kind") == "latency" and "suggested_offset_ms" in alarm:
            latency[alarm["subject"]] = float(alarm["suggested_offset_ms"])
    return dataclasses.replace(calibration, **changes, latency_offsets_ms=latency,
                               calibration_id=f"{calibration.calibration_id}+drift",
                               method=f"{calibration.method}; corrected from the drift watch's estimate")


def describe(drift: dict) -> str:
    """The drift record as lines for the terminal."""
    lines = []
    for body, m in sorted((drift.get("mounts") or {}).items()):
        lines.append(f"  {body:<6} mount: net change {m.get('net_deg', 0):.2f} deg {m.get('net_rotvec_deg')}, "
                     f"{m.get('slips', 0)} slip(s){' UNRESOLVED' if m.get('unresolved') else ''}")
    for a in drift.get("alarms", []):
        lines.append(f"  alarm: {a.get('text')}")
    for stream, history in sorted((drift.get("latency") or {}).items()):
        if history:
            lines.append(f"  {stream:<12} lag against the trackers: last {history[-1]['lag_ms']:+.1f} ms "
                         f"({len(history)} estimates)")
    return "\n".join(lines) or "  nothing found"


def main(path: str, write_calibration: str | None = None) -> int:
    drift, calibration = read_drift(path)
    print(f"{path}: drift watch")
    print(describe(drift))
    if write_calibration:
        corrected_calibration(drift, calibration).save(write_calibration)
        print(f"wrote {write_calibration}: resync with `capture-app resync {path} --calibration {write_calibration}`")
    return 0
