"""A driver's health record: the payload of its ``_status/<driver>`` bus message (docs/protocol.md).

Drivers fill it, the recorder reads it; a leaf both import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from capture_app.core.values import INT64_MAX, MAX_NAME_CHARS, checked_choice, checked_number, storable_text


DRIVER_STATES = ("starting", "connecting", "running", "reconnecting", "stopped", "failed")


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
    # stream -> [sender, seq] of the newest sample handed to the bus (docs/protocol.md, status messages)
    published: dict = field(default_factory=dict)
    # stream -> [frames, CPU seconds] its colour encoder (JPEG or H.264) has used in the driver, since it started
    encoder_cpu: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DriverHealth":
        """A status as published (docs/protocol.md, "Driver health"): ValueError naming the first field of the
        wrong type or out of range (the status is then refused whole); texts are kept, made storable
        (control characters escaped, cut to 4096 characters). Unknown keys are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"a status is a map, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("name", "stream"):
            if not isinstance(values.get(name), str) or not values[name] or len(values[name]) > MAX_NAME_CHARS:
                raise ValueError(f"{name} must be a non-empty text of at most {MAX_NAME_CHARS} characters")
        if "state" in values:
            checked_choice("state", values["state"], DRIVER_STATES)
        if "tracking" in values:
            checked_choice("tracking", values["tracking"], ("ok", "degraded", "lost"))
        for name in ("expected_rate_hz", "rate_hz"):
            if name in values:
                values[name] = checked_number(name, values[name], 0.0, 1e6)
        if values.get("last_sample_age_s") is not None:
            values["last_sample_age_s"] = checked_number("last_sample_age_s", values["last_sample_age_s"], 0.0, 1e9)
        for name in ("samples", "lost", "errors"):
            if name in values and (isinstance(values[name], bool) or not isinstance(values[name], int)
                                   or not 0 <= values[name] <= INT64_MAX):
                raise ValueError(f"{name} must be an integer from 0 to 2**63 - 1")
        if "streams" in values and not (isinstance(values["streams"], list) and len(values["streams"]) <= 64
                                        and all(isinstance(s, str) and len(s) <= MAX_NAME_CHARS
                                                for s in values["streams"])):
            raise ValueError("streams must be a list of at most 64 stream names")
        if "device" in values and not isinstance(values["device"], dict):
            raise ValueError("device must be a map")
        if "published" in values and not isinstance(values["published"], dict):
            values["published"] = {}  # optional and advisory: a malformed one counts as absent (published_by_status)
        if "encoder_cpu" in values and not (isinstance(values["encoder_cpu"], dict) and all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                           for x in v) for v in values["encoder_cpu"].values())):
            values["encoder_cpu"] = {}  # optional and advisory, like published
        if "last_error" in values:
            values["last_error"] = storable_text(values["last_error"])[0]
        return cls(**values)
