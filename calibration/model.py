"""The rig calibration: fixed transforms, intrinsics, latency offsets, tracker roles.

Stored as JSON (``docs/calibration-format.md``, format version 1). Transforms are
4x4 row-major nested lists named ``T_a_b`` (maps points in frame b to frame a),
metres. Loading validates everything and refuses a corrupt or incomplete file with
a message naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capture_app.core.errors import CalibrationError

FORMAT_VERSION = 1
TRACKER_ROLES = ("head", "left_wrist", "right_wrist")


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height``; OpenCV distortion coefficients."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Project points (..., 3) in the camera frame (+z forward) to pixels (..., 2), ignoring distortion.

        Points behind the camera (z <= 1 mm) give NaN.
        """
        p = np.asarray(points_cam, dtype=float)
        z = np.where(p[..., 2:3] > 1e-3, p[..., 2:3], np.nan)
        return np.concatenate([self.fx * p[..., 0:1] / z + self.cx, self.fy * p[..., 1:2] / z + self.cy], axis=-1)

    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """The same camera at another resolution (same field of view)."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, self.distortion)


@dataclass(frozen=True)
class Calibration:
    """One calibration version of a rig.

    - ``T_headtracker_cam``: ego camera (+z forward, +y down) in the head tracker's frame.
    - ``T_wristtracker_wrist``: per hand, the wrist frame in its tracker's frame.
    - ``T_world_topcam``: top camera in the lighthouse world frame.
    - ``latency_offsets_ms``: per stream, subtracted from capture stamps by the synchronizer.
    - ``tracker_serials``: role (head / left_wrist / right_wrist) -> tracker serial.
    """

    T_headtracker_cam: np.ndarray
    T_wristtracker_wrist: dict[str, np.ndarray]
    ego_intrinsics: CameraIntrinsics
    top_intrinsics: CameraIntrinsics
    T_world_topcam: np.ndarray
    latency_offsets_ms: dict[str, float] = field(default_factory=dict)
    tracker_serials: dict[str, str] = field(default_factory=dict)
    calibration_id: str = "uncalibrated"
    created: str = ""
    method: str = ""
    operator: str = ""
    residuals: dict[str, Any] = field(default_factory=dict)

    def latency_offset_ns(self, stream: str) -> int:
        return int(round(self.latency_offsets_ms.get(stream, 0.0) * 1e6))

    def to_dict(self) -> dict:
        return {
            "format": "capture_app.calibration",
            "format_version": FORMAT_VERSION,
            "calibration_id": self.calibration_id,
            "created": self.created,
            "method": self.method,
            "operator": self.operator,
            "T_headtracker_cam": np.asarray(self.T_headtracker_cam).tolist(),
            "T_wristtracker_wrist": {h: np.asarray(T).tolist() for h, T in self.T_wristtracker_wrist.items()},
            "ego_intrinsics": _intrinsics_dict(self.ego_intrinsics),
            "top_intrinsics": _intrinsics_dict(self.top_intrinsics),
            "T_world_topcam": np.asarray(self.T_world_topcam).tolist(),
            "latency_offsets_ms": dict(self.latency_offsets_ms),
            "tracker_serials": dict(self.tracker_serials),
            "residuals": self.residuals,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file + rename)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)


def _intrinsics_dict(k: CameraIntrinsics) -> dict:
    d = dataclasses.asdict(k)
    d["distortion"] = list(k.distortion)
    return d


def _transform(value: Any, where: str) -> np.ndarray:
    try:
        T = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where} is not a 4x4 matrix of numbers") from None
    if T.shape != (4, 4):
        raise CalibrationError(f"{where} has shape {T.shape}, expected 4x4 (row-major nested lists)")
    if not np.all(np.isfinite(T)):
        raise CalibrationError(f"{where} contains NaN or infinity")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-9):
        raise CalibrationError(f"{where} last row is {T[3].tolist()}, expected [0, 0, 0, 1]")
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
        raise CalibrationError(f"{where} rotation is not orthonormal with det +1 (re-run the calibration tool)")
    if np.linalg.norm(T[:3, 3]) > 20.0:
        raise CalibrationError(f"{where} translation {T[:3, 3].tolist()} is over 20 m; units must be metres")
    return T


def _intrinsics(value: Any, where: str) -> CameraIntrinsics:
    if not isinstance(value, dict):
        raise CalibrationError(f"{where} must be an object with width, height, fx, fy, cx, cy")
    missing = [k for k in ("width", "height", "fx", "fy", "cx", "cy") if k not in value]
    if missing:
        raise CalibrationError(f"{where} is missing {missing}")
    try:
        k = CameraIntrinsics(int(value["width"]), int(value["height"]), float(value["fx"]), float(value["fy"]),
                             float(value["cx"]), float(value["cy"]),
                             tuple(float(x) for x in value.get("distortion", (0.0,) * 5)))
    except (TypeError, ValueError):
        raise CalibrationError(f"{where} has a non-numeric value") from None
    if k.width <= 0 or k.height <= 0 or not (k.fx > 0 and k.fy > 0) or not all(map(math.isfinite, (k.cx, k.cy))):
        raise CalibrationError(f"{where}: width, height, fx, fy must be positive and cx, cy finite")
    return k


def calibration_from_dict(data: Any, source: str = "<calibration>") -> Calibration:
    """Validate and build a Calibration from parsed JSON; CalibrationError names what is wrong."""
    if not isinstance(data, dict):
        raise CalibrationError(f"{source}: top level must be a JSON object")
    if data.get("format_version") != FORMAT_VERSION:
        raise CalibrationError(f"{source}: format_version is {data.get('format_version')!r}, this build reads "
                               f"{FORMAT_VERSION}; re-export it with `capture-app calibrate show --export`")
    required = ("T_headtracker_cam", "T_wristtracker_wrist", "ego_intrinsics", "top_intrinsics", "T_world_topcam")
    missing = [k for k in required if k not in data]
    if missing:
        raise CalibrationError(f"{source}: missing field(s) {missing}")
    wrists = data["T_wristtracker_wrist"]
    if not isinstance(wrists, dict) or set(wrists) != {"left", "right"}:
        raise CalibrationError(f"{source}: T_wristtracker_wrist must have exactly 'left' and 'right'")
    latency = data.get("latency_offsets_ms", {})
    if not isinstance(latency, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < 1000
            for v in latency.values()):
        raise CalibrationError(f"{source}: latency_offsets_ms must map stream names to finite milliseconds (< 1 s)")
    serials = data.get("tracker_serials", {})
    if not isinstance(serials, dict) or not set(serials) <= set(TRACKER_ROLES):
        raise CalibrationError(f"{source}: tracker_serials keys must be among {TRACKER_ROLES}")
    return Calibration(
        T_headtracker_cam=_transform(data["T_headtracker_cam"], f"{source}: T_headtracker_cam"),
        T_wristtracker_wrist={h: _transform(wrists[h], f"{source}: T_wristtracker_wrist.{h}") for h in ("left", "right")},
        ego_intrinsics=_intrinsics(data["ego_intrinsics"], f"{source}: ego_intrinsics"),
        top_intrinsics=_intrinsics(data["top_intrinsics"], f"{source}: top_intrinsics"),
        T_world_topcam=_transform(data["T_world_topcam"], f"{source}: T_world_topcam"),
        latency_offsets_ms={str(k): float(v) for k, v in latency.items()},
        tracker_serials={str(k): str(v) for k, v in serials.items()},
        calibration_id=str(data.get("calibration_id", "unnamed")),
        created=str(data.get("created", "")),
        method=str(data.get("method", "")),
        operator=str(data.get("operator", "")),
        residuals=data.get("residuals", {}) if isinstance(data.get("residuals", {}), dict) else {},
    )


def calibration_from_json(text: str, source: str = "<calibration>") -> Calibration:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}); restore it from the "
                               f"calibration history or re-run `capture-app calibrate`") from None
    return calibration_from_dict(data, source)


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration file {path}: {exc.strerror}; check [calibration] path "
                               f"in the rig config or run `capture-app calibrate`") from None
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"calibration file {path} is not UTF-8 JSON text (byte {exc.start} is invalid): the "
                               f"file is corrupt or not a calibration; restore it from its version directory "
                               f"(`capture-app calibrate show`) or calibrate again") from None
    return calibration_from_json(text, str(path))
