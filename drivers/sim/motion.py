"""Ground-truth motion of the simulated rig: a head and two hands at a table.

Pure and deterministic: every quantity is a function of (seed, t) with t in seconds
on the host monotonic clock, vectorised over arrays of t. The world frame is the
lighthouse "standing" frame of OpenVR: metres, +y up, the operator faces -z.

Each hand repeats a reach -> grasp -> lift -> pour/rotate -> place -> release ->
return cycle (cosine-eased between waypoints, so position, rotation and finger
flexion are smooth), the two hands half a cycle apart; the head sways and looks
around the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture_app.core.geometry import axis_angle_to_matrix, make_transform, rot_x, rot_y
from capture_app.core.hand import FINGERS, NUM_KEYPOINTS
from drivers.sim import check_motion

MODEL_VERSION = 1
TABLE_HEIGHT_M = 0.75
TABLE_CENTRE = np.array([0.0, TABLE_HEIGHT_M, -0.45])

# Wrist frames (capture-system.md, appendix A) with the palm facing down and the
# fingers pointing forward (-z): columns are the wrist axes in world coordinates.
# Left: +x to the fingertips, +y palm -> back, +z little finger -> thumb.
R_WORLD_LEFT_WRIST_REST = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
# Right: +x along the forearm (fingertips -> elbow), +y palm -> back, +z little -> thumb.
R_WORLD_RIGHT_WRIST_REST = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _eased_waypoints(t: np.ndarray, durations: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Cyclic cosine-eased interpolation through ``values`` (K, D), segment k lasting durations[k] s."""
    ends = np.cumsum(durations)
    period = ends[-1]
    starts = ends - durations
    phase = np.mod(t, period)
    k = np.clip(np.searchsorted(ends, phase, side="right"), 0, len(durations) - 1)
    u = np.clip((phase - starts[k]) / durations[k], 0.0, 1.0)
    ease = 0.5 - 0.5 * np.cos(np.pi * u)
    v0 = values[k]
    v1 = values[(k + 1) % len(values)]
    return v0 + (v1 - v0) * ease[..., None]


@dataclass(frozen=True)
class HandPlan:
    """One hand's cyclic plan: waypoint durations (s) and states (x, y, z, roll, pitch, grasp)."""

    durations: np.ndarray
    states: np.ndarray
    time_offset_s: float


