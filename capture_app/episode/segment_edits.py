"""Editing a recorded episode's subtask segments in review: pure, no Qt, no file.

Times are host monotonic ns on the episode's clock, like ``Segment``. Every edit can be
undone; ``problems`` says what would make the segments invalid to save (a start after its
end, a segment outside the episode, overlaps), and ``log`` lists the edits made, for /events.
"""

from __future__ import annotations

from dataclasses import replace

from capture_app.episode.annotations import Segment


class SegmentEdits:
    def __init__(self, segments: list[Segment], t0_ns: int, t_end_ns: int):
        self.t0_ns, self.t_end_ns = int(t0_ns), int(t_end_ns)
        # an open segment (a take stopped by a crash) ends with the episode
        self.segments = sorted((replace(s, end_ns=self.t_end_ns) if s.is_open else s for s in segments),
                               key=lambda s: s.start_ns)
        self._history: list[tuple[list[Segment], str]] = []
        self.log: list[str] = []

    @property
    def dirty(self) -> bool:
        return bool(self.log)

    def _push(self, what: str) -> None:
        self._history.append((list(self.segments), what))
        self.log.append(what)

    def _seconds(self, t_ns: int) -> str:
        return f"{(t_ns - self.t0_ns) / 1e9:.3f} s"

    def index_at(self, t_ns: int) -> int | None:
        """The segment covering ``t_ns`` (start <= t < end), or None."""
        for i, s in enumerate(self.segments):
            if s.start_ns <= t_ns < s.end_ns:
                return i
        return None

    def mark(self, label: str, t_ns: int, description: str = "", hand: str = "both") -> None:
        """Start ``label`` at ``t_ns``: it ends where the next segment starts (or the episode ends), and a
        segment covering ``t_ns`` now ends there."""
        t_ns = int(min(max(t_ns, self.t0_ns), self.t_end_ns))
        self._push(f"subtask {label!r} marked at {self._seconds(t_ns)}")
        covering = self.index_at(t_ns)
        if covering is not None:
            self.segments[covering] = replace(self.segments[covering], end_ns=t_ns)
        later = [s.start_ns for s in self.segments if s.start_ns > t_ns]
        self.segments.append(Segment(label, description, hand, t_ns, min(later) if later else self.t_end_ns))
        self._tidy()

    def end_at(self, t_ns: int) -> bool:
        """End the segment covering ``t_ns`` there; False when none covers it."""
        covering = self.index_at(int(t_ns))
        if covering is None:
            return False
        self._push(f"subtask {self.segments[covering].label!r} ended at {self._seconds(t_ns)}")
        self.segments[covering] = replace(self.segments[covering], end_ns=int(t_ns))
        self._tidy()
        return True

    def split(self, index: int, t_ns: int) -> bool:
        """Cut segment ``index`` in two at ``t_ns`` (both keep its label); False when t is not inside it."""
        s = self.segments[index]
        if not s.start_ns < t_ns < s.end_ns:
            return False
        self._push(f"subtask {s.label!r} split at {self._seconds(t_ns)}")
        self.segments[index: index + 1] = [replace(s, end_ns=int(t_ns)), replace(s, start_ns=int(t_ns))]
        return True

    def delete(self, index: int) -> None:
        self._push(f"subtask {self.segments[index].label!r} at {self._seconds(self.segments[index].start_ns)} deleted")
        del self.segments[index]

    def set_text(self, index: int, label: str | None = None, description: str | None = None) -> None:
        s = self.segments[index]
        changes = {k: v for k, v in (("label", label), ("description", description)) if v is not None and v != getattr(s, k)}
        if changes:
            self._push(f"subtask {s.label!r} {', '.join(changes)} set to {', '.join(map(repr, changes.values()))}")
            self.segments[index] = replace(s, **changes)

    def set_times(self, index: int, start_s: float | None = None, end_s: float | None = None) -> None:
        """Set a boundary to an exact time (seconds since the episode start); checked by ``problems``."""
        s = self.segments[index]
        start = s.start_ns if start_s is None else self.t0_ns + int(round(start_s * 1e9))
        end = s.end_ns if end_s is None else self.t0_ns + int(round(end_s * 1e9))
        if (start, end) != (s.start_ns, s.end_ns):
            self._push(f"subtask {s.label!r} set to {self._seconds(start)} .. {self._seconds(end)}")
            self.segments[index] = replace(s, start_ns=start, end_ns=end)
            self._tidy()

    def undo(self) -> bool:
        if not self._history:
            return False
        self.segments, what = self._history.pop()
        self.log.append(f"undone: {what}")
        return True

    def problems(self) -> list[str]:
        """Why these segments cannot be saved (empty when they can)."""
        out = []
        for i, s in enumerate(self.segments):
            name = f"subtask {i + 1} {s.label!r}"
            if not s.label.strip():
                out.append(f"subtask {i + 1} has no label")
            if s.end_ns <= s.start_ns:
                out.append(f"{name}: its end {self._seconds(s.end_ns)} is not after its start {self._seconds(s.start_ns)}")
            if s.start_ns < self.t0_ns or s.end_ns > self.t_end_ns:
                out.append(f"{name} ({self._seconds(s.start_ns)} .. {self._seconds(s.end_ns)}) is outside the "
                           f"episode (0 .. {self._seconds(self.t_end_ns)})")
            if i and s.start_ns < self.segments[i - 1].end_ns:
                out.append(f"{name} starts before subtask {i} ends")
        return out

    def _tidy(self) -> None:
        self.segments.sort(key=lambda s: s.start_ns)
