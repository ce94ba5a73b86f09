"""What the panel shows and which control command a tap becomes: pure, no I/O (testable without a browser).

The recorder owns the take (docs/control.md); the panel holds only what a monitor holds: the chosen task
template, the next take's info (name, operator, instruction) and the state of its own commands in flight.
Like the Qt monitor it trusts its own replies first and the recorder's ``status`` once no command of its
own is pending and the status is newer than its last reply, so two panels and a Qt monitor on one
recorder converge on the recorder's word within one status (0.2 s).

A tap is an *action* from the page (``ACTIONS``); ``command_for`` turns it into a control command or
refuses it with a sentence the page shows. Discard needs ``confirmed: true`` (the page's second tap).
"""

from __future__ import annotations

import re
from collections import deque

from capture_app.core.values import MAX_NAME_CHARS, MAX_TEXT_CHARS, checked_text
from capture_app.panel.rules import bar, quality_summary, stream_rows
from capture_app.rig.tasks import TaskTemplate

ACTIONS = ("start", "stop", "abort", "discard", "subtask", "end_subtask", "undo", "next_task", "set_info")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}")  # what the recorder accepts (recorder/episodes.py)
SILENT_S = 2.0          # the recorder sends its status 5 times a second: 2 s without one is a silent recorder
MAX_TAKES_LISTED = 20  # the page lists this many finished takes, newest first (bounded over a day)


class Refused(ValueError):
    """A tap that cannot act now; the message says why (shown on the page)."""


