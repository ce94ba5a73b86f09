"""Evaluating a stream at an instant: interpolation, nearest frame, extrapolation.

Pure functions over sorted sample times (int64 ns on the host clock, latency offsets
already removed). Each returns the value, a status code and |dt|: interpolated, the
distance from the evaluation instant to the farther of the two samples used; nearest, to
the frame; extrapolated, from the newest sample (what ``max_extrapolation_ns`` limits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture_app.core.geometry import interpolate_pose

# Status codes stored per stream and tick in /synced (docs/episode-format.md).
MISSING = 0        # no usable sample (none yet, or too far away)
INTERPOLATED = 1   # between two bracketing samples
NEAREST = 2        # images: the nearest frame
EXTRAPOLATED = 3   # past the newest sample, within max_extrapolation
LOST = 4           # the device reported lost tracking at this instant
STATUS_NAMES = {MISSING: "missing", INTERPOLATED: "interpolated", NEAREST: "nearest",
                EXTRAPOLATED: "extrapolated", LOST: "lost"}
VALID_STATUSES = (INTERPOLATED, NEAREST, EXTRAPOLATED)
TRACKING_LOST_CODE = 2  # episode_format.TRACKING_CODES["lost"]


@dataclass(frozen=True)
class Limits:
    """How far a value may be from its samples and still count as valid (ns)."""

    max_interpolation_gap_ns: int = 60_000_000
    max_extrapolation_ns: int = 10_000_000
    max_image_offset_ns: int = 40_000_000


@dataclass(frozen=True)
class Evaluation:
    """A stream's value at one instant: ``value`` (None unless valid), ``index`` of the sample used
    (the nearer one when interpolating; -1 if none), ``status`` and ``dt_ns`` (>= 0)."""

    value: np.ndarray | None
    status: int
    dt_ns: int
    index: int

    @property
    def valid(self) -> bool:
        return self.status in VALID_STATUSES


_NONE = Evaluation(None, MISSING, 0, -1)


def _blend(kind: str, a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    if kind == "pose":
        return interpolate_pose(a, b, u)
    return a + (b - a) * u


def evaluate(kind: str, times_ns: np.ndarray, values: np.ndarray, tracking: np.ndarray, t_ns: int,
             limits: Limits) -> Evaluation:
    """Evaluate a pose ('pose': (n, 7) vectors) or keypoint ('points': (n, ...)) stream at ``t_ns``.

    Linear in position / keypoints, slerp in rotation, between the two samples
    bracketing ``t_ns``; at or past the newest sample, linear extrapolation from the
    last two samples within ``max_extrapolation_ns``. A sample flagged lost on either
    side makes the result LOST: a stale value is never passed off as fresh.
    """
    n = len(times_ns)
    if n == 0:
        return _NONE
    i = int(np.searchsorted(times_ns, t_ns, side="right"))  # times[i-1] <= t < times[i]
    if i == 0:
        return Evaluation(None, MISSING, int(times_ns[0] - t_ns), 0)
    if i < n:
        t0, t1 = int(times_ns[i - 1]), int(times_ns[i])
        dt = max(t_ns - t0, t1 - t_ns)
        near = i - 1 if t_ns - t0 <= t1 - t_ns else i
        if tracking[i - 1] == TRACKING_LOST_CODE or (tracking[i] == TRACKING_LOST_CODE and t_ns != t0):
            return Evaluation(None, LOST, dt, near)
        if t1 - t0 > limits.max_interpolation_gap_ns:
            return Evaluation(None, MISSING, dt, near)
        u = (t_ns - t0) / (t1 - t0)
        return Evaluation(_blend(kind, values[i - 1], values[i], u), INTERPOLATED, dt, near)
    # t is at or after the newest sample
    t_last = int(times_ns[-1])
    dt = t_ns - t_last
    if tracking[-1] == TRACKING_LOST_CODE:
        return Evaluation(None, LOST, dt, n - 1)
    if dt == 0:
        return Evaluation(np.array(values[-1], dtype=float), INTERPOLATED, 0, n - 1)
    if dt > limits.max_extrapolation_ns or n < 2 or tracking[-2] == TRACKING_LOST_CODE:
        return Evaluation(None, MISSING, dt, n - 1)
    t_prev = int(times_ns[-2])
    if t_last - t_prev > limits.max_interpolation_gap_ns:
        return Evaluation(None, MISSING, dt, n - 1)
    u = (t_ns - t_prev) / (t_last - t_prev)
    return Evaluation(_blend(kind, values[-2], values[-1], u), EXTRAPOLATED, dt, n - 1)


def nearest(times_ns: np.ndarray, t_ns: int, limits: Limits) -> Evaluation:
    """The sample nearest to ``t_ns`` (images); MISSING when farther than ``max_image_offset_ns``."""
    n = len(times_ns)
    if n == 0:
        return _NONE
    i = int(np.searchsorted(times_ns, t_ns))
    candidates = [j for j in (i - 1, i) if 0 <= j < n]
    j = min(candidates, key=lambda k: abs(int(times_ns[k]) - t_ns))
    dt = abs(int(times_ns[j]) - t_ns)
    if dt > limits.max_image_offset_ns:
        return Evaluation(None, MISSING, dt, j)
    return Evaluation(None, NEAREST, dt, j)