class MotionModel:
    """The true motion of the simulated operator, deterministic under ``seed``.

    ``speed`` scales how fast the cycle runs (1.0: a 4.5 s cycle, ~0.7 m/s peaks).
    """

    def __init__(self, seed: int = 0, speed: float = 1.0, head_motion: str = "work", board_motion: str = "static",
                 hand_motion: str = "work"):
        if head_motion not in ("work", "survey", "shake", "check"):
            raise ValueError(f"head_motion {head_motion!r}: expected work, survey, shake or check")
        if board_motion not in ("static", "handheld"):
            raise ValueError(f"board_motion {board_motion!r}: expected static or handheld")
        self.board_motion = board_motion
        if hand_motion not in ("work", "on_board", "check"):
            raise ValueError(f"hand_motion {hand_motion!r}: expected work, on_board or check")
        self.hand_motion = hand_motion
        self.seed = int(seed)
        self.speed = float(speed)
        self.head_motion = head_motion
        rng = np.random.default_rng([self.seed, 0x51D])
        self._head_phase = rng.uniform(0, 2 * np.pi, size=6)
        self._finger_phase = rng.uniform(0, 2 * np.pi, size=(2, 5))
        self.plans = {hand: self._plan(rng, side, offset)
                      for hand, side, offset in (("left", -1.0, 0.0), ("right", 1.0, 0.5))}

    def _plan(self, rng: np.random.Generator, side: float, offset_cycles: float) -> HandPlan:
        c = TABLE_CENTRE
        home = c + [0.22 * side, 0.12, 0.25]
        grasp_at = c + [0.18 * side + rng.uniform(-0.05, 0.05), 0.06, rng.uniform(-0.12, 0.0)]
        place_at = c + [0.05 * side + rng.uniform(-0.04, 0.04), 0.07, rng.uniform(-0.05, 0.08)]
        lift = grasp_at + [0.0, 0.18, 0.0]
        pour = place_at + [0.0, 0.16, 0.0]
        # (position, roll about the forearm, pitch about the thumb axis, grasp 0..1)
        states = np.array([
            [*home, 0.0, 0.0, 0.0],
            [*(grasp_at + [0, 0.08, 0]), 0.2, -0.35, 0.15],
            [*grasp_at, 0.3, -0.5, 1.0],
            [*lift, 0.2, -0.2, 1.0],
            [*pour, 1.1 * -side, -0.1, 1.0],
            [*place_at, 0.1, -0.4, 1.0],
            [*(place_at + [0, 0.05, 0]), 0.0, -0.3, 0.0],
        ])
        durations = np.array([0.8, 0.5, 0.5, 0.7, 0.6, 0.4, 0.9]) * rng.uniform(0.85, 1.15, size=7)
        return HandPlan(durations / self.speed, states, offset_cycles * durations.sum() / self.speed)

    # --- head -----------------------------------------------------------------
    def T_world_cam(self, t) -> np.ndarray:
        """True ego-camera pose (..., 4, 4): camera frame (+z forward, +y down) to world."""
        if self.head_motion == "check":  # the scripted rig check (drivers/sim/check_motion.py)
            return check_motion.T_world_cam(t, TABLE_CENTRE)
        if self.head_motion in ("survey", "shake"):
            return self._survey(np.asarray(t, dtype=float), shake=self.head_motion == "shake")
        t = np.asarray(t, dtype=float)
        p = self._head_phase
        w = 2 * np.pi * self.speed
        yaw = 0.25 * np.sin(w * 0.11 * t + p[0]) + 0.06 * np.sin(w * 0.43 * t + p[1])
        pitch = 0.95 + 0.12 * np.sin(w * 0.17 * t + p[2])  # radians below the horizon
        roll = 0.05 * np.sin(w * 0.23 * t + p[3])
        position = np.stack([
            0.04 * np.sin(w * 0.13 * t + p[4]),
            1.50 + 0.02 * np.sin(w * 0.19 * t + p[5]),
            0.05 + 0.03 * np.sin(w * 0.07 * t + p[0]),
        ], axis=-1)
        # rot_y(yaw) @ rot_x(pi - pitch) @ rot_z(roll), written as rotation vectors for batching
        R = (axis_angle_to_matrix(np.stack([np.zeros_like(t), yaw, np.zeros_like(t)], -1))
             @ axis_angle_to_matrix(np.stack([np.pi - pitch, np.zeros_like(t), np.zeros_like(t)], -1))
             @ axis_angle_to_matrix(np.stack([np.zeros_like(t), np.zeros_like(t), roll], -1)))
        return make_transform(R, position)

    def _survey(self, t: np.ndarray, shake: bool = False) -> np.ndarray:
        """Calibration motion: the head circles the table centre, looking at it, rolling its head.
        ``shake`` adds brisk head turns, nods and tilts (1-2 Hz) for latency calibration."""
        p = self._head_phase
        w = 2 * np.pi * self.speed
        azimuth = 1.1 * np.sin(w * 0.09 * t + p[0])
        elevation = 0.95 + 0.4 * np.sin(w * 0.13 * t + p[1])
        radius = 0.62 + 0.2 * np.sin(w * 0.07 * t + p[2])  # closer and farther: separates mount rotation
        roll = 0.6 * np.sin(w * 0.11 * t + p[3])            # from mount translation
        if shake:
            azimuth = 0.3 * np.sin(w * 0.09 * t + p[0]) + 0.22 * np.sin(w * 1.3 * t)
            elevation = 0.95 + 0.15 * np.sin(w * 0.13 * t + p[1]) + 0.1 * np.sin(w * 0.9 * t + 1.0)
            roll = 0.2 * np.sin(w * 0.11 * t + p[3]) + 0.15 * np.sin(w * 1.7 * t + 2.0)
        target = TABLE_CENTRE + np.stack([0.08 * np.sin(w * 0.17 * t + p[4]), np.zeros_like(t),
                                          0.06 * np.sin(w * 0.19 * t + p[5])], -1)
        offset = np.stack([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)], -1)
        position = target + radius[..., None] * offset
        z = target - position
        z /= np.linalg.norm(z, axis=-1, keepdims=True)
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        y = np.cross(z, x)
        R = np.stack([x, y, z], axis=-1) @ axis_angle_to_matrix(np.stack([np.zeros_like(t), np.zeros_like(t), roll], -1))
        return make_transform(R, position)

    def T_world_board(self, t, width_m: float, height_m: float) -> np.ndarray:
        """The calibration board (..., 4, 4): lying on the table, or held and tilted above it ("handheld")."""
        t = np.asarray(t, dtype=float)
        rest = np.broadcast_to(T_world_board(width_m, height_m), t.shape + (4, 4))
        if self.board_motion == "static":
            return rest
        w = 2 * np.pi * self.speed
        p = self._head_phase
        centre = np.array([width_m / 2, height_m / 2, 0.0])
        tilt = axis_angle_to_matrix(np.stack([0.45 * np.sin(w * 0.21 * t + p[1]), 0.45 * np.sin(w * 0.16 * t + p[2]),
                                              0.3 * np.sin(w * 0.12 * t + p[3])], -1))
        lift = np.stack([0.06 * np.sin(w * 0.1 * t + p[4]), -0.12 - 0.06 * np.sin(w * 0.13 * t + p[5]),
                         0.05 * np.sin(w * 0.09 * t + p[0])], -1)  # board frame: -z is up from the table
        # rotate about the board centre, then lift: T = rest @ Trans(centre + lift) @ tilt @ Trans(-centre)
        T = np.zeros(t.shape + (4, 4))
        T[..., :3, :3] = tilt
        T[..., :3, 3] = centre + lift - np.einsum("...ij,j->...i", tilt, centre)
        T[..., 3, 3] = 1.0
        return rest @ T

    # --- hands ----------------------------------------------------------------
    def _hand_state(self, t, hand: str) -> np.ndarray:
        if self.hand_motion == "check":
            return check_motion.hand_state(t, hand, TABLE_CENTRE)
        plan = self.plans[hand]
        return _eased_waypoints(np.asarray(t, dtype=float) + plan.time_offset_s, plan.durations, plan.states)

    def T_world_wrist(self, t, hand: str) -> np.ndarray:
        """True wrist-frame pose (..., 4, 4) of ``hand`` ('left'/'right') in the world."""
        if self.hand_motion == "on_board":  # resting on the board's wrist mark (calibration procedure)
            from calibration.board import BoardConfig, T_board_wrist_mark
            board = BoardConfig()
            return self.T_world_board(t, board.width_m, board.height_m) @ T_board_wrist_mark(hand)
        state = self._hand_state(t, hand)
        rest = R_WORLD_LEFT_WRIST_REST if hand == "left" else R_WORLD_RIGHT_WRIST_REST
        zeros = np.zeros_like(state[..., 3])
        roll = axis_angle_to_matrix(np.stack([state[..., 3], zeros, zeros], -1))   # about wrist +x
        pitch = axis_angle_to_matrix(np.stack([zeros, zeros, state[..., 4]], -1))  # about wrist +z
        return make_transform(rest @ roll @ pitch, state[..., :3])

    def grasp(self, t, hand: str) -> np.ndarray:
        """Grasp closure 0 (open) .. 1 (closed)."""
        return self._hand_state(t, hand)[..., 5]

    def keypoints(self, t, hand: str) -> np.ndarray:
        """True 25 keypoints (..., 25, 3) of ``hand`` in its wrist frame, metres."""
        t = np.asarray(t, dtype=float)
        g = self.grasp(t, hand)
        hand_index = 0 if hand == "left" else 1
        wiggle = 0.08 * np.sin(2 * np.pi * 0.9 * self.speed * t[..., None] + self._finger_phase[hand_index])
        flex = np.clip(g[..., None] * 1.0 + 0.15 + wiggle, 0.0, 1.6)  # (..., 5) per finger
        points = hand_keypoints(flex)
        if hand == "right":
            points = points * np.array([-1.0, 1.0, 1.0])  # mirror: the right hand's +x points to the elbow
        return points


