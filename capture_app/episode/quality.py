"""The quality report of an episode: is this take good enough to train on, and if not, why.

Pure: computed from arrays read out of the episode (``capture_app.recorder.final_table`` reads them).
Per hand, the fraction of valid rows of the final table and why the others are invalid; per
stream, its rate, gaps, latency (receive minus capture time) and stamp jitter; a verdict
against thresholds a rig config can set (``[quality]``, docs/rig-config.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture_app.core.interpolation import EXTRAPOLATED, LOST, VALID_STATUSES
from capture_app.core.streams import SYNCED_STREAMS

REPORT_VERSION = 1
HAND_STREAMS = {"left": ("head_tracker", "left_wrist_tracker", "left_glove"),
                "right": ("head_tracker", "right_wrist_tracker", "right_glove")}


@dataclass(frozen=True)
class QualityThresholds:
    """A take is flagged for a redo when a hand has fewer valid rows, a stream loses more samples
    or runs slower than these."""

    min_valid_fraction: float = 0.95
    max_lost_fraction: float = 0.01
    min_rate_fraction: float = 0.9

    def __post_init__(self):
        for name in ("min_valid_fraction", "max_lost_fraction", "min_rate_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                from capture_app.core.errors import ConfigError
                raise ConfigError(f"[quality] {name} = {value!r}: expected a fraction from 0 to 1")


def stream_figures(t_capture_ns: np.ndarray, t_receive_ns: np.ndarray, expected_rate_hz: float, seq_gaps: int,
                   writer_overflow: int, rejected: int, tracking_lost: int) -> dict:
    """One stream's figures: rate (Hz), latency = receive - capture (ms), jitter = p95 of the capture
    intervals' distance from their median (ms), and its losses."""
    n = len(t_capture_ns)
    duration = (t_capture_ns[-1] - t_capture_ns[0]) / 1e9 if n > 1 else 0.0
    latency = (t_receive_ns.astype(np.int64) - t_capture_ns.astype(np.int64)) / 1e6 if n else np.zeros(0)
    intervals = np.diff(t_capture_ns.astype(np.int64)) / 1e6
    return {
        "samples": int(n),
        "rate_hz": round((n - 1) / duration, 3) if duration > 0 else 0.0,
        "expected_rate_hz": float(expected_rate_hz),
        "seq_gaps": int(seq_gaps), "writer_overflow": int(writer_overflow), "rejected": int(rejected),
        "tracking_lost": int(tracking_lost),
        "latency_ms": ({"p50": round(float(np.median(latency)), 3), "p95": round(float(np.percentile(latency, 95)), 3),
                        "max": round(float(latency.max()), 3)} if n else None),
        "jitter_ms": round(float(np.percentile(np.abs(intervals - np.median(intervals)), 95)), 3) if n > 2 else None,
    }


def invalid_reasons(status: np.ndarray, t_eval_ns: np.ndarray, first_last: dict[str, tuple[int, int] | None],
                    hand: str) -> dict[str, int]:
    """Why rows of ``hand`` are invalid: per responsible stream, 'lost-tracking', 'gap' (samples exist
    on both sides) or 'missing' (none at all, or before the first / after the last sample)."""
    reasons: dict[str, int] = {}
    for stream in HAND_STREAMS[hand]:
        codes = status[:, SYNCED_STREAMS.index(stream)]
        bad = ~np.isin(codes, VALID_STATUSES)
        span = first_last.get(stream)
        for i in np.flatnonzero(bad):
            if codes[i] == LOST:
                reason = "lost-tracking"
            elif span is not None and span[0] <= t_eval_ns[i] <= span[1]:
                reason = "gap"
            else:
                reason = "missing"
            key = f"{reason}:{stream}"
            reasons[key] = reasons.get(key, 0) + 1
    return reasons


def hand_figures(action_valid: np.ndarray, status: np.ndarray, t_eval_ns: np.ndarray,
                 first_last: dict[str, tuple[int, int] | None]) -> dict:
    """Per hand: valid fractions (wrist, fingers, both), extrapolated rows, reasons for invalid rows."""
    rows = len(action_valid)
    out = {}
    for k, hand in enumerate(("left", "right")):
        wrist, fingers = action_valid[:, k], action_valid[:, 2 + k]
        extrapolated = np.zeros(rows, bool)
        for stream in HAND_STREAMS[hand]:
            extrapolated |= status[:, SYNCED_STREAMS.index(stream)] == EXTRAPOLATED
        out[hand] = {
            "valid": round(float(np.mean(wrist & fingers)), 4) if rows else 0.0,
            "wrist_valid": round(float(np.mean(wrist)), 4) if rows else 0.0,
            "fingers_valid": round(float(np.mean(fingers)), 4) if rows else 0.0,
            "extrapolated_rows": int(extrapolated.sum()),
            "invalid_reasons": invalid_reasons(status, t_eval_ns, first_last, hand),
        }
    return out


def verdict(hands: dict, streams: dict, thresholds: QualityThresholds) -> list[str]:
    """What falls short of the thresholds (empty: the take is good)."""
    problems = []
    for hand, h in hands.items():
        if h["valid"] < thresholds.min_valid_fraction:
            problems.append(f"{hand} hand: {h['valid']:.1%} valid rows, below {thresholds.min_valid_fraction:.0%}")
    for name, s in streams.items():
        expected_samples = s["samples"] + s["seq_gaps"]
        if expected_samples and s["seq_gaps"] / expected_samples > thresholds.max_lost_fraction:
            problems.append(f"{name}: {s['seq_gaps']} of {expected_samples} samples lost")
        if s["expected_rate_hz"] and s["samples"] > 1 and s["rate_hz"] < thresholds.min_rate_fraction * s["expected_rate_hz"]:
            problems.append(f"{name}: {s['rate_hz']:.1f} Hz of {s['expected_rate_hz']:g} Hz")
        if s["samples"] == 0 and s["expected_rate_hz"]:
            problems.append(f"{name}: no sample")
    return problems


def format_report(report: dict) -> str:
    """The report as the lines `record` and `inspect` print."""
    lines = [f"  quality: {report['verdict'].upper()} ({report['rows']} rows, final table)"
             + (f"; live table had {report['live']['valid']:.1%} valid rows" if report.get("live") else "")]
    for hand, h in report["hands"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(h["invalid_reasons"].items())) or "none"
        lines.append(f"    {hand:<5} hand {h['valid']:7.2%} valid (wrist {h['wrist_valid']:.2%}, fingers "
                     f"{h['fingers_valid']:.2%}); extrapolated {h['extrapolated_rows']}; invalid: {reasons}")
    lines.append(f"    {'stream':<22}{'rate':>8}{'gaps':>6}{'rejected':>9}{'lat p50':>9}{'p95':>8}{'jitter':>8}")
    for name, s in report["streams"].items():
        lat = s["latency_ms"] or {}
        lines.append(f"    {name:<22}{s['rate_hz']:>8.1f}{s['seq_gaps']:>6}{s['rejected']:>9}"
                     f"{lat.get('p50', float('nan')):>9.1f}{lat.get('p95', float('nan')):>8.1f}"
                     f"{s['jitter_ms'] if s['jitter_ms'] is not None else float('nan'):>8.2f}")
    lines.extend(f"    REDO: {p}" for p in report["problems"])
    return "\n".join(lines)
