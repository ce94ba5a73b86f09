"""Command gestures recognised on one glove's keypoints: pure math, no I/O, no threads.

Input per sample: the canonical 25 keypoints of one hand (``capture_app.core.hand``) in that hand's wrist
frame, metres, at its capture time ``t_ns`` (host monotonic ns), and optionally the glove's IMU orientation
``wrist_quat`` (w, x, y, z; any fixed reference frame: only its rate of change is used). Every feature
below is a distance or an angle between keypoints, so it is the same for the left hand and the mirrored
right hand and does not depend on the wrist frame's axes.

The vocabulary (``POSES``) is made of hand shapes that manipulation does not hold: the pose must be held
``hold_s`` (default 0.8 s) on the command hand to count.

=================  ===========================================================================================
``spread``         flat hand, all five fingers straight and spread (index-to-little angle >= 25 deg)
``fist``           the four fingers curled tight (tip-to-metacarpal <= 0.33 of the finger's length) and the hand
                   still (IMU rotation < 25 deg/s, smoothed over 0.2 s)
``thumb_little``   thumb tip on the little fingertip (< 2 cm), index and middle straight
``thumb_ring``     thumb tip on the ring fingertip (< 2 cm), index and little straight
``horns``          index and little straight, middle and ring curled
``shaka``          little straight, index, middle and ring curled, thumb away from the index tip (> 6 cm)
=================  ===========================================================================================

Hysteresis: a pose is entered with the thresholds above and kept while the looser exit thresholds hold
(e.g. 3 cm instead of 2 cm for a touch), and a dropout of up to ``dropout_s`` (a glove glitch, a lost
sample) does not end it. A pose fires once, when it has been held ``hold_s`` since its **onset** (the
first sample in the pose); then it must be released before it can fire again, and nothing fires within
``cooldown_s`` of the last firing (a pose formed during the cooldown never fires: release and form it
again).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSES = ("spread", "fist", "thumb_little", "thumb_ring", "horns", "shaka")
_FINGER_BASES = (5, 10, 15, 20)          # metacarpal keypoints of index, middle, ring, little
_THUMB_TIP, _INDEX_TIP, _RING_TIP, _LITTLE_TIP = 4, 9, 19, 24
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class GestureTiming:
    """Times of the recogniser (seconds)."""

    hold_s: float = 0.8        # the pose must be held this long from its onset
    cooldown_s: float = 1.5    # nothing fires this long after a firing
    dropout_s: float = 0.1     # samples out of the pose for up to this long do not end it
    still_deg_s: float = 25.0  # fist: the hand's IMU rotation rate must stay below this

    def __post_init__(self):
        for name in ("hold_s", "cooldown_s", "dropout_s", "still_deg_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 60:
                raise ValueError(f"gesture timing {name} = {value!r}: expected a number of seconds (deg/s) 0..60")
        if self.hold_s < 0.2:
            raise ValueError(f"gesture timing hold_s = {self.hold_s!r}: at least 0.2 s, or a passing hand shape "
                             f"during manipulation would be a command")


@dataclass(frozen=True)
class Gesture:
    """A recognised command gesture: ``pose`` on ``hand``, first seen at ``onset_ns``, fired at ``t_ns``
    (the capture time of the sample that completed the hold; host monotonic ns)."""

    pose: str
    hand: str
    onset_ns: int
    t_ns: int


@dataclass(frozen=True)
class HandFeatures:
    """Shape features of one sample: per finger (index, middle, ring, little) and thumb the extension
    (tip-to-metacarpal distance / bone-chain length: 1 straight, ~0.25 curled), thumb-tip distances to the
    index, ring and little tips (m), and the index-to-little spread angle (deg)."""

    extension: np.ndarray      # (4,) index, middle, ring, little
    thumb_extension: float
    thumb_to_index_m: float
    thumb_to_ring_m: float
    thumb_to_little_m: float
    spread_deg: float


_BONES = np.array([[i, i + 1] for i in range(1, 24) if i not in (4, 9, 14, 19)])   # (19, 2) bone ends
_CHAIN_OF_BONE = np.array([0] * 3 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4)      # thumb, index, ..., little
_SPANS = np.array([[1, 4], [5, 9], [10, 14], [15, 19], [20, 24]])                # metacarpal -> tip per chain
_PAIRS = np.array([[_THUMB_TIP, _INDEX_TIP], [_THUMB_TIP, _RING_TIP], [_THUMB_TIP, _LITTLE_TIP]])


def features(keypoints: np.ndarray) -> HandFeatures:
    """The shape features of one hand's (25, 3) keypoints (metres, wrist frame)."""
    k = np.asarray(keypoints, dtype=float)
    bones = np.sqrt(((k[_BONES[:, 1]] - k[_BONES[:, 0]]) ** 2).sum(axis=1))
    chains = np.bincount(_CHAIN_OF_BONE, weights=bones, minlength=5)
    spans = np.sqrt(((k[_SPANS[:, 1]] - k[_SPANS[:, 0]]) ** 2).sum(axis=1))
    extension = spans / np.maximum(chains, 1e-6)
    touch = np.sqrt(((k[_PAIRS[:, 0]] - k[_PAIRS[:, 1]]) ** 2).sum(axis=1))
    index_dir, little_dir = k[_INDEX_TIP] - k[6], k[_LITTLE_TIP] - k[21]
    cos = float(index_dir @ little_dir) / max(float(np.sqrt((index_dir @ index_dir) * (little_dir @ little_dir))), 1e-9)
    return HandFeatures(extension[1:], float(extension[0]), float(touch[0]), float(touch[1]), float(touch[2]),
                        float(np.degrees(np.arccos(min(1.0, max(-1.0, cos))))))


