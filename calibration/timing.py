"""Latency between two streams that see the same motion, and tracker roles by motion. Pure."""

from __future__ import annotations

import numpy as np

from capture_app.core.errors import CalibrationError

GRID_HZ = 1000.0


def _high_pass(x: np.ndarray, window_s: float = 0.5) -> np.ndarray:
    """Remove slow trends (a moving average over ``window_s``): the timing is in the fast changes."""
    n = int(window_s * GRID_HZ)
    if len(x) <= 2 * n:
        return x - x.mean()
    return x - np.convolve(x, np.ones(n) / n, mode="same")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float(np.sum(x * y) / (np.sqrt(np.sum(x * x) * np.sum(y * y)) + 1e-12))


def estimate_lag_ns(t_a: np.ndarray, a: np.ndarray, t_b: np.ndarray, b: np.ndarray,
                    max_lag_ms: float = 200.0) -> tuple[float, float]:
    """How much later (ns) signal ``a``'s stamps are than ``b``'s for the same events.

    Signals are (n,) or (n, d) (e.g. angular velocity vectors: components correlated and summed).
    Both are resampled on a 1 kHz grid over their overlap, high-passed, and correlated (Pearson per lag)
    over +-``max_lag_ms``; the peak is refined with a parabola. Returns (lag ns, peak correlation).
    A positive lag: ``a`` stamps an event later than ``b`` (subtract it from a's stamps).
    """
    t0, t1 = max(t_a[0], t_b[0]), min(t_a[-1], t_b[-1])
    if (t1 - t0) / 1e9 < 3 * max_lag_ms / 1000 + 2:
        raise CalibrationError("the two streams overlap too briefly to estimate a latency; record longer")
    grid = np.arange(t0, t1, 1e9 / GRID_HZ)
    a2, b2 = np.asarray(a, dtype=float).reshape(len(t_a), -1), np.asarray(b, dtype=float).reshape(len(t_b), -1)
    max_lag = int(max_lag_ms * GRID_HZ / 1000)
    lags = np.arange(-max_lag, max_lag + 1)
    n = len(grid)
    scores = np.zeros(len(lags))
    for column in range(a2.shape[1]):  # vector signals: the correlation summed over components
        x = _high_pass(np.interp(grid, t_a, a2[:, column]))
        y = _high_pass(np.interp(grid, t_b, b2[:, column]))
        scores += np.array([_pearson(x[max(0, k):n + min(0, k)], y[max(0, -k):n - max(0, k)]) for k in lags])
    scores /= a2.shape[1]
    i = int(np.argmax(scores))
    offset = 0.0
    if 0 < i < len(scores) - 1:
        left, mid, right = scores[i - 1], scores[i], scores[i + 1]
        denominator = left - 2 * mid + right
        offset = 0.5 * (left - right) / denominator if denominator != 0 else 0.0
    return (lags[i] + offset) * 1e9 / GRID_HZ, float(scores[i])


def assign_roles(motion: dict[str, tuple[np.ndarray, np.ndarray]], windows: list[tuple[str, int, int]],
                 margin: float = 3.0) -> dict[str, str]:
    """Which tracker moved in each role's window.

    ``motion``: serial -> (times ns, speed); ``windows``: (role, start ns, end ns) when the
    engineer moved that role's tracker. A tracker is assigned when its mean speed in the
    window beats every other tracker's by ``margin``; otherwise CalibrationError says which.
    """
    roles = {}
    for role, start, end in windows:
        scores = {}
        for serial, (t, speed) in motion.items():
            inside = (t >= start) & (t < end)
            scores[serial] = float(np.mean(speed[inside])) if inside.any() else 0.0
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        if not ranked or ranked[0][1] <= 0:
            raise CalibrationError(f"no tracker moved while {role} was asked for; move only that tracker")
        if len(ranked) > 1 and ranked[0][1] < margin * max(ranked[1][1], 1e-9):
            raise CalibrationError(f"ambiguous {role}: {ranked[0][0]} and {ranked[1][0]} both moved; hold the "
                                   f"others still and move only the {role} tracker")
        roles[role] = ranked[0][0]
    if len(set(roles.values())) != len(roles):
        raise CalibrationError(f"one tracker was picked for several roles: {roles}")
    return roles
