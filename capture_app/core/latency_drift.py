"""Latency drift: how late one stream's stamps are against the trackers', from how fast things turn.

A body turning is seen by two sources (the head tracker and the ego camera's own rotation; a wrist tracker and
the glove's IMU). Their angular speeds agree at the same true instant, so if the observed stream's stamps are
``lag`` late (after the calibration's latency offsets), ``speed_obs(t) = speed_ref(t - lag)``. The speeds are
frame-free (no mount or world frame needed). The observed speed is given over intervals between its instants
(a camera: between processed frames), and the reference's speed is taken over the same intervals shifted by
the lag, so both are averaged alike; the lag minimises their squared difference: a scan (the cross-correlation
of angular speeds, in its least-squares form, all lags in one numpy batch) then a finer scan around its best lag
and a parabola through the finer scan's best three.
Pure: no I/O, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture_app.core.rotation_series import QuatTrack

MIN_SPEED_STD_RAD_S = 0.05  # below this the body hardly turns: the lag is not observable


@dataclass(frozen=True)
class LagEstimate:
    """``lag_ms``: how late the observed stamps are (positive: add it to that stream's latency offset);
    ``rms_rad_s``: the speed residual at that lag; ``intervals``: how many observed intervals were used."""

    lag_ms: float
    rms_rad_s: float
    intervals: int


def estimate_lag(t_ref_s: np.ndarray, R_ref: np.ndarray, t_obs_s: np.ndarray, speed_obs: np.ndarray,
                 max_lag_s: float = 0.1, scan_step_s: float = 0.005) -> LagEstimate | None:
    """The observed stream's lag against the reference.

    ``t_ref_s`` (m,), ``R_ref`` (m, 3, 3) or (m, 4): the reference orientations; ``t_obs_s`` (n+1,) the observed
    instants and ``speed_obs`` (n,) its angular speeds (rad/s) between consecutive ones. Observed intervals
    whose shifted span leaves the reference's span are not used. None when too little turning (or too little
    overlap) makes the lag unobservable, in either stream. ``scan_step_s``: the scan's step; the refinement scans the two steps
    around its best lag at a tenth of it (the cost is smooth over tens of ms: the body's motion is slower).
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
    track = QuatTrack(t_ref_s[near], np.asarray(R_ref)[near])
    keep = max(1, int(0.95 * len(observed)))

    def costs(lags: np.ndarray) -> np.ndarray:
        """The trimmed mean squared speed difference (rad/s)^2 at each of ``lags`` (k,), in one batch."""
        lags = np.asarray(lags, dtype=float)[:, None]
        angle = track.angle_between(starts[None] - lags, ends[None] - lags)
        squared = (angle / (ends - starts) - observed) ** 2
        squared = np.partition(squared, keep - 1, axis=1)[:, :keep] if keep < squared.shape[1] else squared
        return squared.mean(axis=1)  # trimmed: a slip's jump is no lag

    reference_speed = track.angle_between(starts, ends) / (ends - starts)
    if np.std(reference_speed) < MIN_SPEED_STD_RAD_S:  # the reference stands still (a stuck or replaced tracker):
        return None                                    # every lag costs the same, the scan's edge would win
    lag = scan_lag(costs, max_lag_s, scan_step_s)
    rms = float(np.sqrt(costs(np.array([lag]))[0]))
    return LagEstimate(lag * 1e3, rms, int(inside.sum()))


def scan_lag(costs, max_lag_s: float, scan_step_s: float) -> float:
    """The lag (s) minimising ``costs`` (a function of lags (k,) in s -> costs (k,), evaluated in batches): a scan of
    [-max_lag_s, max_lag_s] at ``scan_step_s``, then 21 lags across the two steps around its best, and the vertex
    of the parabola through the finer scan's best three. Shared by every lag estimator here and in
    ``top_motion``."""
    grid = np.arange(-max_lag_s, max_lag_s + 1e-9, scan_step_s)
    k = int(np.argmin(costs(grid)))
    fine = np.linspace(grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)], 21)
    fine_costs = costs(fine)
    j = int(np.argmin(fine_costs))
    lag = fine[j]
    if 0 < j < len(fine) - 1:
        c0, c1, c2 = fine_costs[j - 1:j + 2]
        curvature = c0 - 2 * c1 + c2
        if curvature > 0:
            lag += 0.5 * (c0 - c2) / curvature * (fine[1] - fine[0])
    return float(lag)
