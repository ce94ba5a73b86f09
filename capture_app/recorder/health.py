"""Per-stream health as the operator sees it: rate, age, gaps, tracking -> ok / degraded / lost."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from capture_app.bus.message import Message, SampleBlock
from capture_app.core.clock import NS_PER_S, now_ns

LOST_AFTER_S = 0.5        # no sample for this long: the stream is lost
DEGRADED_RATE_RATIO = 0.8  # below this fraction of the expected rate: degraded
LATENCY_WARN_RATIO = 0.7   # receive - capture p95 above this fraction of the sync delay: degraded (live rows at risk)


@dataclass(frozen=True)
class StreamStatus:
    """One stream's health now. ``state`` is ok | degraded | lost | waiting; ``reason`` says why."""

    stream: str
    state: str
    reason: str
    rate_hz: float
    expected_rate_hz: float
    age_s: float | None
    samples: int
    seq_gaps: int
    gaps_last_second: int
    tracking: str
    rejected: int = 0
    latency_p95_ms: float | None = None  # receive minus capture time over the last second
    last_capture_ns: int | None = None   # capture time of the newest sample


class StreamMonitor:
    """Counts what the dispatcher receives; ``snapshot`` classifies each stream. Thread-safe."""

    def __init__(self, expected_rates_hz: dict[str, float], sync_delay_ns: int = 100_000_000):
        self.expected = dict(expected_rates_hz)
        self.latency_warn_ns = LATENCY_WARN_RATIO * sync_delay_ns
        self.sync_delay_ms = sync_delay_ns / 1e6
        self._lock = threading.Lock()
        self._recent = {s: deque() for s in self.expected}      # receive times within the last second
        self._latency = {s: deque() for s in self.expected}     # receive - capture (ns), same window
        self._gap_times = {s: deque() for s in self.expected}   # (receive time, samples missing)
        self._last_seq: dict[str, int] = {}
        self._sender: dict[str, int] = {}
        self._samples = {s: 0 for s in self.expected}
        self._gaps = {s: 0 for s in self.expected}
        self._tracking = {s: "ok" for s in self.expected}
        self._rejections = {s: deque() for s in self.expected}  # (receive time, reason) within the last second
        self._rejected = {s: 0 for s in self.expected}
        self._last_capture: dict[str, int] = {}

    def note_rejected(self, stream: str, reason: str, t_receive_ns: int) -> None:
        """A message of ``stream`` was refused (schema, plausibility, ownership): degrades it for a second."""
        if stream not in self.expected:
            return
        with self._lock:
            self._rejected[stream] += 1
            rejections = self._rejections[stream]
            rejections.append((t_receive_ns, reason))
            while rejections and rejections[0][0] < t_receive_ns - NS_PER_S:
                rejections.popleft()

    def observe(self, message: Message) -> None:
        s = message.stream
        if s not in self.expected:
            return
        with self._lock:
            if self._sender.get(s, message.sender) != message.sender:
                self._last_seq.pop(s, None)  # a restarted driver counts from 0 again
            self._sender[s] = message.sender
            last = self._last_seq.get(s)
            if last is not None and message.seq > last + 1:
                self._gaps[s] += message.seq - last - 1
                self._gap_times[s].append((message.t_receive_ns, message.seq - last - 1))
            self._last_seq[s] = max(message.seq, last if last is not None else message.seq)
            recent, gaps, latency = self._recent[s], self._gap_times[s], self._latency[s]
            recent.append(message.t_receive_ns)
            latency.append(message.t_receive_ns - message.t_capture_ns)
            horizon = message.t_receive_ns - NS_PER_S  # keep one second: snapshots stay O(streams)
            while recent[0] < horizon:
                recent.popleft()
                latency.popleft()
            while gaps and gaps[0][0] < horizon:
                gaps.popleft()
            self._samples[s] += 1
            self._tracking[s] = message.tracking
            self._last_capture[s] = message.t_capture_ns

    def observe_block(self, block: SampleBlock) -> None:
        """``observe`` of each sample of a batch (one sender, consecutive seqs, one receive stamp)."""
        s = block.stream
        if s not in self.expected:
            return
        with self._lock:
            if self._sender.get(s, block.sender) != block.sender:
                self._last_seq.pop(s, None)
            self._sender[s] = block.sender
            last = self._last_seq.get(s)
            if last is not None and block.seq > last + 1:
                self._gaps[s] += block.seq - last - 1
                self._gap_times[s].append((block.t_receive_ns, block.seq - last - 1))
            newest = block.seq + block.n - 1
            self._last_seq[s] = max(newest, last if last is not None else newest)
            recent, gaps, latency = self._recent[s], self._gap_times[s], self._latency[s]
            recent.extend([block.t_receive_ns] * block.n)
            latency.extend((block.t_receive_ns - block.t_capture_ns).tolist())
            horizon = block.t_receive_ns - NS_PER_S
            while recent[0] < horizon:
                recent.popleft()
                latency.popleft()
            while gaps and gaps[0][0] < horizon:
                gaps.popleft()
            self._samples[s] += block.n
            self._tracking[s] = block.tracking[-1]
            self._last_capture[s] = int(block.t_capture_ns[-1])

    def snapshot(self, t_ns: int | None = None) -> dict[str, StreamStatus]:
        t = now_ns() if t_ns is None else t_ns
        out = {}
        with self._lock:
            for s, expected in self.expected.items():
                recent = self._recent[s]
                age = (t - recent[-1]) / NS_PER_S if recent else None
                # the deque holds the last second up to the newest sample; older than that now means fewer
                rate = float(len(recent)) if age is not None and age <= 0.05 else \
                    float(sum(1 for x in recent if t - x <= NS_PER_S))
                gaps_1s = sum(n for x, n in self._gap_times[s] if t - x <= NS_PER_S)
                rejected_1s = [r for x, r in self._rejections[s] if t - x <= NS_PER_S]
                latencies = sorted(self._latency[s])
                latency_p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else None
                tracking = self._tracking[s]
                if age is None:
                    state, reason = "waiting", "no data yet"
                elif age > LOST_AFTER_S:
                    state, reason = "lost", f"no data for {age:.1f} s"
                elif tracking == "lost":
                    state, reason = "lost", "tracking lost"
                elif expected and rate < DEGRADED_RATE_RATIO * expected:
                    state, reason = "degraded", f"rate {rate:.0f} of {expected:.0f} Hz"
                elif gaps_1s:
                    state, reason = "degraded", f"{gaps_1s} sample(s) lost in the last second"
                elif rejected_1s:
                    state, reason = "degraded", f"{len(rejected_1s)} rejected in the last second ({rejected_1s[-1]})"
                elif latency_p95 is not None and latency_p95 > self.latency_warn_ns:
                    state, reason = "degraded", (f"latency p95 {latency_p95 / 1e6:.0f} ms near the "
                                                 f"{self.sync_delay_ms:.0f} ms sync delay: live rows at risk")
                elif tracking == "degraded":
                    state, reason = "degraded", "tracking degraded"
                else:
                    state, reason = "ok", ""
                if age is None and rejected_1s:
                    reason = f"every message rejected ({rejected_1s[-1]})"
                out[s] = StreamStatus(s, state, reason, rate, expected, age, self._samples[s], self._gaps[s],
                                      gaps_1s, tracking, self._rejected[s],
                                      None if latency_p95 is None else latency_p95 / 1e6, self._last_capture.get(s))
        return out
