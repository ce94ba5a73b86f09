"""Calibration data from a recorded episode: camera frames paired with tracker poses at the
frames' own capture instants (latency offsets applied), and per-stream motion signals."""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from capture_app.episode.file import open_episode
from calibration.board import BoardDetector, BoardView
from calibration.model import Calibration, CameraIntrinsics
from capture_app.episode.frames import FrameReader
from capture_app.core.geometry import pose_to_transform, quat_angle
from capture_app.core.interpolation import Limits, evaluate

MAX_ANGULAR_SPEED_RAD_S = 1.0  # faster head motion blurs the image and magnifies timing errors: view rejected
SPEED_BASELINE_S = 0.04  # speed over 40 ms: between consecutive 250 Hz samples, tracker noise (0.05 deg)
                         # alone reads as ~0.3 rad/s and rejected most slow views


@dataclass
class Pair:
    t_ns: int
    T_world_tracker: np.ndarray
    view: BoardView


def corrected_times(f: h5py.File, stream: str, calibration: Calibration) -> np.ndarray:
    """Capture times of ``stream`` minus its calibrated latency offset (ns)."""
    return f[f"streams/{stream}/t_capture_ns"][:] - calibration.latency_offset_ns(stream)


def tracker_pose_at(f: h5py.File, stream: str, calibration: Calibration, t_ns: np.ndarray):
    """Interpolated tracker poses (4x4, None where invalid) at instants ``t_ns``."""
    times = corrected_times(f, stream, calibration)
    poses = f[f"streams/{stream}/pose"][:]
    tracking = f[f"streams/{stream}/tracking"][:]
    limits = Limits(max_interpolation_gap_ns=30_000_000, max_extrapolation_ns=0)
    out = []
    for t in t_ns:
        e = evaluate("pose", times, poses, tracking, int(t), limits)
        out.append(pose_to_transform(e.value) if e.valid else None)
    return out


def angular_speed(f: h5py.File, stream: str, calibration: Calibration,
                  baseline_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(times ns, angular speed rad/s) of a tracker stream, from samples ``baseline_s`` apart (a longer
    baseline than one sample keeps measurement noise from dominating the speed)."""
    t = corrected_times(f, stream, calibration)
    q = f[f"streams/{stream}/pose"][:, 3:7]
    step = max(1, int(round(baseline_s / max(np.median(np.diff(t)) / 1e9, 1e-6)))) if baseline_s else 1
    dt = (t[step:] - t[:-step]) / 1e9
    return (t[step:] + t[:-step]) // 2, quat_angle(q[step:], q[:-step]) / np.maximum(dt, 1e-6)


def board_pairs(path: str, calibration: Calibration, camera: str, tracker: str, intrinsics: CameraIntrinsics,
                detector: BoardDetector, every: int = 2, max_speed: float | None = MAX_ANGULAR_SPEED_RAD_S,
                max_pnp_error_px: float | None = 1.0) -> tuple[list[Pair], dict]:
    """Every ``every``-th frame of ``camera`` with the board detected, paired with ``tracker``'s pose
    at the frame's corrected capture time. Returns the pairs and counts of rejected frames by reason."""
    rejected = {"board not seen": 0, "tracker invalid": 0, "moving too fast": 0}
    pairs = []
    with open_episode(path) as f:
        frame_times = corrected_times(f, camera, calibration)
        rows = np.arange(0, len(frame_times), every)
        poses = tracker_pose_at(f, tracker, calibration, frame_times[rows])
        speed_t, speed = angular_speed(f, tracker, calibration, baseline_s=SPEED_BASELINE_S)
        frames = FrameReader(f, camera)
        for row, T in zip(rows, poses):
            if T is None:
                rejected["tracker invalid"] += 1
                continue
            nearby = np.abs(speed_t - frame_times[row]) < 20_000_000
            if max_speed is not None and nearby.any() and speed[nearby].max() > max_speed:
                rejected["moving too fast"] += 1
                continue
            image = frames.frame(int(row))
            view = detector.detect(image, intrinsics) if image is not None else None
            if view is None or (max_pnp_error_px is not None and view.reprojection_px > max_pnp_error_px):
                rejected["board not seen"] += 1
                continue
            pairs.append(Pair(int(frame_times[row]), T, view))
    return pairs, rejected
