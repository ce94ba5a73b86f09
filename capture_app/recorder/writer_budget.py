"""The episode writer's bounded queue: each stream's share of it in samples, and the byte budget of all,
shed by priority (docs/rig-config.md, [writer] queue_size)."""

from __future__ import annotations

from collections import Counter

from capture_app.bus.message import SampleBlock
from capture_app.core.streams import STREAM_KINDS

DEFAULT_MAX_QUEUE_BYTES = 768 * 1024 * 1024
# Past a share of the byte budget the writer refuses (counted as writer_overflow) by stream kind, so an
# overloaded recorder sheds depth frames first, then colour frames, and poses and keypoints only at the
# full budget (docs/rig-config.md, [writer] queue_size).
SHED_AT_FRACTION = {"rgbd": 0.5, "image": 0.75}


def shed_limit(stream: str, max_bytes: int) -> float:
    """Queued bytes past which a sample of ``stream`` is refused: a share of the budget by its kind."""
    return max_bytes * SHED_AT_FRACTION.get(STREAM_KINDS.get(stream), 1.0)


def whole_or_split(items: list, queued: Counter, caps: dict, queued_bytes: int, max_bytes: int) -> list:
    """``items`` with each batch that does not fit the queue whole (its stream's cap, the byte budget, counting
    the batches before it) split into its samples, which are then taken or refused one by one."""
    out, added, added_bytes = [], Counter(), 0
    for item in items:
        if isinstance(item, SampleBlock):
            stream = item.stream
            if (queued[stream] + added[stream] + item.n <= caps.get(stream, 50)
                    and queued_bytes + added_bytes + item.nbytes <= max_bytes):
                added[stream] += item.n
                added_bytes += item.nbytes
                out.append(item)
                continue
            out.extend(item.messages())
            added[stream] += item.n  # an upper bound: the split samples may still be refused
            added_bytes += item.nbytes
        else:
            out.append(item)
            added[item.stream] += 1
            added_bytes += item.nbytes
    return out
