"""Latency drift: how late one stream's stamps are against the trackers', from how fast things turn.

A body turning is seen by two sources (the head tracker and the ego camera's own rotation; a wrist tracker and
the glove's IMU). Their angular speeds agree at the same true instant, so if the observed stream's stamps are
``lag`` late (after the calibration's latency offsets), ``speed_obs(t) = speed_ref(t - lag)``. The speeds are
frame-free (no mount or world frame needed). The observed speed is given over intervals between its instants
(a camera: between processed frames), and the reference's speed is taken over the same intervals shifted by
the lag, so both are averaged alike; the lag minimises their squared difference: a scan (the cross-correlation
of angular speeds, in its least-squares form) then a golden-section refinement. Pure: no I/O, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture_app.core.rotation_series import rotvec, slerp_of

MIN_SPEED_STD_RAD_S = 0.05  # below this the body hardly turns: the lag is not observable


@dataclass(frozen=True)
class LagEstimate:
    """``lag_ms``: how late the observed stamps are (positive: add it to that stream's latency offset);
    ``rms_rad_s``: the speed residual at that lag; ``intervals``: how many observed intervals were used."""

    lag_ms: float
    rms_rad_s: float
    intervals: int


def estimate_lag(t_ref_s: np.ndarray, R_ref: np.ndarray, t_obs_s: np.ndarray, speed_obs: np.ndarray,
                 max_lag_s: float = 0.1) -> LagEstimate | None:
    """The observed stream's lag against the reference.

    ``t_ref_s`` (m,), ``R_ref`` (m, 3, 3) or (m, 4): the reference orientations; ``t_obs_s`` (n+1,) the observed
    instants and ``speed_obs`` (n,) its angular speeds (rad/s) between consecutive ones. Observed intervals
    whose shifted span leaves the reference's span are not used. None when too little turning (or too little
    overlap) makes the lag unobservable.
    """
    t_ref_s = np.asarray(t_ref_s, dtype=float)
    t_obs_s = np.asarray(t_obs_s, dtype=float)
    speed_obs = np.asarray(speed_obs, dtype=float)
    if len(t_obs_s) != len(speed_obs) + 1:
        raise ValueError(f"estimate_lag: {len(t_obs_s)} instants for {len(speed_obs)} speeds (need one more)")
    inside = (t_obs_s[:-1] - max_lag_s > t_ref_s[0]) & (t_obs_s[1:] + max_lag_s < t_ref_s[-1])
    inside &= np.isfinite(speed_obs) & (np.diff(t_obs_s) > 0)
    if inside.sum() < 20 or np.std(speed_obs[inside]) < MIN_SPEED_STD_RAD_S:
        return None
    starts, ends, observed = t_obs_s[:-1][inside], t_obs_s[1:][inside], speed_obs[inside]
    near = (t_ref_s >= starts[0] - 2 * max_lag_s) & (t_ref_s <= ends[-1] + 2 * max_lag_s)
    if near.sum() < 2:
        return None
    interpolate = slerp_of(t_ref_s[near], np.asarray(R_ref)[near])

    def cost(lag: float) -> float:
        both = np.empty(2 * len(starts))
        both[0::2], both[1::2] = starts, ends
        R = interpolate(both - lag).as_matrix()
        speeds = np.linalg.norm(rotvec(np.swapaxes(R[0::2], -1, -2) @ R[1::2]), axis=-1) / (ends - starts)
        squared = np.sort((speeds - observed) ** 2)
        return float(np.mean(squared[: max(1, int(0.95 * len(squared)))]))  # trimmed: a slip's jump is no lag

    grid = np.arange(-max_lag_s, max_lag_s + 1e-9, 0.005)
    costs = np.array([cost(g) for g in grid])
    k = int(np.argmin(costs))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    golden = (np.sqrt(5) - 1) / 2
    a, b = lo + (1 - golden) * (hi - lo), lo + golden * (hi - lo)
    fa, fb = cost(a), cost(b)
    for _ in range(14):  # 10 ms -> ~0.01 ms
        if fa < fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - golden) * (hi - lo)
            fa = cost(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = cost(b)
    lag = 0.5 * (lo + hi)
    return LagEstimate(lag * 1e3, float(np.sqrt(cost(lag))), int(inside.sum()))
