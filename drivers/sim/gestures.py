"""Scripted hand poses for the simulated gloves: command gestures and manipulation look-alikes.

A sim glove's option ``gestures`` is a list of ``[t_s, name, duration_s]``: from ``t_s`` (seconds after the
motion epoch, i.e. after the session started) the hand takes the shape ``name`` fully for ``duration_s``,
blended in and out over ``BLEND_S`` before and after from the ordinary manipulation motion. ``name`` is a
command pose of ``capture_app.core.gestures.POSES`` (the hand is then held still: its IMU orientation is
frozen) or one of ``LOOKALIKES``, manipulation motions close to a command pose that must never be taken for
one:

* ``pinch``: thumb tip on the index tip (a precision grasp), the other fingers relaxed;
* ``near_little``: the thumb reaches toward the little finger but stops 3.5 cm short;
* ``flat``: flat hand, fingers together (pressing on the table), not spread;
* ``grasp_turn``: a power grasp as tight as a fist while the wrist turns (90 deg/s, e.g. opening a jar);
* ``brief_touch``: thumb on the little fingertip for 0.3 s only, whatever ``duration_s`` says (shorter than
  a hold).

Shapes are built in the left hand's wrist frame (``drivers.sim.motion.hand_keypoints``) and mirrored for
the right hand, as the motion model does.
"""

from __future__ import annotations

import numpy as np

from capture_app.core.geometry import axis_angle_to_matrix
from drivers.sim.motion import hand_keypoints

BLEND_S = 0.15
COMMAND_POSES = ("spread", "fist", "thumb_little", "thumb_ring", "horns", "shaka")
LOOKALIKES = ("pinch", "near_little", "flat", "grasp_turn", "brief_touch")
BRIEF_TOUCH_S = 0.3
TURN_DEG_S = 90.0


def _rotate_finger(points: np.ndarray, base: int, degrees: float) -> np.ndarray:
    """Rotate a finger's five keypoints about the palm normal (wrist +y) through its metacarpal."""
    R = axis_angle_to_matrix(np.array([0.0, np.radians(degrees), 0.0]))
    out = points.copy()
    pivot = points[base]
    out[base:base + 5] = (points[base:base + 5] - pivot) @ R.T + pivot
    return out