class PanelModel:
    """The panel's state. ``command_for`` / ``on_reply`` / ``adopt_status`` / ``on_take`` change it;
    ``snapshot`` is what every page is sent (JSON-ready)."""

    def __init__(self, tasks: list[TaskTemplate], operator: str = ""):
        if not tasks:
            raise ValueError("the panel needs at least one task template")
        self.tasks = tasks
        self.task_index = 0
        self.info = {"name": "", "operator": operator, "instruction": tasks[0].instruction}
        self.take_state = "idle"          # idle | starting | recording | stopping
        self.segments: list[dict] = []
        self.current = ""
        self.episode: dict = {}
        self.reply_t_ns = 0
        self.takes: deque = deque(maxlen=MAX_TAKES_LISTED)   # finished takes, newest first
        self.message = ""                 # the last acknowledgement or refusal, for the page's status line
        self.message_error = False

    # --- taps -------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.take_state in ("starting", "recording")

    def task(self) -> TaskTemplate:
        """The task shown: the one being recorded (whoever started it), else the chosen template."""
        name = self.episode.get("task") if self.recording else None
        for task in self.tasks:
            if task.name == name:
                return task
        return self.tasks[self.task_index]

    def command_for(self, action: str, args: dict, view_t_ns: int) -> tuple[str, dict] | None:
        """The control command for a tap (None: handled in the panel), or Refused. ``view_t_ns`` is the
        newest view's ``t_eval_ns`` (the recorder's clock), the instant a subtask mark means."""
        if action not in ACTIONS:
            raise Refused(f"unknown action {action!r}; the panel knows {', '.join(ACTIONS)}")
        if not isinstance(args, dict):
            raise Refused(f"{action}: args must be an object")
        if action == "start":
            if self.recording or self.take_state == "stopping":
                raise Refused("a take is already recording (or still saving)")
            self.take_state = "starting"
            task = self.tasks[self.task_index]
            return "start", {"name": self.info["name"], "task": task.name, "instruction": self.info["instruction"],
                             "operator": self.info["operator"]}
        if action in ("stop", "abort", "discard"):
            if not self.recording:
                raise Refused("no take is recording")
            if action == "discard" and args.get("confirmed") is not True:
                raise Refused("discard needs a second tap to confirm")
            self.take_state = "stopping"
            return ("discard", {}) if action == "discard" else ("stop", {"outcome": "saved" if action == "stop" else "aborted"})
        if action == "subtask":
            subtasks = self.task().subtasks
            index = args.get("index")
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(subtasks):
                raise Refused(f"subtask: index must be 0..{len(subtasks) - 1} for task {self.task().name!r}")
            if not self.recording:
                raise Refused("subtasks are marked during a take")
            if view_t_ns <= 0:
                raise Refused("no view from the recorder yet: the mark would have no time")
            template = subtasks[index]
            return "mark_start", {"label": template.label, "description": template.description,
                                  "hand": template.hand, "t_ns": int(view_t_ns)}
        if action == "end_subtask":
            if not self.recording or not self.current:
                raise Refused("no subtask is open")
            return "mark_end", {"t_ns": int(view_t_ns)}
        if action == "undo":
            if not self.recording:
                raise Refused("no take is recording")
            return "undo", {}
        if self.take_state != "idle":
            raise Refused(f"{action.replace('_', ' ')}: not during a take")
        if action == "next_task":
            self.task_index = (self.task_index + 1) % len(self.tasks)
            self.info["instruction"] = self.tasks[self.task_index].instruction
            self.say(f"task {self.tasks[self.task_index].name}")
            return None
        self.set_info(args)  # set_info
        return None

    def set_info(self, args: dict) -> None:
        """The next take's name, operator and instruction, checked as the control channel checks them."""
        unknown = set(args) - {"name", "operator", "instruction"}
        if unknown:
            raise Refused(f"take info: unknown field(s) {sorted(unknown)}; use name, operator, instruction")
        try:
            info = {"name": checked_text("name", args.get("name", ""), limit=MAX_NAME_CHARS).strip(),
                    "operator": checked_text("operator", args.get("operator", ""), limit=MAX_NAME_CHARS).strip(),
                    "instruction": checked_text("instruction", args.get("instruction", ""), limit=MAX_TEXT_CHARS).strip()}
        except ValueError as exc:
            raise Refused(f"take info: {exc}") from None
        if info["name"] and not NAME_PATTERN.fullmatch(info["name"]):
            raise Refused(f"take info: episode name {info['name']!r}: use letters, digits, '-', '_' and '.', "
                          f"starting with a letter or digit (or leave it empty for date-time_task)")
        self.info = info
        self.say("take info saved for the next take")

    def say(self, text: str, error: bool = False) -> None:
        self.message, self.message_error = text, error

    # --- the recorder's answers -----------------------------------------------------------------
    def on_reply(self, cmd: str, ok: bool, result: dict, error: str) -> None:
        """A control command's acknowledgement (ok only once durable in the file)."""
        self.reply_t_ns = max(self.reply_t_ns, int(result.get("t_ns", 0) or 0))
        if not ok:
            self.say(f"{cmd}: {error}", error=True)
            if cmd == "start":
                self.take_state = "idle"
            return
        if cmd == "start":
            self.take_state = "recording"
            self.segments, self.current, self.episode = [], "", dict(result)
            self.say(f"recording {result.get('name', '')}")
        elif cmd in ("stop", "discard"):
            self.take_state = "idle" if self.take_state == "stopping" else self.take_state
            self.segments, self.current, self.episode = [], "", {}
            self.info["name"] = ""  # a name is for one take
            outcome = result.get("outcome", "")
            self.takes.appendleft({"name": result.get("name", ""), "outcome": outcome, "verdict":
                                   "no file kept" if outcome == "discarded" else "checking quality...", "reasons": []})
            self.say(f"{outcome} {result.get('name', '')}")
        elif cmd in ("mark_start", "mark_end", "undo"):
            self.segments, self.current = list(result.get("segments", [])), str(result.get("current", ""))
            self.say(f"{cmd.replace('_', ' ')}: saved in the file (current subtask: {self.current or 'none'})")

    def adopt_status(self, status: dict, pending: int) -> None:
        """The recorder's word, once no command of ours is in flight and the status is newer than our last reply.
        The session's finished takes come from ``takes.history`` when the recorder sends it (docs/control.md), so
        every panel and monitor lists the same takes, also one started after them."""
        takes = status.get("takes") or {}
        history = takes.get("history")
        if isinstance(history, list) and int(status.get("t_ns", 0) or 0) > self.reply_t_ns:  # not older than a reply
            self.takes = deque((self._take_entry(t) for t in reversed(history[-MAX_TAKES_LISTED:])),
                               maxlen=MAX_TAKES_LISTED)
        if not self.info["operator"] and takes.get("operator") and isinstance(takes["operator"], str):
            self.info["operator"] = takes["operator"]
        if pending == 0 and int(status.get("t_ns", 0) or 0) > self.reply_t_ns:
            self.take_state = "recording" if takes.get("recording") else "idle"
            if takes.get("recording"):
                self.segments, self.current = list(takes.get("segments", [])), str(takes.get("current", ""))
                self.episode = dict(takes.get("episode") or {})
            else:
                self.segments, self.current, self.episode = [], "", {}

    @staticmethod
    def _take_entry(take: dict) -> dict:
        """A finished take as the page lists it: name, outcome, verdict, at most 10 reasons."""
        outcome = str(take.get("outcome", ""))
        if outcome == "discarded":
            headline, reasons = "no file kept", []
        elif take.get("checking"):
            headline, reasons = "checking quality...", []
        else:
            headline, reasons = quality_summary(take.get("report"))
        return {"name": str(take.get("name", "")), "outcome": outcome, "verdict": headline, "reasons": reasons[:10]}

    def on_take(self, take: dict) -> None:
        """A finished take's quality report arrived: its verdict replaces "checking quality..."."""
        entry = self._take_entry(take)
        for i, existing in enumerate(self.takes):
            if existing["name"] == entry["name"]:
                self.takes[i] = entry
                return
        self.takes.appendleft(entry)  # a take started elsewhere (another panel, a Qt monitor)

    # --- the page's state ----------------------------------------------------------------------
    def snapshot(self, status: dict, pending: int, status_age_s: float = 0.0) -> dict:
        """Everything the page shows, JSON-ready (sizes bounded: a fixed set of streams, at most
        MAX_TAKES_LISTED takes, each with at most 10 reasons). ``status_age_s``: seconds since the
        recorder's last status reached the panel; past SILENT_S the bar says the recorder is silent."""
        takes = status.get("takes") or {}
        banner = bar(status)
        if status_age_s > SILENT_S:
            banner = {"level": "lost", "colour": "#c62828", "text": f"no word from the recorder for "
                      f"{status_age_s:.0f} s: is it running? (what is shown is from before)"}
        task = self.task()
        return {
            "type": "state", "take_state": self.take_state, "recording": self.recording,
            "elapsed_s": float(takes.get("elapsed_s") or 0.0) if self.recording else 0.0,
            "take_count": int(takes.get("take_count") or 0),
            "task": task.name, "instruction": self.episode.get("instruction") if self.recording else self.info["instruction"],
            "subtasks": [s.label for s in task.subtasks], "current": self.current,
            "marks": len(self.segments), "episode": str(self.episode.get("name", "")),
            "info": dict(self.info), "free_disk_gb": float(takes.get("free_disk_mb") or 0.0) / 1000,
            "minutes_left": takes.get("minutes_left"), "file_mb": float(takes.get("file_mb") or 0.0),
            "banner": banner, "streams": stream_rows(status),
            "takes": list(self.takes), "last_take": self.takes[0] if self.takes else None,
            "message": self.message, "message_error": self.message_error, "pending": pending,
            "handsfree_missing": [str(m) for m in ((status.get("handsfree") or {}).get("missing") or [])][:4],
        }
