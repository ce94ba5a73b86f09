"""The simulated rig's samples without running it: faster than real time, for benchmarks and estimator tests.

The same device classes (and faults) as the live sim, asked for their samples at their own rates over a span of
motion time; stamps are the exact ones (true instant + true latency, incl. a latency change), so what an
estimator sees differs from a live exact-timing take only by the bus. Times: seconds of motion time, stamps in
ns with the epoch at 0.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from capture_app.rig.config import DriverConfig
from drivers.registry import create_driver
from drivers.sim.faults import latency_ns

RATES = {"left_glove": 120, "right_glove": 120, "left_wrist_tracker": 250, "right_wrist_tracker": 250,
         "head_tracker": 250, "ego_camera": 5}
TYPES = {"left_glove": "sim_glove", "right_glove": "sim_glove", "left_wrist_tracker": "sim_tracker",
         "right_wrist_tracker": "sim_tracker", "head_tracker": "sim_tracker", "ego_camera": "sim_ego_camera"}


@dataclass
class OfflineSample:
    """What the drift watch reads of a bus message."""

    stream: str
    t_capture_ns: int
    arrays: dict
    tracking: str = "ok"
    seq: int = 0
    encodings: dict = field(default_factory=dict)


def samples(t0_s: float, t1_s: float, options: dict[str, dict] | None = None, *, seed: int = 0,
            ego_size: tuple[int, int] = (320, 180), rates: dict[str, float] | None = None,
            chunk_s: float = 1.0, streams: tuple[str, ...] | None = None):
    """Every stream's samples in [t0_s, t1_s) in stamp order. ``options``: per stream, extra sim options (faults,
    ``latency_ms``); ``rates``: per stream (Hz), default ``RATES`` (the ego camera at the drift watch's rate);
    ``streams``: only these (default: all of ``TYPES``)."""
    options = options or {}
    rates = {**RATES, **(rates or {})}
    drivers = {}
    for stream, kind in TYPES.items():
        if streams is not None and stream not in streams:
            continue
        opts = {"seed": seed, **options.get(stream, {})}
        if stream == "ego_camera":
            opts.update(width=ego_size[0], height=ego_size[1])
        drivers[stream] = create_driver(DriverConfig(stream, kind, stream, rates[stream], options=opts), "inproc://offline")
    start = t0_s
    while start < t1_s:
        end = min(start + chunk_s, t1_s)
        streams = []
        for stream, driver in drivers.items():
            k0, k1 = int(np.ceil(start * rates[stream])), int(np.ceil(end * rates[stream]))
            t = np.arange(k0, k1) / rates[stream]
            if len(t) == 0:
                continue
            made = driver.make_samples(t, np.zeros(len(t), bool))
            stamps = (t * 1e9).astype(np.int64) + latency_ns(driver.options, t)
            streams.append([(int(s), stream, k0 + i, m.arrays) for i, (s, m) in enumerate(zip(stamps, made))])
        for stamp, stream, seq, arrays in heapq.merge(*streams):
            yield OfflineSample(stream, stamp, arrays, seq=seq)
        start = end
