"""``capture-app doctor --live``: stream a few seconds from each configured device and judge its timing.

Per stream it reports the rate against the expected rate, where its timestamps come from
(the timestamp domain the driver reports), the device-to-host clock offset and the
residual of that mapping, the jitter of the capture stamps, how many samples were not
tracked, and what is wrong. The drivers run exactly as they do while recording (their own
``open``/``read``/``close``), so what this shows is what an episode would get. An exception
from a device (an SDK's own, not only a ``CaptureError``) is that device's error: it is
reported with the driver's name and the next devices are still streamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from capture_app.core.clock import NS_PER_S, now_ns
from capture_app.rig.config import RigConfig
from capture_app.core.errors import CaptureError
from drivers.registry import create_driver

RATE_TOLERANCE = 0.9       # below this fraction of the expected rate: a problem
JITTER_LIMIT_FRACTION = 0.25  # capture-interval spread above this fraction of the period: a problem


@dataclass
class StreamTiming:
    """What a few seconds of one stream showed. Times in ms, rates in Hz."""

    stream: str
    samples: int
    rate_hz: float
    expected_rate_hz: float
    timestamp_domain: str
    offset_ms: float | None
    residual_p95_ms: float | None
    jitter_ms: float | None
    not_tracked: int
    problems: list[str] = field(default_factory=list)


def measure_stream(stream: str, expected_hz: float, stamps_ns: list[int], tracking: list[str],
                   device_info: dict, duration_s: float) -> StreamTiming:
    """Judge one stream from its capture stamps (host ns) and the driver's device info. Pure."""
    n = len(stamps_ns)
    rate = n / duration_s if duration_s > 0 else 0.0
    clock = device_info.get("clock") or {}
    domain = device_info.get("timestamp_domain") or "host arrival (no device clock)"
    intervals = np.diff(np.asarray(stamps_ns, dtype=np.int64)) / 1e6 if n > 2 else np.zeros(0)
    jitter = float(np.percentile(np.abs(intervals - np.median(intervals)), 95)) if intervals.size else None
    timing = StreamTiming(stream, n, rate, expected_hz, domain,
                          clock.get("offset_ns", None) and clock["offset_ns"] / 1e6, clock.get("residual_p95_ms"),
                          jitter, sum(1 for t in tracking if t != "ok"))
    if n == 0:
        timing.problems.append("no sample arrived: see the driver error above")
        return timing
    if expected_hz and rate < RATE_TOLERANCE * expected_hz:
        timing.problems.append(f"rate {rate:.1f} Hz is below {RATE_TOLERANCE:.0%} of the expected {expected_hz:g} Hz")
    if jitter is not None and expected_hz and jitter > JITTER_LIMIT_FRACTION * 1000 / expected_hz:
        timing.problems.append(f"capture stamps jitter by {jitter:.1f} ms (p95), over a quarter of the period")
    if intervals.size and np.any(intervals <= 0):
        timing.problems.append("capture stamps do not increase")
    if timing.not_tracked:
        timing.problems.append(f"{timing.not_tracked} of {n} samples degraded or lost (tracking / missing depth)")
    return timing


def live_check(config: RigConfig, seconds: float = 3.0, include_simulated: bool = False) -> tuple[list[StreamTiming], list[str]]:
    """Stream ``seconds`` from each local device driver of the rig; (timings, driver errors)."""
    timings, errors = [], []
    for d in config.drivers:
        if d.endpoint or (d.type.startswith("sim_") and not include_simulated):
            continue
        driver = None
        try:
            driver = create_driver(d, "inproc://doctor-live")
            if hasattr(driver, "start_runtime"):  # never start SteamVR from doctor (drivers/vive.py)
                driver.start_runtime = False
            driver.open()
        except Exception as exc:
            errors.append(f"{d.name}: {_describe(exc)}")
            timings.extend(measure_stream(s, d.rate_hz, [], [], {}, seconds) for s in d.streams)
            if driver is not None:
                _close(driver, d.name, errors)
            continue
        stamps = {s: [] for s in d.streams}
        tracking = {s: [] for s in d.streams}
        start = now_ns()
        try:
            while now_ns() - start < seconds * NS_PER_S:
                sample = driver.read()
                if sample is not None:
                    stream = sample.stream or d.stream
                    stamps.setdefault(stream, []).append(sample.t_capture_ns)
                    tracking.setdefault(stream, []).append(sample.tracking)
        except Exception as exc:  # the stream ends here; what arrived before is still judged
            errors.append(f"{d.name}: {_describe(exc)}")
        finally:
            elapsed = (now_ns() - start) / NS_PER_S
            _close(driver, d.name, errors)
        timings.extend(measure_stream(s, d.rate_hz, stamps[s], tracking[s], driver.device_info, elapsed)
                       for s in stamps)
    return timings, errors


def _describe(exc: BaseException) -> str:
    if isinstance(exc, CaptureError):
        return str(exc)
    return (f"the SDK raised {type(exc).__name__}: {exc} (check the installed SDK version; "
            f"`capture-app doctor` without --live shows the versions)")


def _close(driver, name: str, errors: list[str]) -> None:
    try:
        driver.close()
    except Exception as exc:
        errors.append(f"{name} (close): {_describe(exc)}")


def format_timings(timings: list[StreamTiming], errors: list[str]) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.2f}"
    lines = [f"{'stream':<22}{'samples':>8}{'rate':>8}{'expect':>8}{'offset ms':>12}{'resid p95':>10}{'jitter':>8}"
             f"  timestamp domain"]
    for t in timings:
        lines.append(f"{t.stream:<22}{t.samples:>8}{t.rate_hz:>8.1f}{t.expected_rate_hz:>8g}{ms(t.offset_ms):>12}"
                     f"{ms(t.residual_p95_ms):>10}{ms(t.jitter_ms):>8}  {t.timestamp_domain}")
        lines.extend(f"    PROBLEM: {p}" for p in t.problems)
    lines.extend(f"error: {e}" for e in errors)
    return "\n".join(lines)
