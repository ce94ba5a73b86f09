"""The quality report of an episode: is this take good enough to train on, and if not, why.

Pure: computed from arrays read out of the episode (``capture_app.recorder.final_table`` reads them).
Per hand, the fraction of valid rows of the final table and why the others are invalid; per
stream, its rate over the episode, gaps, samples published but never delivered, latency
(receive minus capture time) and stamp jitter; per camera, the fraction of rows with a frame;
a verdict against thresholds a rig config can set (``[quality]``, docs/rig-config.md), each
problem as text and as a structured reason (``reasons``) a user interface can show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture_app.core.interpolation import EXTRAPOLATED, LOST, NEAREST, VALID_STATUSES
from capture_app.core.streams import SYNCED_STREAMS

REPORT_VERSION = 3  # 2: rate_hz over the episode, undelivered, image coverage, reasons; 3: drift (mount slips, lag)
HAND_STREAMS = {"left": ("head_tracker", "left_wrist_tracker", "left_glove"),
                "right": ("head_tracker", "right_wrist_tracker", "right_glove")}


@dataclass(frozen=True)
class QualityThresholds:
    """A take is flagged for a redo when a hand has fewer valid rows, a stream loses more samples
    or runs slower, or a camera has a frame for fewer rows than these."""

    min_valid_fraction: float = 0.95
    max_lost_fraction: float = 0.01
    min_rate_fraction: float = 0.9
    min_image_coverage: float = 0.9

    def __post_init__(self):
        for name in ("min_valid_fraction", "max_lost_fraction", "min_rate_fraction", "min_image_coverage"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                from capture_app.core.errors import ConfigError
                raise ConfigError(f"[quality] {name} = {value!r}: expected a fraction from 0 to 1")


def episode_span_ns(attrs) -> tuple[int, int]:
    """The take's span on the host clock from an episode's root attributes: (``start_monotonic_ns``,
    ``stop_monotonic_ns``), the instants the take was started and stopped (a file without
    ``stop_monotonic_ns``, before format 1.4: ``end_monotonic_ns``, when it was closed)."""
    start = int(attrs.get("start_monotonic_ns", 0))
    return start, int(attrs.get("stop_monotonic_ns", attrs.get("end_monotonic_ns", start)))


def episode_rate_hz(t_capture_ns: np.ndarray, start_ns: int, stop_ns: int) -> float:
    """A stream's rate over the episode (Hz): its samples captured from the start to the stop of the
    take (``start_ns <= t_capture_ns <= stop_ns``), divided by the take's length ``(stop_ns - start_ns) / 1e9``.
    A stream that stalls or dies during the take counts the whole take, so its rate drops."""
    if stop_ns <= start_ns:
        return 0.0
    t = np.asarray(t_capture_ns, np.int64)
    return round(float(np.count_nonzero((t >= start_ns) & (t <= stop_ns))) / ((stop_ns - start_ns) / 1e9), 3)


def stream_figures(t_capture_ns: np.ndarray, t_receive_ns: np.ndarray, expected_rate_hz: float, seq_gaps: int,
                   writer_overflow: int, rejected: int, tracking_lost: int, span_ns: tuple[int, int] = (0, 0),
                   undelivered: int = 0) -> dict:
    """One stream's figures: rate over the episode's span ``(start, stop)`` (Hz, ``episode_rate_hz``),
    latency = receive - capture (ms), jitter = p95 of the capture intervals' distance from their median (ms),
    and its losses (``undelivered``: published by its driver before the stop, never stored)."""
    n = len(t_capture_ns)
    latency = (t_receive_ns.astype(np.int64) - t_capture_ns.astype(np.int64)) / 1e6 if n else np.zeros(0)
    intervals = np.diff(t_capture_ns.astype(np.int64)) / 1e6
    return {
        "samples": int(n),
        "rate_hz": episode_rate_hz(t_capture_ns, *span_ns),
        "expected_rate_hz": float(expected_rate_hz),
        "seq_gaps": int(seq_gaps), "undelivered": int(undelivered), "writer_overflow": int(writer_overflow),
        "rejected": int(rejected), "tracking_lost": int(tracking_lost),
        "latency_ms": ({"p50": round(float(np.median(latency)), 3), "p95": round(float(np.percentile(latency, 95)), 3),
                        "max": round(float(latency.max()), 3)} if n else None),
        "jitter_ms": round(float(np.percentile(np.abs(intervals - np.median(intervals)), 95)), 3) if n > 2 else None,
    }


def image_coverage(status: np.ndarray, t_eval_ns: np.ndarray, start_ns: int) -> dict:
    """A camera's column of the final table's ``stream_status``: ``image_coverage``, the fraction of rows with a
    frame within the image offset (status nearest), and ``longest_no_image_s`` [from, to], seconds after the
    episode's start, of the longest run of rows without one (None when every row has a frame)."""
    has = np.asarray(status) == NEAREST
    rows = len(has)
    out = {"image_coverage": round(float(np.mean(has)), 4) if rows else 0.0, "longest_no_image_s": None}
    missing = np.flatnonzero(~has)
    if len(missing):
        runs = np.split(missing, np.flatnonzero(np.diff(missing) > 1) + 1)
        run = max(runs, key=len)
        out["longest_no_image_s"] = [round((int(t_eval_ns[run[0]]) - start_ns) / 1e9, 2),
                                     round((int(t_eval_ns[run[-1]]) - start_ns) / 1e9, 2)]
    return out


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


