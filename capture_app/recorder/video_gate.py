"""Which H.264 camera frames an episode stores, decided as the frames arrive (docs/episode-format.md,
"Video storage").

A frame is stored when it is a keyframe or the packet numbered one less is the stream's last stored one
(from the same sender); the others (before the episode's first keyframe, or after a lost packet) cannot be
decoded and are counted, not stored. The writer applies this rule to what it stores; the dispatcher applies
the same rule, in the same arrival order, to what the live synchronizer may use, so a live row never points
at a frame the episode does not hold. Pure state, no I/O; not thread-safe by itself.
"""

from __future__ import annotations

from capture_app.bus.wire import Message


class VideoGate:
    """Per stream, the last stored packet number and its sender; ``reset`` when an episode starts."""

    def __init__(self):
        self._last_packet: dict[str, int] = {}
        self._sender: dict[str, int] = {}

    def reset(self) -> None:
        self._last_packet.clear()
        self._sender.clear()

    def admits(self, message: Message) -> bool:
        """True when ``message`` is not H.264 colour, or is an H.264 frame the episode stores (then it
        becomes the stream's last stored packet)."""
        if message.encodings.get("color") != "h264":
            return True
        stream = message.stream
        if self._sender.get(stream, message.sender) != message.sender:
            self._last_packet.pop(stream, None)  # a restarted driver: its encoder starts afresh
        self._sender[stream] = message.sender
        last = self._last_packet.get(stream)
        packet = message.meta.get("packet")
        if not message.meta.get("keyframe") and (last is None or packet != last + 1):
            return False
        self._last_packet[stream] = packet
        return True
