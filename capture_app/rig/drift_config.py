"""The rig config's ``[drift]`` table: the live drift watch's thresholds (docs/rig-config.md, "Drift alarms").

Checked on load; an error names the field, its value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capture_app.core.errors import ConfigError


def _fail(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"[drift]: field {name!r} = {value!r} is invalid; allowed: {allowed}")


@dataclass(frozen=True)
class DriftConfig:
    """``[drift]``: whether the recorder watches its mounts and latencies while it runs, and when it alarms.

    ``mount_slip_deg``: a mount (the ego camera's, a wrist tracker's strap) that turns by more than this at one
    instant is a slip (an alarm; a take that ends with it unresolved gets ``redo``); 1.0 leaves the estimate's
    noise (~0.05 deg) and a wrong calibration's wobble far below, and a slip that moves a fingertip ~1.5 mm per
    10 cm of lever above. ``latency_change_ms``: a stream whose lag against the trackers moves by more than
    this (two 10 s windows agreeing) is an alarm. ``visual_rate_hz``: ego frames analysed a second (the drift
    watch's main cost: ~3 ms of CPU a frame for a 720p JPEG); below 2.5 a lost frame breaks the rotation chain.
    """

    enabled: bool = True
    mount_slip_deg: float = 1.0
    latency_change_ms: float = 8.0
    visual_rate_hz: float = 5.0

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise _fail("enabled", self.enabled, "true or false")
        for name, lo, hi, unit in (("mount_slip_deg", 0.3, 10.0, "degrees"),
                                   ("latency_change_ms", 2.0, 100.0, "milliseconds"),
                                   ("visual_rate_hz", 2.5, 15.0, "frames a second")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise _fail(name, value, f"{unit} {lo:g}..{hi:g}")
            object.__setattr__(self, name, float(value))