def _thumb_to(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Bend the thumb so that its tip lies at ``target``: joints along the line, bowed toward the palm."""
    out = points.copy()
    start = points[1]
    for j, u in ((2, 1 / 3), (3, 2 / 3), (4, 1.0)):
        out[j] = start + u * (target - start) + np.array([0.0, -0.015, 0.0]) * np.sin(np.pi * u)
    return out


def shape_keypoints(name: str) -> np.ndarray:
    """The (25, 3) left-hand keypoints (m, wrist frame) of a command pose or look-alike, fully formed."""
    flex = {"spread": [0, 0, 0, 0, 0], "fist": [1.0, 1.7, 1.7, 1.7, 1.7], "thumb_little": [0.3, 0, 0, 0.3, 0.9],
            "thumb_ring": [0.3, 0, 0.2, 0.9, 0], "horns": [1.0, 0, 1.6, 1.6, 0], "shaka": [0, 1.6, 1.6, 1.6, 0],
            "pinch": [0.3, 0.8, 0.4, 0.4, 0.4], "near_little": [0.3, 0, 0, 0.3, 0.9], "flat": [0, 0, 0, 0, 0],
            "grasp_turn": [1.0, 1.7, 1.7, 1.7, 1.7], "brief_touch": [0.3, 0, 0, 0.3, 0.9]}
    if name not in flex:
        raise ValueError(f"unknown scripted hand shape {name!r}; known: {', '.join(COMMAND_POSES + LOOKALIKES)}")
    k = hand_keypoints(np.array(flex[name], dtype=float))
    if name == "spread":
        for base, degrees in ((5, -15.0), (10, -5.0), (15, 5.0), (20, 15.0)):  # fan out: index to the thumb side
            k = _rotate_finger(k, base, degrees)
    elif name in ("thumb_little", "brief_touch"):
        k = _thumb_to(k, k[24] + [0.0, -0.005, 0.0])
    elif name == "near_little":
        k = _thumb_to(k, k[24] + [0.0, -0.005, 0.035])
    elif name == "thumb_ring":
        k = _thumb_to(k, k[19] + [0.0, -0.005, 0.0])
    elif name == "pinch":
        k = _thumb_to(k, k[9] + [0.0, -0.004, 0.0])
    return k


def parse_script(value) -> tuple:
    """The ``gestures`` option as ((t_s, name, duration_s), ...), checked; ValueError saying what is wrong."""
    out = []
    for item in value or ():
        try:
            t_s, name, duration_s = item
            t_s, duration_s, name = float(t_s), float(duration_s), str(name)
        except (TypeError, ValueError):
            raise ValueError(f"option gestures: {item!r} is not [t_s, name, duration_s]") from None
        if name not in COMMAND_POSES + LOOKALIKES or t_s < 0 or duration_s <= 0:
            raise ValueError(f"option gestures: {item!r}: t_s >= 0, duration_s > 0 and a name of "
                             f"{', '.join(COMMAND_POSES + LOOKALIKES)}")
        out.append((t_s, name, duration_s))
    return tuple(sorted(out))


def _weight(t: np.ndarray, t0: float, duration: float) -> np.ndarray:
    """0 outside the spell, 1 while the shape is held, cosine-eased over BLEND_S at either end."""
    up = np.clip((t - (t0 - BLEND_S)) / BLEND_S, 0.0, 1.0)
    down = np.clip((t0 + duration + BLEND_S - t) / BLEND_S, 0.0, 1.0)
    u = np.minimum(up, down)
    return 0.5 - 0.5 * np.cos(np.pi * u)


def apply_script(script: tuple, t_s: np.ndarray, keypoints: np.ndarray, rotations: np.ndarray,
                 hand: str, rotation_at) -> tuple[np.ndarray, np.ndarray]:
    """Scripted shapes over the manipulation motion: ``keypoints`` (n, 25, 3) in the wrist frame and the
    hand's world rotations (n, 3, 3) at times ``t_s`` (n,) (seconds after the epoch); new arrays returned.
    ``rotation_at(t)`` is the manipulation motion's hand rotation (3, 3) at time ``t``.
    While a command pose is scripted (blends included) the hand's rotation is held at its value at the
    spell's start (the operator holds still); ``grasp_turn`` turns it about the forearm."""
    keypoints, rotations = keypoints.copy(), rotations.copy()
    t_s = np.asarray(t_s, dtype=float)
    for t0, name, duration in script:
        if name == "brief_touch":
            duration = BRIEF_TOUCH_S
        w = _weight(t_s, t0, duration)
        inside = w > 0
        if not inside.any():
            continue
        shape = shape_keypoints(name)
        if hand == "right":
            shape = shape * np.array([-1.0, 1.0, 1.0])
        keypoints[inside] = (1 - w[inside, None, None]) * keypoints[inside] + w[inside, None, None] * shape
        start = t0 - BLEND_S
        held = inside & (t_s >= start)
        if held.any():
            R0 = np.asarray(rotation_at(start))
            if name == "grasp_turn":
                angles = np.radians(TURN_DEG_S) * (t_s[held] - start)
                turn = axis_angle_to_matrix(np.stack([angles, 0 * angles, 0 * angles], -1))
                rotations[held] = R0 @ turn
            else:
                rotations[held] = R0
    return keypoints, rotations


def scripted_samples(motion, script: tuple, hand: str, t_start_s: float, t_end_s: float, rate_hz: float = 120.0,
                     chunk_s: float = 60.0):
    """The simulated glove's true samples without a driver, faster than real time (tests, bench): yields
    ``(t_s (n,), keypoints (n, 25, 3), wrist_quat (n, 4))`` chunks from ``t_start_s`` to ``t_end_s`` (seconds
    after the epoch) at ``rate_hz``; ``motion`` is a ``drivers.sim.motion.MotionModel``."""
    from capture_app.core.geometry import matrix_to_quat
    t = t_start_s
    while t < t_end_s:
        t_s = np.arange(t, min(t + chunk_s, t_end_s), 1.0 / rate_hz)
        keypoints = motion.keypoints(t_s, hand)
        rotations = motion.T_world_wrist(t_s, hand)[..., :3, :3]
        if script:
            keypoints, rotations = apply_script(script, t_s, keypoints, rotations, hand,
                                                lambda x: motion.T_world_wrist(x, hand)[:3, :3])
        yield t_s, keypoints, matrix_to_quat(rotations)
        t += chunk_s