def _reason(subject: str, check: str, value, limit, text: str) -> dict:
    return {"subject": subject, "check": check, "value": value, "limit": limit, "text": text}


def verdict_reasons(hands: dict, streams: dict, thresholds: QualityThresholds) -> list[dict]:
    """What falls short of the thresholds (empty: the take is good), each as ``{subject`` (a hand or a stream),
    ``check`` (valid_fraction, lost_fraction, rate, image_coverage, no_sample), ``value``, ``limit``, ``text}``."""
    reasons = []
    for hand, h in hands.items():
        if h["valid"] < thresholds.min_valid_fraction:
            reasons.append(_reason(f"{hand} hand", "valid_fraction", h["valid"], thresholds.min_valid_fraction,
                                   f"{hand} hand: {h['valid']:.1%} valid rows, below {thresholds.min_valid_fraction:.0%}"))
    for name, s in streams.items():
        lost = s["seq_gaps"] + s.get("undelivered", 0)
        expected_samples = s["samples"] + lost
        if expected_samples and lost / expected_samples > thresholds.max_lost_fraction:
            detail = f" ({s['undelivered']} published but never delivered)" if s.get("undelivered") else ""
            reasons.append(_reason(name, "lost_fraction", round(lost / expected_samples, 4), thresholds.max_lost_fraction,
                                   f"{name}: {lost} of {expected_samples} samples lost{detail}"))
        if s["expected_rate_hz"] and s["samples"] > 1 and s["rate_hz"] < thresholds.min_rate_fraction * s["expected_rate_hz"]:
            reasons.append(_reason(name, "rate", s["rate_hz"], thresholds.min_rate_fraction * s["expected_rate_hz"],
                                   f"{name}: {s['rate_hz']:.1f} Hz of {s['expected_rate_hz']:g} Hz over the take"))
        if s["samples"] == 0 and s["expected_rate_hz"]:
            reasons.append(_reason(name, "no_sample", 0, 1, f"{name}: no sample"))
        coverage = s.get("image_coverage")
        if coverage is not None and s["samples"] and coverage < thresholds.min_image_coverage:
            gap = s.get("longest_no_image_s")
            where = f"; no frame from {gap[0]:.1f} s to {gap[1]:.1f} s of the take" if gap else ""
            reasons.append(_reason(name, "image_coverage", coverage, thresholds.min_image_coverage,
                                   f"{name}: a frame for {coverage:.1%} of rows, below "
                                   f"{thresholds.min_image_coverage:.0%}{where}"))
    return reasons


def drift_reasons(drift: dict) -> list[dict]:
    """What the live drift watch found that makes a take ``redo``: a mount that slipped and was not put back
    (its net change over the threshold at the end of the take). ``drift`` is the episode's ``drift`` attribute."""
    reasons = []
    threshold = drift.get("threshold_deg", 1.0)
    for body, mount in sorted((drift.get("mounts") or {}).items()):
        if mount.get("unresolved"):
            what = "ego camera mount" if body == "head" else f"{body} wrist tracker"
            fix = ("repair it: `capture-app drift EPISODE --write-calibration fixed.json`, then `capture-app resync "
                   "EPISODE --calibration fixed.json`") if body == "head" else "re-seat the tracker and redo the take"
            reasons.append(_reason(what, "mount_slip", mount.get("net_deg"), threshold,
                                   f"{what} slipped {mount.get('net_deg', 0):.1f} deg during or before the take "
                                   f"({mount.get('slips', 0)} slip(s)); the rows after it are off: {fix}"))
    return reasons


def verdict(hands: dict, streams: dict, thresholds: QualityThresholds) -> list[str]:
    """What falls short of the thresholds, as text (empty: the take is good)."""
    return [r["text"] for r in verdict_reasons(hands, streams, thresholds)]


def format_report(report: dict) -> str:
    """The report as the lines `record` and `inspect` print."""
    lines = [f"  quality: {report['verdict'].upper()} ({report['rows']} rows, final table)"
             + (f"; live table had {report['live']['valid']:.1%} valid rows" if report.get("live") else "")]
    for hand, h in report["hands"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(h["invalid_reasons"].items())) or "none"
        lines.append(f"    {hand:<5} hand {h['valid']:7.2%} valid (wrist {h['wrist_valid']:.2%}, fingers "
                     f"{h['fingers_valid']:.2%}); extrapolated {h['extrapolated_rows']}; invalid: {reasons}")
    lines.append(f"    {'stream':<22}{'rate':>8}{'gaps':>6}{'undeliv':>8}{'rejected':>9}{'lat p50':>9}{'p95':>8}"
                 f"{'jitter':>8}{'images':>8}")
    for name, s in report["streams"].items():
        lat = s["latency_ms"] or {}
        coverage = f"{s['image_coverage']:.1%}" if s.get("image_coverage") is not None else ""
        lines.append(f"    {name:<22}{s['rate_hz']:>8.1f}{s['seq_gaps']:>6}{s.get('undelivered', 0):>8}{s['rejected']:>9}"
                     f"{lat.get('p50', float('nan')):>9.1f}{lat.get('p95', float('nan')):>8.1f}"
                     f"{s['jitter_ms'] if s['jitter_ms'] is not None else float('nan'):>8.2f}{coverage:>8}")
    lines.extend(f"    REDO: {p}" for p in report["problems"])
    return "\n".join(lines)
