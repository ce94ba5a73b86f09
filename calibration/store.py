"""Calibration versions on disk: ``DIR/current.json`` plus every version in ``DIR/history/``.

Each calibration run writes a new version (id = date-time and method) and makes it
current; nothing is ever overwritten. ``changes`` says what differs between two versions.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from calibration.model import Calibration, calibration_from_json, load_calibration
from capture_app.core.errors import CalibrationError
from capture_app.core.geometry import rotation_angle


class CalibrationStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.history_dir = self.directory / "history"

    @property
    def current_path(self) -> Path:
        return self.directory / "current.json"

    def current(self) -> Calibration | None:
        return load_calibration(self.current_path) if self.current_path.exists() else None

    def versions(self) -> list[Path]:
        """History files, oldest first."""
        return sorted(self.history_dir.glob("*.json")) if self.history_dir.exists() else []

    def get(self, version: str) -> Calibration:
        """A version by id (file stem), by path, or 'current'."""
        if version == "current":
            current = self.current()
            if current is None:
                raise CalibrationError(f"no current calibration in {self.directory}; run `capture-app calibrate ...`")
            return current
        candidate = Path(version)
        if candidate.exists():
            return load_calibration(candidate)
        path = self.history_dir / f"{version}.json"
        if not path.exists():
            known = ", ".join(p.stem for p in self.versions()) or "none"
            raise CalibrationError(f"no calibration version {version!r} in {self.history_dir} (known: {known})")
        return load_calibration(path)

    def save(self, calibration: Calibration) -> Path:
        """Write a new version to the history and make it current. Returns the history file."""
        self.history_dir.mkdir(parents=True, exist_ok=True)
        path = self.history_dir / f"{calibration.calibration_id}.json"
        if path.exists():
            raise CalibrationError(f"calibration version {path} already exists")
        calibration.save(path)
        calibration.save(self.current_path)
        return path


def new_version_id(method: str) -> str:
    """A sortable, unique id: date-time to the millisecond and the method."""
    return f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')[:-3]}-{method}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def changes(old: Calibration | None, new: Calibration) -> list[str]:
    """Human-readable differences from ``old`` to ``new``."""
    if old is None:
        return ["first calibration version"]
    out = []
    pairs = [("T_headtracker_cam", old.T_headtracker_cam, new.T_headtracker_cam),
             ("T_world_topcam", old.T_world_topcam, new.T_world_topcam)]
    pairs += [(f"T_wristtracker_wrist.{h}", old.T_wristtracker_wrist[h], new.T_wristtracker_wrist[h]) for h in ("left", "right")]
    for name, a, b in pairs:
        mm = float(np.linalg.norm(a[:3, 3] - b[:3, 3]) * 1000)
        deg = float(np.degrees(rotation_angle(a[:3, :3], b[:3, :3])))
        if mm > 1e-6 or deg > 1e-6:
            out.append(f"{name}: moved {mm:.2f} mm, rotated {deg:.3f} deg")
    for name in ("ego_intrinsics", "top_intrinsics"):
        if getattr(old, name) != getattr(new, name):
            out.append(f"{name}: {getattr(old, name)} -> {getattr(new, name)}")
    for stream in sorted(set(old.latency_offsets_ms) | set(new.latency_offsets_ms)):
        a, b = old.latency_offsets_ms.get(stream, 0.0), new.latency_offsets_ms.get(stream, 0.0)
        if abs(a - b) > 1e-9:
            out.append(f"latency {stream}: {a:.2f} -> {b:.2f} ms")
    if old.tracker_serials != new.tracker_serials:
        out.append(f"tracker roles: {old.tracker_serials} -> {new.tracker_serials}")
    return out or ["no change"]


def describe(calibration: Calibration) -> str:
    """The calibration as printed by `capture-app calibrate show`."""
    d = calibration.to_dict()
    lines = [f"calibration {d['calibration_id']} ({d['method'] or 'no method'}, {d['created'] or 'no date'}, "
             f"operator {d['operator'] or '-'})"]
    for key in ("T_headtracker_cam", "T_world_topcam"):
        T = np.array(d[key])
        lines.append(f"  {key}: t = {np.round(T[:3, 3] * 1000, 2).tolist()} mm")
    for hand in ("left", "right"):
        T = np.array(d["T_wristtracker_wrist"][hand])
        lines.append(f"  T_wristtracker_wrist.{hand}: t = {np.round(T[:3, 3] * 1000, 2).tolist()} mm")
    lines.append(f"  latency offsets (ms): {d['latency_offsets_ms']}")
    lines.append(f"  tracker roles: {d['tracker_serials']}")
    if d["residuals"]:
        lines.append(f"  residuals: {json.dumps(d['residuals'])}")
    return "\n".join(lines)


__all__ = ["CalibrationStore", "changes", "describe", "new_version_id", "now_iso", "calibration_from_json"]
