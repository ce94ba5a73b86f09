"""The monitor's take and subtask commands (a mixin of ``MainWindow``): start, stop, abort, discard, subtask
marks, the recorder's replies, and the session's take list.

A second Space within ``SPACE_GUARD_S`` of the Space that started or stopped a take is ignored (a double tap, with gloves, must not save
a take and at once start another); discarding needs a second X. The take list is the recorder's history
(``takes.history``, docs/control.md), so a monitor attached later shows the earlier takes too.
"""

from __future__ import annotations

import time
from pathlib import Path

from capture_app.episode.annotations import Segment
from capture_app.monitor.summaries import quality_summary, take_losses

SPACE_GUARD_S = 1.5  # a Space this soon after a start or stop is a double tap: ignored, and said so


class TakeControl:
    """Take commands of the window. Expects the window's ``client``, ``tasks``, ``task_index``, ``take_state``,
    ``segments``, ``current_label``, ``session_list``, ``timeline``, ``status``, ``cues`` and its feedback
    methods (``refuse``, ``_show_error``, ``_confirmed``, ``_show_info``)."""

    _last_toggle = -1e9         # time.monotonic() of the last Space (or start/stop button) that acted
    _take_t0_ns = 0             # the recording take's start (recorder clock), for the timeline

    @property
    def recording(self) -> bool:
        return self.take_state in ("starting", "recording")

    def _send(self, cmd: str, args: dict | None = None) -> None:
        self.client.send(cmd, args, lambda ok, result, error: self._signals.replied.emit(cmd, ok, result, error))

    def toggle_recording(self) -> None:
        if self.review is not None:
            if self.edits is not None and self.edits.dirty and not self._confirmed(
                    "space", "unsaved subtask edits: Ctrl+S saves them, Space again drops them and goes live"):
                return
            self.back_to_live(force=True)
            return
        since = time.monotonic() - self._last_toggle
        if since < SPACE_GUARD_S:
            what = "started" if self.recording else "stopped"
            self.refuse(f"Space ignored: the take was {what} {since:.1f} s ago (a double tap?); "
                        f"press Space again after {SPACE_GUARD_S:.1f} s")
            return
        self._last_toggle = time.monotonic()
        if self.recording:
            self.stop_and_save()
        else:
            self.start_recording()

    def start_recording(self) -> None:
        if self.recording:
            return
        if self.take_state == "stopping":
            self.status.showMessage("the next take starts as soon as the last one is saved")
        self.take_state = "starting"
        self._send("start", {"name": self._episode_name, "instruction": self._instruction,
                             "task": self.tasks[self.task_index].name, "operator": self._operator})
        self.cues.say("recording")

    def _finish(self, outcome: str) -> None:
        if not self.recording:
            self.refuse("no take is recording")
            return
        self.take_state = "stopping"
        if outcome != "saved":  # Esc or X X came between: the next Space is not a double tap
            self._last_toggle = -1e9
        if outcome == "discarded":
            self._send("discard")
        else:
            self._send("stop", {"outcome": outcome})
        self.cues.say({"saved": "saved", "aborted": "aborted", "discarded": "discarded"}[outcome])

    def stop_and_save(self) -> None:
        self._finish("saved")

    def abort(self) -> None:
        self._finish("aborted")

    def discard(self) -> None:
        if not self.recording:
            self.refuse("X: no take is recording")
            return
        if self._confirmed("x", "press X again within 3 s to discard this take (no file is kept)"):
            self._finish("discarded")

    def _on_reply(self, cmd: str, ok: bool, result: dict, error: str) -> None:
        self._reply_t_ns = max(self._reply_t_ns, int(result.get("t_ns", 0)))
        if not ok:
            self._show_error(f"{cmd}: {error}")
            if cmd == "start":
                self.take_state = "idle"
            return
        if cmd == "start":
            self.take_state = "recording"
            self.segments, self.current_label = [], ""
            self._take_t0_ns = int(result.get("t_start_ns", 0))
            self.recording_name = result.get("name", "")
            self.status.showMessage(f"recording {result['path']}")
        elif cmd in ("stop", "discard"):
            self.take_state = "idle" if self.take_state == "stopping" else self.take_state
            self._draw_finished_segments(result)
            self.segments, self.current_label = [], ""
            self._episode_name = ""
            self.recording_name = ""
            self._show_info()
            self._add_take(result)
        elif cmd in ("mark_start", "mark_end", "undo"):
            self.segments, self.current_label = result["segments"], result["current"]
            self.status.showMessage(f"{cmd.replace('_', ' ')}: saved in the file "
                                    f"(current subtask: {self.current_label or 'none'})", 3000)

    def _draw_finished_segments(self, result: dict) -> None:
        """The finished take's subtasks as stored (the open one closed at the stop), or none if discarded."""
        segments = [Segment(**s) for s in result.get("segments") or []]
        if not self._take_t0_ns or self.review is not None:
            return
        if result.get("outcome") == "discarded" or not segments:
            self.timeline.show_segments([], self._take_t0_ns, self._take_t0_ns)
            return
        t_end = max(s.end_ns for s in segments)
        self.timeline.show_segments(segments, self._take_t0_ns, t_end, window_s=self.LIVE_TIMELINE_S)

    # --- the take list ---------------------------------------------------------------------
    @staticmethod
    def _take_line(take: dict) -> str:
        name = Path(take["path"]).name if take.get("path") else take.get("name", "")
        if take["outcome"] == "discarded":
            return f"{name}  [discarded]"
        if take.get("report") is None and take.get("checking", True):
            return f"{name}  [{take['outcome']}; checking quality...]"
        return f"{name}  [{take['outcome']}; {quality_summary(take.get('report'))}]"

    def _set_take_item(self, take: dict) -> None:
        """Add or update the take's line (matched by its file name); the tooltip holds the full line and
        what the take lost."""
        line = self._take_line(take)
        key = line.split("  [", 1)[0] + "  ["
        item = None
        for row in range(self.session_list.count()):
            if self.session_list.item(row).text().startswith(key) and take["outcome"] != "discarded":
                item = self.session_list.item(row)
        if item is None:
            self.session_list.addItem(line)
            item = self.session_list.item(self.session_list.count() - 1)
            self.session_list.scrollToItem(item)
        item.setText(line)
        losses = take_losses(take.get("report"))
        item.setToolTip(line + (f"\n{losses}" if losses else ""))

    def _add_take(self, take: dict) -> None:
        self._set_take_item(take)
        if take["outcome"] == "discarded":
            self.status.showMessage("take discarded: no file kept")
            return
        self.saved_episodes.append(take["path"])
        self.status.showMessage(f"{take['outcome']} {take['path']}")

    def _take_checked(self, take: dict) -> None:
        """The recorder computed a finished take's final table and quality: update its line."""
        self._set_take_item({**take, "checking": False})
        verdict, losses = quality_summary(take.get("report")), take_losses(take.get("report"))
        self.status.showMessage(f"{take['outcome']} {take['path']}: {verdict}; {losses}")
        if take.get("report") and take["report"]["verdict"] != "ok":
            self.cues.say("redo")

    def _adopt_history(self, takes: dict) -> None:
        """A monitor attached to a running recorder: the session's earlier takes and its operator."""
        for take in takes.get("history") or []:
            self._set_take_item(take)
        if not self._operator and takes.get("operator"):
            self._operator = takes["operator"]
            self._show_info()

    # --- subtasks ------------------------------------------------------------------------
    def _display_time(self) -> int:
        """The instant the operator is looking at: the shown tick's t_eval (the recorder's clock)."""
        return self._last_view_t
    def start_subtask(self, number: int) -> None:
        subtasks = self.tasks[self.task_index].subtasks
        if number > len(subtasks):
            self.refuse(f"{number}: task {self.tasks[self.task_index].name!r} has {len(subtasks)} subtasks")
            return
        template = subtasks[number - 1]
        if self.review is not None:
            self._review_edit(lambda e: e.mark(template.label, self._review_time(), template.description, template.hand))
            return
        if not self.recording:
            self.refuse(f"{number}: subtasks are marked during a take (or in review)")
            return
        self.current_label = template.label
        self._send("mark_start", {"label": template.label, "description": template.description,
                                  "hand": template.hand, "t_ns": self._display_time()})
        self.cues.say(template.label)

    def end_subtask(self) -> None:
        if self.review is not None:
            if not self._review_edit(lambda e: e.end_at(self._review_time())):
                self.refuse("0: no subtask under the playhead")
            return
        if not self.recording or not self.current_label:
            self.refuse("0: no subtask is open")
            return
        self._send("mark_end", {"t_ns": self._display_time()})
        self.cues.say("end")

    def undo_mark(self) -> None:
        if self.review is not None:
            if not self._review_edit(lambda e: e.undo()):
                self.refuse("nothing to undo")
            return
        if not self.recording:
            self.refuse("Backspace: no take is recording")
            return
        self._send("undo")  # the recorder holds the marks (some may still be on their way): it decides