def pose_holds(pose: str, f: HandFeatures, still: bool, entering: bool) -> bool:
    """Whether features ``f`` show ``pose``: with the enter thresholds (``entering``) or the looser exit
    ones. ``still``: the hand does not rotate (for ``fist``)."""
    straight, curled, touch = (0.90, 0.50, 0.020) if entering else (0.82, 0.58, 0.030)
    index, middle, ring, little = (float(x) for x in f.extension)
    if pose == "spread":
        return (min(index, middle, ring, little, f.thumb_extension) > straight
                and f.spread_deg >= (25.0 if entering else 18.0))
    if pose == "fist":
        return max(index, middle, ring, little) < (0.33 if entering else 0.38) and still
    if pose == "thumb_little":
        return f.thumb_to_little_m < touch and index > straight and middle > straight
    if pose == "thumb_ring":
        return f.thumb_to_ring_m < touch and index > straight and little > straight
    if pose == "horns":
        return index > straight and little > straight and middle < curled and ring < curled
    if pose == "shaka":
        return (little > straight and max(index, middle, ring) < curled
                and f.thumb_to_index_m > (0.06 if entering else 0.05))
    raise ValueError(f"unknown pose {pose!r}; known: {', '.join(POSES)}")


def _angle_deg(q0: np.ndarray, q1: np.ndarray) -> float:
    dot = abs(float(np.dot(q0, q1)) / max(float(np.linalg.norm(q0) * np.linalg.norm(q1)), 1e-12))
    return float(np.degrees(2.0 * np.arccos(min(1.0, dot))))


class GestureRecogniser:
    """Recognises ``poses`` on one hand, sample by sample (``update``). Not thread-safe: one feeder."""

    def __init__(self, hand: str, poses: tuple[str, ...] = POSES, timing: GestureTiming = GestureTiming()):
        unknown = [p for p in poses if p not in POSES]
        if unknown:
            raise ValueError(f"unknown pose(s) {unknown}; known: {', '.join(POSES)}")
        self.hand = hand
        self.poses = tuple(poses)
        self.timing = timing
        self._pose: str | None = None      # the pose being held
        self._onset_ns = 0
        self._last_in_pose_ns = 0
        self._fired = False
        self._cooldown_until_ns = 0
        self._last_t_ns: int | None = None
        self._last_quat: np.ndarray | None = None
        self._rate_deg_s = 0.0               # smoothed IMU rotation rate

    def _still(self, t_ns: int, quat) -> bool:
        if quat is None:
            return True
        q = np.asarray(quat, dtype=float)
        if not np.isfinite(q).all() or np.linalg.norm(q) < 1e-6:
            return False
        if self._last_quat is not None and self._last_t_ns is not None and t_ns > self._last_t_ns:
            dt = (t_ns - self._last_t_ns) / NS_PER_S
            rate = _angle_deg(self._last_quat, q) / dt
            alpha = min(1.0, dt / 0.2)          # first-order smoothing over ~0.2 s
            self._rate_deg_s += alpha * (rate - self._rate_deg_s)
        self._last_quat = q
        return self._rate_deg_s < self.timing.still_deg_s

    def update(self, t_ns: int, keypoints, wrist_quat=None, tracking_ok: bool = True) -> Gesture | None:
        """Feed one sample (times must not go back; an older sample is ignored); the Gesture it completes,
        if any. A sample with tracking lost or non-finite keypoints counts as out of every pose."""
        t_ns = int(t_ns)
        if self._last_t_ns is not None and t_ns <= self._last_t_ns:
            return None
        k = np.asarray(keypoints, dtype=float)
        still = self._still(t_ns, wrist_quat)
        self._last_t_ns = t_ns
        f = features(k) if tracking_ok and k.shape == (25, 3) and np.isfinite(k).all() else None
        if self._pose is not None:
            if f is not None and pose_holds(self._pose, f, still, entering=False):
                self._last_in_pose_ns = t_ns
            elif t_ns - self._last_in_pose_ns > self.timing.dropout_s * NS_PER_S:
                self._pose = None  # released
        if self._pose is None and f is not None:
            for pose in self.poses:
                if pose_holds(pose, f, still, entering=True):
                    self._pose, self._onset_ns, self._last_in_pose_ns, self._fired = pose, t_ns, t_ns, False
                    break
        if (self._pose is not None and not self._fired and self._last_in_pose_ns == t_ns
                and t_ns - self._onset_ns >= self.timing.hold_s * NS_PER_S):
            self._fired = True
            if self._onset_ns >= self._cooldown_until_ns:
                self._cooldown_until_ns = t_ns + int(self.timing.cooldown_s * NS_PER_S)
                return Gesture(self._pose, self.hand, self._onset_ns, t_ns)
        return None

    @property
    def holding(self) -> str | None:
        """The pose being held now (fired or not), or None."""
        return self._pose
