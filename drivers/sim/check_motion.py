"""The scripted rig check's motions, as the simulated operator performs them (``head_motion = "check"``,
``hand_motion = "check"``).

The script (seconds of motion time after the epoch, ``CHECK_STEPS``) is the one ``capture-app check`` prompts
(``capture_app.core.rig_checks.CHECK_STEPS``): hold still, turn the head left and right, rotate each
wrist in turn, open and close each hand in turn, hands flat on the table in view of the top camera, sliding
left and right on it (the top camera's latency is measured from that motion). Pure functions of t, vectorised
like ``motion.py``.
"""

from __future__ import annotations

import numpy as np

from capture_app.core.geometry import axis_angle_to_matrix, make_transform

from capture_app.core.rig_checks import CHECK_STEPS  # noqa: E402  (the recorder prompts the same script)

CHECK_DURATION_S = CHECK_STEPS[-1][2]
SLIDE_M = 0.05  # hands on the table: each slides +-5 cm along world x (left-right in both cameras)
SLIDE_HZ = {"left": 0.8, "right": 0.65}  # different, like the wrist rotations


def _window(t: np.ndarray, start: float, end: float, ramp: float = 0.5) -> np.ndarray:
    """0 outside [start, end], 1 inside, with cosine ramps of ``ramp`` s at both ends."""
    up = np.clip((t - start) / ramp, 0.0, 1.0)
    down = np.clip((end - t) / ramp, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * up)) * (0.5 - 0.5 * np.cos(np.pi * down))


def T_world_cam(t, table_centre: np.ndarray) -> np.ndarray:
    """The ego camera (..., 4, 4): looking down at the table; yaw and pitch sweeps while turning the head."""
    t = np.asarray(t, dtype=float)
    turn = _window(t, 5.0, 11.0)
    yaw = turn * (0.45 * np.sin(2 * np.pi * 0.5 * (t - 5.0)))
    pitch = 0.95 + turn * 0.12 * np.sin(2 * np.pi * 0.35 * (t - 5.0))
    roll = turn * 0.08 * np.sin(2 * np.pi * 0.7 * (t - 5.0))
    z = np.zeros_like(t)
    R = (axis_angle_to_matrix(np.stack([z, yaw, z], -1)) @ axis_angle_to_matrix(np.stack([np.pi - pitch, z, z], -1))
         @ axis_angle_to_matrix(np.stack([z, z, roll], -1)))
    position = np.stack([z, 1.50 + z, 0.05 + z], -1)
    return make_transform(R, position)


def hand_state(t, hand: str, table_centre: np.ndarray) -> np.ndarray:
    """(..., 6): x, y, z (world, m), roll about the wrist +x, pitch about the wrist +z (rad), grasp 0..1."""
    t = np.asarray(t, dtype=float)
    side = -1.0 if hand == "left" else 1.0
    first = hand == "left"
    rotate = _window(t, 11.0, 15.0) if first else _window(t, 15.0, 19.0)
    grasp_window = _window(t, 19.0, 22.0) if first else _window(t, 22.0, 25.0)
    on_table = _window(t, 25.0, 31.0)  # stays down to the end
    frequency = 0.8 if first else 0.65  # different, so the two wrists cannot be confused
    roll = rotate * 0.9 * np.sin(2 * np.pi * frequency * (t - (11.0 if first else 15.0)))
    pitch = rotate * 0.3 * np.sin(2 * np.pi * 0.5 * frequency * (t - (11.0 if first else 15.0)))
    grasp = grasp_window * (0.5 - 0.5 * np.cos(2 * np.pi * 0.7 * (t - (19.0 if first else 22.0))))
    held = table_centre + np.array([0.20 * side, 0.20, 0.15])
    rest = table_centre + np.array([0.16 * side, 0.03, 0.05])
    position = held + on_table[..., None] * (rest - held)
    # from the step's start (while coming down) to the end: a pure translation on the table, so a hand's image in
    # the top camera moves as its wrist tracker does
    slide = on_table * SLIDE_M * np.sin(2 * np.pi * SLIDE_HZ[hand] * (t - 25.0))
    position = position + slide[..., None] * np.array([1.0, 0.0, 0.0])
    return np.concatenate([position, roll[..., None], pitch[..., None], grasp[..., None]], axis=-1)
