"""Normalisation statistics in LeRobot's layout (meta/stats.json): per feature ``min``, ``max``,
``mean``, ``std``, ``count`` and the quantiles ``q01 q10 q50 q90 q99``, per dimension. Pure numpy.

Per-episode statistics are exact; their aggregate is exact for min, max, mean, std and count
(pooled variance) and a count-weighted mean for the quantiles (as lerobot aggregates them).
"""

from __future__ import annotations

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics over axis 0 of ``values`` (N, ...) as float64 arrays of shape ``values.shape[1:]``;
    ``count`` is [N]."""
    x = np.asarray(values, dtype=np.float64)
    stats = {"min": x.min(axis=0), "max": x.max(axis=0), "mean": x.mean(axis=0), "std": x.std(axis=0),
             "count": np.array([len(x)])}
    for name, q in QUANTILES.items():
        stats[name] = np.quantile(x, q, axis=0)
    return stats


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of RGB uint8 frames (N, H, W, 3) scaled to [0, 1], shaped (3, 1, 1) as
    lerobot normalises images; ``count`` is the number of frames. The same figures as ``feature_stats``
    of the scaled pixels (to float rounding), from each channel's histogram of 256 values (no sort)."""
    pixels = frames.reshape(-1, 3)
    if pixels.dtype != np.uint8:
        stats = feature_stats(pixels.astype(np.float64) / 255.0)
    else:
        stats = {key: np.empty(3) for key in ("min", "max", "mean", "std", *QUANTILES)}
        levels = np.arange(256)
        for c in range(3):
            counts = np.bincount(pixels[:, c], minlength=256)
            n = int(counts.sum())
            total, squares = int(counts @ levels), int(counts @ (levels * levels))
            present = np.flatnonzero(counts)
            stats["min"][c], stats["max"][c] = present[0] / 255.0, present[-1] / 255.0
            stats["mean"][c] = total / n / 255.0
            stats["std"][c] = np.sqrt(max(n * squares - total * total, 0)) / n / 255.0
            cumulative = np.cumsum(counts)
            for name, q in QUANTILES.items():  # numpy's default (linear) quantile of the sorted values
                position = q * (n - 1)
                low = int(np.floor(position))
                below = np.searchsorted(cumulative, [low, min(low + 1, n - 1)], side="right") / 255.0
                stats[name][c] = below[0] + (below[1] - below[0]) * (position - low)
    out = {k: np.asarray(v).reshape(3, 1, 1) for k, v in stats.items() if k != "count"}
    out["count"] = np.array([len(frames)])
    return out


def aggregate_stats(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One feature's statistics over several episodes from each episode's statistics."""
    counts = np.array([float(p["count"][0]) for p in parts])
    weights = counts / counts.sum()
    def weighted(key):
        return sum(w * np.asarray(p[key], np.float64) for w, p in zip(weights, parts))
    mean = weighted("mean")
    second_moment = sum(w * (np.asarray(p["std"], np.float64) ** 2 + np.asarray(p["mean"], np.float64) ** 2)
                        for w, p in zip(weights, parts))
    out = {"min": np.min([p["min"] for p in parts], axis=0), "max": np.max([p["max"] for p in parts], axis=0),
           "mean": mean, "std": np.sqrt(np.maximum(second_moment - mean ** 2, 0.0)),
           "count": np.array([int(counts.sum())])}
    for name in QUANTILES:
        out[name] = weighted(name)
    return out


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    """Feature -> statistic -> nested lists, ready for json.dump."""
    return {feature: {k: np.asarray(v).tolist() for k, v in s.items()} for feature, s in stats.items()}