# Finger geometry in the left hand's wrist frame: base offset (x, z) and bone lengths (m).
_FINGER_BASE = {"index": (0.025, 0.030), "middle": (0.027, 0.008), "ring": (0.025, -0.012), "pinky": (0.022, -0.030)}
_FINGER_BONES = {"index": (0.068, 0.040, 0.024, 0.020), "middle": (0.066, 0.045, 0.028, 0.021),
                 "ring": (0.062, 0.042, 0.026, 0.020), "pinky": (0.058, 0.032, 0.020, 0.018)}
_THUMB_BONES = (0.045, 0.034, 0.030)


def hand_keypoints(flex: np.ndarray) -> np.ndarray:
    """Left-hand keypoints (..., 25, 3) in the wrist frame for per-finger flexion (..., 5) in radians-ish.

    Each finger curls in its (x, y) plane toward -y (the palm); the thumb flexes
    toward the palm and across toward the little finger.
    """
    flex = np.asarray(flex, dtype=float)
    batch = flex.shape[:-1]
    out = np.zeros(batch + (NUM_KEYPOINTS, 3))
    index = 1
    for f, finger in enumerate(FINGERS):
        a = flex[..., f]
        if finger == "thumb":
            start = np.broadcast_to(np.array([0.020, -0.012, 0.022]), batch + (3,))
            # base direction forward-and-out, rotating toward the palm and across with flexion
            directions = [np.stack([np.cos(0.7 - 0.3 * a), -0.35 * a, np.sin(0.7 - 0.3 * a) - 0.25 * a], -1)]
            for joint_flex in (0.5, 0.7):
                d = directions[-1]
                directions.append(np.stack([d[..., 0] * np.cos(joint_flex * a), d[..., 1] - np.sin(joint_flex * a) * 0.8,
                                            d[..., 2] - 0.3 * np.sin(joint_flex * a)], -1))
            points = [start]
            for d, length in zip(directions, _THUMB_BONES):
                d = d / np.linalg.norm(d, axis=-1, keepdims=True)
                points.append(points[-1] + length * d)
        else:
            x0, z0 = _FINGER_BASE[finger]
            start = np.broadcast_to(np.array([x0, 0.0, z0]), batch + (3,))
            points = [start]
            angle = np.zeros(batch)
            for bone, (length, share) in enumerate(zip(_FINGER_BONES[finger], (0.0, 1.0, 1.1, 0.7))):
                angle = angle + share * a
                d = np.stack([np.cos(angle), -np.sin(angle), np.zeros(batch)], -1)
                points.append(points[-1] + length * d)
        for p in points:
            out[..., index, :] = p
            index += 1
    return out


