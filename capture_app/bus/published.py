"""What a driver says it has published: the ``published`` field of its status message (docs/protocol.md).

The recorder compares it with what it stored to count the samples a driver published before the stop
that never arrived (the stream attribute ``undelivered``, docs/episode-format.md). Pure.
"""

from __future__ import annotations

_UINT64 = 1 << 64


def published_by_status(health) -> dict[str, tuple[int, int]]:
    """Stream -> (sender, seq) of the newest sample a driver's status says it published, for the streams
    that driver publishes; a missing field (older publishers) or malformed entries give nothing."""
    published = getattr(health, "published", None)
    if not isinstance(published, dict):
        return {}
    own = set(health.streams or []) | {health.stream}
    out = {}
    for stream, value in published.items():
        if stream not in own or not isinstance(value, (list, tuple)) or len(value) != 2:
            continue
        sender, seq = value
        if all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _UINT64 for v in (sender, seq)):
            out[stream] = (sender, seq)
    return out
