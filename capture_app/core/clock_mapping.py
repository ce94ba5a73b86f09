"""Mapping a device's own clock onto the host monotonic clock.

Each sample gives a pair (device time, host arrival time). Arrival = capture + transport
delay, and the delay is never negative, so the lower envelope of (arrival - device)
follows the clock offset plus the minimum delay. We keep the minimum of each window
(1 s by default) and fit a line through the recent minima: offset and drift. The
residual minimum delay is a constant that the calibrated latency offset of the stream
absorbs. Pure: no clock is read here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClockEstimate:
    """host = device + offset_ns + drift * (device - reference_device_ns); drift in parts per million."""

    offset_ns: float
    drift_ppm: float
    reference_device_ns: int
    windows: int


class ClockMapper:
    """Maps one device clock onto the host clock; ``describe()`` gives the fit and its residual
    (arrival minus mapped time: the transport delay above its minimum, i.e. the arrival jitter)."""

    resets = 0  # times the device clock jumped back and the fit started again

    def __init__(self, window_ns: int = 1_000_000_000, history: int = 60):
        self.window_ns = int(window_ns)
        self._minima: deque[tuple[int, int]] = deque(maxlen=history)  # (device_ns, arrival - device)
        self._window_start: int | None = None
        self._window_min: tuple[int, int] | None = None
        self._reference: int | None = None
        self.estimate: ClockEstimate | None = None
        self.envelope_residual_ms: float | None = None  # see _envelope_residual_ms; kept with the fit
        self._residuals: deque[int] = deque(maxlen=300)  # arrival - mapped time: transport delay + jitter

    def add(self, device_ns: int, arrival_ns: int) -> None:
        """Feed one (device time, host arrival time) pair, both in ns."""
        device_ns, arrival_ns = int(device_ns), int(arrival_ns)
        if self._reference is None:
            self._reference = device_ns
            self._window_start = device_ns
        if device_ns < self._window_start:  # device clock jumped back: start again
            self.__init__(self.window_ns, self._minima.maxlen)
            self.resets += 1
            return self.add(device_ns, arrival_ns)
        difference = arrival_ns - device_ns
        changed = self.estimate is None
        if self._window_min is None or difference < self._window_min[1]:
            self._window_min = (device_ns, difference)
            changed = changed or len(self._minima) < 3  # an open window's minimum counts only at the start
        if device_ns - self._window_start >= self.window_ns:
            self._minima.append(self._window_min)
            self._window_start, self._window_min = device_ns, None
            changed = True
        if changed:  # the fit depends on the window minima alone: refit only when they change
            self._fit(device_ns, difference)
        self._residuals.append(arrival_ns - self.to_host(device_ns))

    def _fit(self, device_ns: int, difference: int) -> None:
        points = list(self._minima)  # completed windows only: an open one's minimum is not an envelope yet
        if len(points) < 3 and self._window_min:
            points.append(self._window_min)
        if len(points) >= 3:
            x = np.array([p[0] - self._reference for p in points], dtype=float)
            y = np.array([p[1] for p in points], dtype=float)
            slope, intercept = np.polyfit(x, y, 1)
            self.estimate = ClockEstimate(intercept, slope * 1e6, self._reference, len(points))
        else:
            best = min(points, key=lambda p: p[1]) if points else (device_ns, difference)
            self.estimate = ClockEstimate(float(best[1]), 0.0, self._reference, len(points))
        self.envelope_residual_ms = self._envelope_residual_ms()  # the fit changes once a window: not per sample

    def to_host(self, device_ns: int) -> int:
        """The host time of a device time (ns). Requires at least one ``add``."""
        e = self.estimate
        return int(round(device_ns + e.offset_ns + e.drift_ppm * 1e-6 * (device_ns - e.reference_device_ns)))

    def describe(self) -> dict:
        """For device info: the current fit."""
        e = self.estimate
        if e is None:
            return {}
        residual = np.array(self._residuals, dtype=float) / 1e6
        return {"offset_ns": round(e.offset_ns), "drift_ppm": round(e.drift_ppm, 3), "windows": e.windows,
                "residual_median_ms": round(float(np.median(residual)), 3),
                "residual_p95_ms": round(float(np.percentile(residual, 95)), 3), "resets": self.resets,
                "envelope_residual_ms": self.envelope_residual_ms}

    def _envelope_residual_ms(self) -> float | None:
        """The median distance (ms) of the completed windows' minima from the fitted line: near 0 for a clock
        that maps onto the host by an offset and a drift, whatever the transport jitter above the minimum
        (``residual_p95_ms``); large when the device clock steps or wanders. The median, so that a few windows
        whose every sample came late (a starved host) do not count. None before three windows."""
        e = self.estimate
        if e is None or len(self._minima) < 3:
            return None
        device = np.array([p[0] for p in self._minima], dtype=float)
        difference = np.array([p[1] for p in self._minima], dtype=float)
        fitted = e.offset_ns + e.drift_ppm * 1e-6 * (device - e.reference_device_ns)
        return round(float(np.median(np.abs(difference - fitted))) / 1e6, 3)
