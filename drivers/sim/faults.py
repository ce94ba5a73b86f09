"""Faults the simulated rig can be told to have, so the rig check and the drift alarms can be tested.

Every fault is a driver option (docs/rig-config.md, "Simulated faults"); times are seconds of motion time
(after the session's epoch, the same clock for every simulated device):

- ``mount_slip_deg`` = [rx, ry, rz] (a rotation vector in degrees, in the body frame: the ego camera's for
  the head tracker, the wrist frame for a wrist tracker) and ``mount_slip_at_s``: from that instant the
  tracker sits rotated on its mount. The body keeps moving as before; the tracker reports
  ``T_world_tracker' = T_world_body @ inv(T_tracker_body @ Delta)``, so a calibration made before the slip
  puts the body off by ``Delta``, and ``T_tracker_body @ Delta`` is the corrected calibration.
- ``latency_change_ms`` and ``latency_change_at_s``: the device's true latency grows by that much from then on.
- ``worn_on`` (trackers: head, left_wrist, right_wrist) and ``hand`` (gloves: left, right): what the device is
  really on; differing from its stream swaps roles or gloves.
- jitter on one tracker: the existing ``position_noise_mm`` / ``rotation_noise_deg`` options.
- ``head_motion = "check"`` and ``hand_motion = "check"`` (every device): the scripted rig check's motions
  instead of ordinary work (``drivers/sim/check_motion.py``).
"""

from __future__ import annotations

import numpy as np

from capture_app.core.geometry import axis_angle_to_matrix, invert_transform, make_transform

TRACKER_BODIES = ("head", "left_wrist", "right_wrist")


def check_fault_options(options) -> None:
    """ValueError naming the option when a fault option is malformed (called from SimOptions)."""
    slip = options.mount_slip_deg
    try:
        slip = tuple(float(v) for v in slip)
    except (TypeError, ValueError):
        raise ValueError(f"option mount_slip_deg = {slip!r}: expected [rx, ry, rz] in degrees") from None
    if slip and (len(slip) != 3 or not np.all(np.isfinite(slip)) or np.linalg.norm(slip) > 90):
        raise ValueError(f"option mount_slip_deg = {slip!r}: expected three finite degrees, under 90 in all")
    object.__setattr__(options, "mount_slip_deg", slip)
    if options.worn_on not in ("",) + TRACKER_BODIES:
        raise ValueError(f"option worn_on = {options.worn_on!r}: expected one of {TRACKER_BODIES}")
    if options.hand not in ("", "left", "right"):
        raise ValueError(f"option hand = {options.hand!r}: expected left or right")
    if not isinstance(options.latency_change_ms, (int, float)) or abs(options.latency_change_ms) > 1000:
        raise ValueError(f"option latency_change_ms = {options.latency_change_ms!r}: expected milliseconds, |x| < 1000")


def slip_correction(T_tracker_body: np.ndarray, slip_deg) -> np.ndarray:
    """``C`` with ``T_world_tracker_after = T_world_tracker_before @ C`` for a body-frame slip (rotation vector, deg)."""
    delta = make_transform(axis_angle_to_matrix(np.radians(np.asarray(slip_deg, dtype=float))), np.zeros(3))
    return T_tracker_body @ invert_transform(delta) @ invert_transform(T_tracker_body)


def apply_slip(T_world_tracker: np.ndarray, t_s: np.ndarray, options, T_tracker_body: np.ndarray) -> np.ndarray:
    """The tracker poses (n, 4, 4) at motion times ``t_s`` (n,) with the configured mount slip applied."""
    if not options.mount_slip_deg:
        return T_world_tracker
    after = np.asarray(t_s) >= options.mount_slip_at_s
    if after.any():
        T_world_tracker = T_world_tracker.copy()
        T_world_tracker[after] = T_world_tracker[after] @ slip_correction(T_tracker_body, options.mount_slip_deg)
    return T_world_tracker


def latency_ns(options, t_motion_s: np.ndarray) -> np.ndarray:
    """The true latency (ns, int64) of each sample at motion time ``t_motion_s``."""
    base = np.full(len(t_motion_s), options.latency_ms * 1e6)
    if options.latency_change_ms:
        base = base + np.where(np.asarray(t_motion_s) >= options.latency_change_at_s, options.latency_change_ms * 1e6, 0.0)
    return base.astype(np.int64)


def tracker_body(stream: str, options) -> str:
    """What a tracker is really on: its ``worn_on`` option, else what its stream says."""
    if options.worn_on:
        return options.worn_on
    return {"head_tracker": "head", "left_wrist_tracker": "left_wrist"}.get(stream, "right_wrist")


def glove_hand(stream: str, options) -> str:
    """The hand a glove is really on: its ``hand`` option, else what its stream says."""
    return options.hand or ("left" if stream.startswith("left") else "right")
