"""A driver's health record: the payload of its ``_status/<driver>`` bus message (docs/protocol.md).

Drivers fill it, the recorder reads it; a leaf both import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class DriverHealth:
    """A snapshot of a driver's health, as published in its status message."""

    name: str
    stream: str
    streams: list = field(default_factory=list)  # every stream the driver publishes
    state: str = "starting"  # starting | connecting | running | reconnecting | stopped | failed
    expected_rate_hz: float = 0.0
    rate_hz: float = 0.0
    last_sample_age_s: float | None = None
    samples: int = 0
    lost: int = 0
    errors: int = 0
    last_error: str = ""
    tracking: str = "ok"
    device: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DriverHealth":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