def true_rig_geometry() -> dict[str, np.ndarray]:
    """The simulated rig's true fixed transforms (what a perfect calibration recovers).

    ``T_headtracker_cam``: the ego camera on its head mount; ``T_wristtracker_wrist_left/right``:
    each wrist frame in its tracker's frame; ``T_world_topcam``: the top camera over the table.
    """
    T_headtracker_cam = make_transform(rot_x(np.pi / 2 + 0.12) @ rot_y(0.04), [0.012, -0.085, 0.065])
    T_wt_left = make_transform(rot_y(0.06) @ rot_x(-np.pi / 2), [-0.035, 0.0, -0.045])
    T_wt_right = make_transform(rot_y(-0.05) @ rot_x(np.pi / 2), [0.035, 0.0, -0.045])
    T_world_topcam = make_transform(rot_x(np.pi / 2) @ rot_y(0.02), TABLE_CENTRE + [0.0, 0.85, 0.0])
    return {"T_headtracker_cam": T_headtracker_cam, "T_wristtracker_wrist_left": T_wt_left,
            "T_wristtracker_wrist_right": T_wt_right, "T_world_topcam": T_world_topcam}


def T_world_board(width_m: float, height_m: float) -> np.ndarray:
    """Where the simulated calibration board lies: on the table, centred, printed side up.

    Board frame: +x world +x, +y toward the operator (world +z), +z into the table (world -y).
    """
    R = np.column_stack([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    origin = TABLE_CENTRE + [-width_m / 2, 0.001, -height_m / 2]
    return make_transform(R, origin)
