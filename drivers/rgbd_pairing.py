"""Pairing each colour frame of an RGB-D camera with its depth frame. Pure: no SDK, no clock.

A D435's colour and depth sensors are stamped a few ms apart (librealsense issues #5764,
#8643), either may drop a frame, and either may arrive first. Each colour frame is paired
with the depth frame nearest in device time within half a frame period, and is released
as soon as that is decided: a depth frame at or after its time has arrived, or it has
waited longer than ``wait_ns`` of host time (the depth frame was dropped). Every colour
frame is released exactly once, with a depth frame or with None. ``depth_history`` is how many
depth frames are kept to choose from: at least as many as can be added between two ``ready``
calls (a driver's whole queue after a stall), or a backlog's older colour frames lose their depth.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass
class Frame:
    """One frame as the SDK delivered it: device time in ms (the SDK's unit), host arrival in ns."""

    number: int
    device_ms: float
    arrival_ns: int
    data: Any = None
    domain: str = ""


class FramePairer:
    def __init__(self, fps: float, wait_ns: int | None = None, depth_history: int = 8):
        self.period_ms = 1000.0 / fps
        self.tolerance_ms = self.period_ms / 2
        self.wait_ns = int(2 * self.period_ms * 1e6) if wait_ns is None else int(wait_ns)
        self._colors: deque[Frame] = deque()
        self._depths: deque[Frame] = deque(maxlen=depth_history)

    def add_color(self, frame: Frame) -> None:
        self._colors.append(frame)

    def add_depth(self, frame: Frame) -> None:
        self._depths.append(frame)

    def ready(self, now_ns: int, *, flush: bool = False) -> list[tuple[Frame, Frame | None]]:
        """The colour frames decided by now (oldest first), each with its depth frame or None.
        ``flush``: decide every waiting frame (the stream ended)."""
        out = []
        while self._colors:
            color = self._colors[0]
            later_depth = any(d.device_ms >= color.device_ms for d in self._depths)
            if not (flush or later_depth or now_ns - color.arrival_ns > self.wait_ns):
                break
            self._colors.popleft()
            out.append((color, self._nearest_depth(color)))
        return out

    def _nearest_depth(self, color: Frame) -> Frame | None:
        best = min(self._depths, key=lambda d: abs(d.device_ms - color.device_ms), default=None)
        if best is None or abs(best.device_ms - color.device_ms) > self.tolerance_ms:
            return None
        return best

    @property
    def waiting(self) -> int:
        return len(self._colors)
