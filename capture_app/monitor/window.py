"""The main window: a client of the recorder process (docs/control.md).

Live views, stream and loss health, take control, subtask hotkeys and review. The window
owns no session: it draws the recorder's ``view`` and ``status`` feed (read by a QTimer
from ``RecorderClient``, whose threads never touch a widget) and sends commands whose
replies come back as a Qt signal. Killing the window never affects a take.

Keyboard first (operators wear gloves): every action has a key, text fields are edited in a
dialog (E) so no field ever swallows a hotkey, a refused key says why, and discarding needs
a second X.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from capture_app.monitor.cues import Cues
from capture_app.monitor.overlay import ViewState
from capture_app.monitor.review import EpisodeReview
from capture_app.monitor.views import (EgoView, HandView, HealthTable, Timeline, TopView, WorldView,
                                       drivers_by_stream)
from capture_app.episode.segment_edits import SegmentEdits
from capture_app.core.streams import SYNCED_STREAMS
from capture_app.rig.tasks import TaskTemplate

log = logging.getLogger(__name__)

REFRESH_MS = 30
LIVE_TIMELINE_S = 60.0  # the live timeline shows the last minute of subtasks (review shows the whole take)
HEALTH_EVERY = 6  # refreshes: health, banner and REC panel 5 times a second
LOST_WARNING_S = 0.5
CONFIRM_S = 3.0   # a second X (discard) or Space (drop review edits) within this confirms

SHORTCUTS = [
    ("Space", "start recording / stop and save"),
    ("Esc", "abort: stop now, keep the file marked aborted"),
    ("X X", "discard the current take (press twice; no file is left)"),
    ("1-9", "start subtask N (live, or at the playhead in review)"),
    ("0", "end the current subtask (review: the one under the playhead)"),
    ("Backspace", "undo the last subtask mark or edit"),
    ("T", "next task template"),
    ("E", "edit episode name, operator and instruction"),
    ("D", "top camera: colour / depth"),
    ("B", "calibration board detection on the ego view (on / off)"),
    ("O", "open an episode for review"),
    ("L", "back to live"),
    ("Left / Right", "review: previous / next tick (PgUp / PgDn: 1 s)"),
    ("Delete", "review: delete the selected subtask"),
    ("S", "review: split the selected subtask at the playhead"),
    ("Ctrl+S", "review: save the edited subtasks"),
]


def calibration_readout(calibration) -> str:
    """The calibration check line under the ego view: which calibration, and how good it was."""
    text = f"calibration {calibration.calibration_id}"
    head = calibration.residuals.get("head_camera") if isinstance(calibration.residuals, dict) else None
    if head:
        text += (f": head camera reprojection {head['reprojection_rms_px']} px, consistency "
                 f"{head['translation_consistency_mm']} mm / {head['rotation_consistency_deg']} deg")
    return text + ". Magenta fingertips and wrist axes must sit on the hands."


def quality_summary(report: dict | None) -> str:
    """One line for the operator: the take's verdict and, for a redo, the first reason."""
    if report is None:
        return "quality not computed (see the recorder's log)"
    if report["verdict"] == "ok":
        hands = report.get("hands", {})
        return "quality OK " + " ".join(f"{h} {v['valid']:.0%}" for h, v in hands.items())
    return f"REDO: {report['problems'][0]}" + (f" (+{len(report['problems']) - 1} more)" if len(report["problems"]) > 1 else "")


def take_losses(report: dict | None) -> str:
    """The end-of-take summary of what was lost: per stream gaps, writer refusals, rejections, and the
    invalid share of each hand's rows ("nothing lost" when all are zero)."""
    if not report:
        return ""
    parts = []
    for stream, st in sorted(report.get("streams", {}).items()):
        lost = {k: st.get(k, 0) for k in ("seq_gaps", "writer_overflow", "rejected", "tracking_lost")}
        if any(lost.values()):
            parts.append(f"{stream} " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in lost.items() if v))
    for hand, h in sorted(report.get("hands", {}).items()):
        if h.get("valid", 1.0) < 1.0:
            parts.append(f"{hand} hand invalid {1 - h['valid']:.1%} of rows")
    return "; ".join(parts) or "nothing lost"


def losses_of(status: dict) -> list[str]:
    """Everything lost or refused in the take so far, one phrase each (empty when nothing is)."""
    out = []
    writer = status.get("writer") or {}
    refused = {s: n for s, n in (writer.get("refused") or {}).items() if n}
    if refused:
        out.append("writer refused " + ", ".join(f"{s} {n}" for s, n in refused.items()))
    if writer.get("error"):
        out.append(f"writer failed: {writer['error']}")
    for key, what in (("items_refused", "writer could not store"), ("values_repaired", "values made storable")):
        if writer.get(key):
            out.append(f"{what} {writer[key]}")
    undecodable = {s: n for s, n in (writer.get("video_undecodable") or {}).items() if n}
    if undecodable:
        out.append("video frames undecodable after a loss " + ", ".join(f"{s} {n}" for s, n in undecodable.items()))
    rejected = {s: sum(r.values()) for s, r in (status.get("rejected") or {}).items() if r}
    if rejected:
        out.append("rejected " + ", ".join(f"{s} {n}" for s, n in rejected.items()))
    losses = status.get("losses") or {}
    invalid = {k: n for k, n in (losses.get("invalid_rows") or {}).items() if n}
    if invalid and (status.get("takes") or {}).get("recording"):
        out.append("invalid rows " + ", ".join(f"{k} {n}" for k, n in invalid.items()))
    for key in ("bus_malformed", "non_finite", "unsynchronised", "control_refused", "status_refused", "bad_status"):
        if losses.get(key):
            out.append(f"{key.replace('_', ' ')} {losses[key]}")
    changes = {s: n for s, n in (losses.get("sender_changes") or {}).items() if n}
    if changes:  # a stream's publisher changed (protocol.md, Trust model)
        out.append("sender changed " + ", ".join(f"{s} {n}x" for s, n in changes.items()))
    drift = status.get("drift") or {}  # the recorder's live drift watch (docs/control.md)
    for body, mount in sorted((drift.get("mounts") or {}).items()):
        if mount.get("unresolved"):
            what = "ego camera mount" if body == "head" else f"{body} wrist tracker"
            out.append(f"{what} slipped {mount.get('net_deg', 0):.1f} deg: re-seat it and recalibrate")
    latency = [a for a in drift.get("alarms") or [] if a.get("kind") == "latency"]
    if latency:
        out.append(latency[-1]["text"])
    return out


def not_delivering(status: dict) -> dict[str, str]:
    """Streams that deliver nothing now (waiting or lost), with the best reason known: their driver's
    last error, else the stream's own reason."""
    driver_for = drivers_by_stream(status)
    out = {}
    for stream, st in (status.get("streams") or {}).items():
        if st["state"] in ("waiting", "lost") and stream != "ground_truth":
            driver = driver_for.get(stream)
            out[stream] = (driver or {}).get("last_error") or st["reason"]
    return out


class _Signals(QtCore.QObject):
    """Replies from the command thread, delivered on the GUI thread."""

    replied = QtCore.Signal(str, bool, object, str)  # command, ok, result, error


class InfoDialog(QtWidgets.QDialog):
    """Edit the next take's name, operator and instruction (Enter saves, Esc cancels)."""

    def __init__(self, parent, name: str, operator: str, instruction: str):
        super().__init__(parent)
        self.setWindowTitle("take info")
        form = QtWidgets.QFormLayout(self)
        self.name, self.operator, self.instruction = (QtWidgets.QLineEdit(v) for v in (name, operator, instruction))
        self.name.setPlaceholderText("(date-time_task)")
        for label, field in (("episode", self.name), ("operator", self.operator), ("instruction", self.instruction)):
            form.addRow(label, field)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Ok | QtWidgets.QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, client, tasks: list[TaskTemplate], out_dir: str | Path, operator: str = "",
                 calibration=None, cues: Cues | None = None):
        super().__init__()
        self.client = client
        self.tasks = tasks
        self.task_index = 0
        self.out_dir = Path(out_dir)
        self.cues = cues or Cues(enabled=False)
        self.review: EpisodeReview | None = None
        self.edits: SegmentEdits | None = None
        self.saved_episodes: list[str] = []
        self.last_error = ""
        self.last_refusal = ""
        self.take_state = "idle"         # idle | starting | recording | stopping
        self.segments: list[dict] = []   # this take's marks, as the recorder stored them
        self.current_label = ""
        self._episode_name = ""
        self._operator = operator
        self._instruction = ""
        self._confirm: tuple[str, float] | None = None
        self.board_detector = None  # B: live board detection
        self._reply_t_ns = 0  # recorder time of the newest reply: older status messages do not override it
        self._lost_since: dict[str, float] = {}
        self._last_view_t = 0
        self._refreshes = 0
        self._shown_views = 0
        self._takes_seen = 0
        self.timer_durations_ms: list[float] = []
        self._signals = _Signals()
        self._signals.replied.connect(self._on_reply)
        if calibration is None:
            from calibration.model import calibration_from_json
            calibration = calibration_from_json(client.hello["calibration"], f"recorder {client.control_endpoint}")
        self.setWindowTitle(f"capture-app: {client.hello['status'].get('rig', '')}")
        self._build(calibration)
        self._bind_keys()
        self._select_task(0)
        self._adopt_status(client.status or {}, initial=True)  # attaching mid-take shows that take
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(REFRESH_MS)

    # --- layout -------------------------------------------------------------------
    def _build(self, calibration) -> None:
        central = QtWidgets.QWidget()
        self.setCentralWidget(central)
        grid = QtWidgets.QGridLayout(central)
        # The banner always takes its line: green when all is well, red with what is lost; never shifts the layout.
        self.warning = QtWidgets.QLabel("")
        self.warning.setWordWrap(True)
        self.warning.setFixedHeight(40)
        grid.addWidget(self.warning, 0, 0, 1, 4)
        self.ego = EgoView(calibration.ego_intrinsics)
        self.calibration_label = QtWidgets.QLabel(calibration_readout(calibration))
        self.calibration_label.setWordWrap(True)
        self.top = TopView()
        self.world = WorldView()
        self.hands = {h: HandView(h) for h in ("left", "right")}
        ego_box = QtWidgets.QWidget()
        ego_layout = QtWidgets.QVBoxLayout(ego_box)
        ego_layout.setContentsMargins(0, 0, 0, 0)
        ego_layout.addWidget(self.ego, 1)
        ego_layout.addWidget(self.calibration_label)
        grid.addWidget(ego_box, 1, 0, 2, 2)
        grid.addWidget(self.top, 1, 2)
        grid.addWidget(self.world, 2, 2)
        grid.addWidget(self.hands["left"], 3, 0)
        grid.addWidget(self.hands["right"], 3, 1)
        self.health = HealthTable(list(SYNCED_STREAMS))
        grid.addWidget(self.health, 4, 0, 1, 3)
        self.timeline = Timeline(on_seek=self.seek_review)
        grid.addWidget(self.timeline, 5, 0, 1, 3)
        grid.addWidget(self._control_panel(), 1, 3, 5, 1)
        for col, stretch in enumerate((3, 3, 3, 2)):
            grid.setColumnStretch(col, stretch)
        for row, stretch in ((1, 3), (2, 3), (3, 2)):
            grid.setRowStretch(row, stretch)
        self.status = self.statusBar()
        self.resize(1600, 1000)

    def _control_panel(self) -> QtWidgets.QWidget:
        panel = QtWidgets.QWidget()
        panel.setMinimumWidth(300)
        form = QtWidgets.QFormLayout(panel)
        self.rec = QtWidgets.QLabel("not recording")  # the big REC indicator
        self.rec.setAlignment(QtCore.Qt.AlignCenter)
        self.rec.setMinimumHeight(70)
        form.addRow(self.rec)
        self.rec_details = QtWidgets.QLabel("")
        self.rec_details.setWordWrap(True)
        form.addRow(self.rec_details)
        self.task_box = QtWidgets.QComboBox()
        self.task_box.addItems([t.name for t in self.tasks])
        self.task_box.setFocusPolicy(QtCore.Qt.NoFocus)
        self.task_box.currentIndexChanged.connect(self._select_task)
        form.addRow("task", self.task_box)
        self.info = QtWidgets.QLabel("")
        self.info.setWordWrap(True)
        form.addRow("take (E)", self.info)
        self.subtask_list = QtWidgets.QLabel()
        self.subtask_list.setWordWrap(True)
        form.addRow("subtasks", self.subtask_list)
        self.current_subtask = QtWidgets.QLabel("-")
        self.current_subtask.setStyleSheet("font-size:18px; font-weight:bold")
        form.addRow("current", self.current_subtask)
        buttons = QtWidgets.QGridLayout()
        for i, (text, slot) in enumerate((("Start / stop (Space)", self.toggle_recording), ("Abort (Esc)", self.abort),
                                           ("Discard (X X)", self.discard), ("Edit info (E)", self.edit_info))):
            button = QtWidgets.QPushButton(text)
            button.setFocusPolicy(QtCore.Qt.NoFocus)
            button.clicked.connect(slot)
            buttons.addWidget(button, i // 2, i % 2)
        form.addRow(buttons)
        self.session_list = QtWidgets.QListWidget()
        self.session_list.setFocusPolicy(QtCore.Qt.NoFocus)
        self.session_list.setMaximumHeight(120)
        form.addRow("takes", self.session_list)
        self.review_time = QtWidgets.QLabel("")
        self.review_time.setVisible(False)
        form.addRow(self.review_time)
        self.review_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.review_slider.setFocusPolicy(QtCore.Qt.NoFocus)
        self.review_slider.setVisible(False)
        self.review_slider.valueChanged.connect(self._show_review_tick)
        form.addRow(self.review_slider)
        self.segment_table = QtWidgets.QTableWidget(0, 4)
        self.segment_table.setHorizontalHeaderLabels(["label", "description", "start s", "end s"])
        self.segment_table.horizontalHeader().setStretchLastSection(True)
        self.segment_table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.segment_table.setVisible(False)
        self.segment_table.cellChanged.connect(self._cell_edited)
        form.addRow(self.segment_table)
        keys = QtWidgets.QLabel("<br>".join(f"<b>{k}</b>: {v}" for k, v in SHORTCUTS))
        keys.setWordWrap(True)
        form.addRow("keys", keys)
        return panel

    def _bind_keys(self) -> None:
        bindings = [("Space", self.toggle_recording), ("Escape", self.abort), ("X", self.discard),
                    ("0", self.end_subtask), ("Backspace", self.undo_mark), ("T", self.next_task),
                    ("E", self.edit_info), ("D", self.top.toggle_depth), ("B", self.toggle_board), ("O", self.open_review_dialog),
                    ("L", self.back_to_live), ("Left", lambda: self.step_review(-1)),
                    ("Right", lambda: self.step_review(1)), ("PgUp", lambda: self.step_review(-20)),
                    ("PgDown", lambda: self.step_review(20)), ("Delete", self.delete_segment),
                    ("S", self.split_segment), ("Ctrl+Z", self.undo_mark), ("Ctrl+S", self.save_review)]
        bindings += [(str(n), (lambda n=n: self.start_subtask(n))) for n in range(1, 10)]
        self._shortcuts = []
        for key, slot in bindings:
            shortcut = QtGui.QShortcut(QtGui.QKeySequence(key), self)
            shortcut.activated.connect(slot)
            self._shortcuts.append(shortcut)

    # --- feedback -------------------------------------------------------------------------
    def refuse(self, text: str) -> None:
        """A key that cannot act now: say why, and beep."""
        self.last_refusal = text
        self.status.showMessage(f"not now: {text}", 5000)
        QtWidgets.QApplication.beep()

    def _show_error(self, text: str) -> None:
        self.last_error = text
        log.error("%s", text)
        self.status.showMessage(f"error: {text}")
        self.cues.say("error")

    def _confirmed(self, key: str, prompt: str) -> bool:
        """True on the second press of ``key`` within CONFIRM_S; the first one shows ``prompt``."""
        now = time.monotonic()
        if self._confirm and self._confirm[0] == key and now - self._confirm[1] <= CONFIRM_S:
            self._confirm = None
            return True
        self._confirm = (key, now)
        self.status.showMessage(prompt, int(CONFIRM_S * 1000))
        QtWidgets.QApplication.beep()
        return False

    # --- tasks and take info ---------------------------------------------------------------------
    def _select_task(self, index: int) -> None:
        if self.take_state != "idle" and index != self.task_index:
            self.task_box.setCurrentIndex(self.task_index)
            self.refuse("the task cannot change during a take")
            return
        self.task_index = index
        task = self.tasks[index]
        if self.task_box.currentIndex() != index:
            self.task_box.setCurrentIndex(index)
        self._instruction = task.instruction
        self.subtask_list.setText("  ".join(f"{i + 1} {s.label}" for i, s in enumerate(task.subtasks)))
        self._show_info()

    def _show_info(self) -> None:
        self.info.setText(f"name: {self._episode_name or '(date-time_task)'}<br>operator: {self._operator or '-'}"
                          f"<br>instruction: {self._instruction}")

    def next_task(self) -> None:
        if self.take_state != "idle":
            self.refuse("T: the task cannot change during a take")
            return
        self._select_task((self.task_index + 1) % len(self.tasks))

    def edit_info(self) -> None:
        if self.take_state != "idle":
            self.refuse("E: take info cannot change during a take")
            return
        dialog = InfoDialog(self, self._episode_name, self._operator, self._instruction)
        if dialog.exec() == QtWidgets.QDialog.Accepted:
            self._episode_name = dialog.name.text().strip()
            self._operator = dialog.operator.text().strip()
            self._instruction = dialog.instruction.text().strip()
            self._show_info()

    # --- takes ---------------------------------------------------------------------------
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
            self.status.showMessage(f"recording {result['path']}")
        elif cmd in ("stop", "discard"):
            self.take_state = "idle" if self.take_state == "stopping" else self.take_state
            self.segments, self.current_label = [], ""
            self._episode_name = ""
            self._show_info()
            self._add_take(result)
        elif cmd in ("mark_start", "mark_end", "undo"):
            self.segments, self.current_label = result["segments"], result["current"]
            self.status.showMessage(f"{cmd.replace('_', ' ')}: saved in the file "
                                    f"(current subtask: {self.current_label or 'none'})", 3000)

    def _add_take(self, take: dict) -> None:
        outcome = take["outcome"]
        if outcome == "discarded":
            self.session_list.addItem(f"{take['name']}  [discarded]")
            self.status.showMessage("take discarded: no file kept")
            return
        self.saved_episodes.append(take["path"])
        self.session_list.addItem(f"{Path(take['path']).name}  [{outcome}; checking quality...]")
        self.status.showMessage(f"{outcome} {take['path']}")

    def _take_checked(self, take: dict) -> None:
        """The recorder computed a finished take's final table and quality: update its line."""
        name = Path(take["path"]).name
        verdict = quality_summary(take.get("report"))
        losses = take_losses(take.get("report"))
        for row in range(self.session_list.count()):
            item = self.session_list.item(row)
            if item.text().startswith(name + "  ["):
                item.setText(f"{name}  [{take['outcome']}; {verdict}]")
                item.setToolTip(losses)
        self.status.showMessage(f"{take['outcome']} {take['path']}: {verdict}; {losses}")
        if take.get("report") and take["report"]["verdict"] != "ok":
            self.cues.say("redo")

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

    # --- the timer ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Draw the newest view (images 20 Hz, plots 10 Hz) and, 5 times a second, status and takes."""
        started = time.perf_counter()
        self._refreshes += 1
        if self.review is None:
            state = self.client.view_state
            if state is not None and state.t_ns != self._last_view_t:
                self._last_view_t = state.t_ns
                self._shown_views += 1
                self.show_state(state, plots=self._shown_views % 2 == 0)
        if self._refreshes % HEALTH_EVERY == 0:
            while len(self.client.takes_finished) > self._takes_seen:
                self._take_checked(self.client.takes_finished[self._takes_seen])
                self._takes_seen += 1
            if self.client.status is not None:
                self._adopt_status(self.client.status)
        self.timer_durations_ms.append((time.perf_counter() - started) * 1000)
        del self.timer_durations_ms[:-10_000]

    def toggle_board(self) -> None:
        """Show where the calibration board's corners are detected in the ego image, and its distance."""
        if self.board_detector is None:
            from calibration.board import BoardConfig, BoardDetector
            self.board_detector = BoardDetector(BoardConfig())
            self._board_checked = 0.0
        else:
            self.board_detector = None
            self.ego.show_board(None, "")

    def _detect_board(self, state: ViewState) -> None:
        """At most 5 times a second (detection costs ~10 ms on a 720p image, on this GUI thread)."""
        now = time.monotonic()
        if state.ego_image is None or now - self._board_checked < 0.2:
            return
        self._board_checked = now
        from capture_app.monitor.overlay import intrinsics_for
        view = self.board_detector.detect(state.ego_image, intrinsics_for(self.ego.intrinsics, state.ego_image))
        if view is None:
            self.ego.show_board(None, "board: not seen (need 8 corners)")
        else:
            distance = float(np.linalg.norm(view.T_cam_board[:3, 3]))
            self.ego.show_board(view.image_points, f"board: {len(view.image_points)} corners, {distance:.2f} m, "
                                                   f"reprojection {view.reprojection_px:.2f} px")

    def show_state(self, state: ViewState, plots: bool = True) -> None:
        if self.board_detector is not None:
            self._detect_board(state)
        self.ego.update_state(state)
        self.top.update_state(state)
        if plots:
            self.world.update_state(state)
            for view in self.hands.values():
                view.update_state(state)

    def _adopt_status(self, status: dict, initial: bool = False) -> None:
        takes = status.get("takes") or {}
        if self.client.pending == 0 and status.get("t_ns", 0) > self._reply_t_ns:
            # no command in flight and news from after the last reply: the recorder's word is the state
            self.take_state = "recording" if takes.get("recording") else "idle"
            if takes.get("recording"):
                self.segments, self.current_label = takes.get("segments", []), takes.get("current", "")
        if self.review is None:
            self.health.update_from_status(status)
        self._update_banner(status)
        self._update_rec(takes)

    def _update_banner(self, status: dict) -> None:
        now = time.monotonic()
        lost = []
        for stream, st in (status.get("streams") or {}).items():
            if stream == "ground_truth":
                continue
            if st["state"] in ("lost", "waiting"):
                since = self._lost_since.setdefault(stream, now)
                if now - since > LOST_WARNING_S:
                    lost.append(f"{stream}: {st['reason']}")
            else:
                self._lost_since.pop(stream, None)
        losses = losses_of(status)
        if lost or losses:
            head = "LOST while recording — " if self.recording and lost else ("LOST — " if lost else "")
            text = head + "; ".join(lost + losses)
            style = "background:#c62828; color:white; font-weight:bold; padding:4px"
        else:
            text, style = "all streams OK, nothing lost", "background:#2e7d32; color:white; padding:4px"
        if self.warning.text() != text:
            self.warning.setText(text)
            self.warning.setStyleSheet(style)

    def _update_rec(self, takes: dict) -> None:
        task = self.tasks[self.task_index].name
        free = takes.get("free_disk_mb", 0) / 1000
        if self.take_state in ("recording", "starting") and takes.get("recording"):
            elapsed = takes.get("elapsed_s", 0.0)
            self.rec.setText(f"● REC {int(elapsed) // 60:02d}:{elapsed % 60:04.1f}")
            self.rec.setStyleSheet("font-size:34px; font-weight:bold; color:white; background:#c62828")
            left = takes.get("minutes_left")
            self.rec_details.setText(
                f"task {takes.get('episode', {}).get('task', task)}, subtask <b>{self.current_label or '-'}</b>; "
                f"take {takes.get('take_count', 0) + 1}; {takes.get('file_mb', 0):.0f} MB; disk {free:.1f} GB free"
                + (f", ~{left:.0f} min left" if left is not None else ""))
        else:
            word = {"stopping": "saving...", "starting": "starting..."}.get(self.take_state, "not recording")
            self.rec.setText(word)
            self.rec.setStyleSheet("font-size:28px; font-weight:bold; color:#424242; background:#e0e0e0")
            self.rec_details.setText(f"task {task}; takes {takes.get('take_count', 0)}; disk {free:.1f} GB free")
        self.current_subtask.setText(self.current_label or "-")
        if self.review is None and self.take_state == "recording":
            t0 = takes.get("episode", {}).get("t_start_ns", 0)
            if t0:
                from capture_app.episode.annotations import Segment
                self.timeline.show_segments([Segment(**s) for s in self.segments], t0, self._display_time() or t0,
                                            window_s=LIVE_TIMELINE_S)

    # --- review ------------------------------------------------------------------------------
    def open_review_dialog(self) -> None:
        if self.recording:
            self.refuse("O: stop the take before reviewing")
            return
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open episode", str(self.out_dir), "Episodes (*.h5)")
        if path:
            self.open_review(path)

    def open_review(self, path: str | Path) -> None:
        """Show a saved episode: scrub its ticks with the same views, annotate and edit its subtasks."""
        if self.recording:
            self.refuse("stop the take before reviewing")
            return
        try:  # opened and its first tick read before the window changes: a bad file leaves it as it was
            review = EpisodeReview(path)
            try:
                review.state(0) if review.ticks else None
            except BaseException:
                review.close()
                raise
        except Exception as exc:
            self._show_error(f"cannot review {path}: {exc}")
            return
        if self.review is not None:
            self.back_to_live(force=True)
        self.review = review
        self.edits = SegmentEdits(self.review.segments, self.review.t0_ns, self.review.t_end_ns)
        self.review_slider.setRange(0, max(0, self.review.ticks - 1))
        for widget in (self.review_slider, self.segment_table, self.review_time):
            widget.setVisible(True)
        self.info.setText(f"name: {self.review.path.stem}<br>operator: {self.review.operator or '-'}<br>"
                          f"task: {self.review.task}<br>instruction: {self.review.instruction}")
        self._fill_segment_table()
        self.review_slider.setValue(0)
        self._show_review_tick(0)
        self.status.showMessage(f"reviewing {path}")

    def _review_time(self) -> int:
        return int(self.review.t_eval[self.review_slider.value()]) if self.review.ticks else self.review.t0_ns

    def _review_edit(self, edit) -> bool:
        result = edit(self.edits)
        self._fill_segment_table()
        return result is not False

    def _fill_segment_table(self) -> None:
        table, t0 = self.segment_table, self.review.t0_ns
        table.blockSignals(True)
        table.setRowCount(len(self.edits.segments))
        for row, s in enumerate(self.edits.segments):
            for col, text in enumerate((s.label, s.description, f"{(s.start_ns - t0) / 1e9:.3f}",
                                        f"{(s.end_ns - t0) / 1e9:.3f}")):
                table.setItem(row, col, QtWidgets.QTableWidgetItem(text))
        table.blockSignals(False)
        self.timeline.show_segments(self.edits.segments, t0, self.review.t_end_ns)
        self.timeline.set_playhead((self._review_time() - t0) / 1e9 if self.review.ticks else 0.0)
        problems = self.edits.problems()
        if problems:
            self.status.showMessage("cannot save yet: " + "; ".join(problems))

    def _cell_edited(self, row: int, col: int) -> None:
        if self.edits is None:
            return
        text = self.segment_table.item(row, col).text().strip()
        try:
            if col == 0:
                self.edits.set_text(row, label=text)
            elif col == 1:
                self.edits.set_text(row, description=text)
            else:
                self.edits.set_times(row, **{"start_s" if col == 2 else "end_s": float(text)})
        except ValueError:
            self._show_error(f"{text!r} is not a time in seconds")
        self._fill_segment_table()

    def _commit_open_editor(self) -> None:
        """A cell still being typed in counts: commit its text before saving."""
        editor = QtWidgets.QApplication.focusWidget()
        if isinstance(editor, QtWidgets.QLineEdit) and self.segment_table.isAncestorOf(editor):
            self.segment_table.commitData(editor)
            self.segment_table.closeEditor(editor, QtWidgets.QAbstractItemDelegate.NoHint)

    def _selected_row(self) -> int | None:
        rows = {i.row() for i in self.segment_table.selectedIndexes()}
        return min(rows) if rows else None

    def delete_segment(self) -> None:
        row = self._selected_row() if self.review is not None else None
        if row is None:
            self.refuse("Delete: select a subtask in the review table")
            return
        self._review_edit(lambda e: e.delete(row))

    def split_segment(self) -> None:
        row = self._selected_row() if self.review is not None else None
        if row is None or not self._review_edit(lambda e: e.split(row, self._review_time())):
            self.refuse("S: select a subtask and put the playhead inside it")

    def save_review(self) -> None:
        if self.review is None:
            return
        self._commit_open_editor()
        problems = self.edits.problems()
        if problems:
            self.refuse("cannot save: " + "; ".join(problems))
            return
        if not self.edits.dirty:
            self.status.showMessage("nothing to save: no subtask was edited")
            return
        self.review.save_segments(self.edits.segments, self.edits.log)
        self.edits = SegmentEdits(self.review.segments, self.review.t0_ns, self.review.t_end_ns)
        self._fill_segment_table()
        self.status.showMessage(f"saved {len(self.edits.segments)} subtasks to {self.review.path}")

    def seek_review(self, seconds: float) -> None:
        """Move the playhead to ``seconds`` since the episode start (a click on the timeline)."""
        if self.review is None or not self.review.ticks:
            return
        t = self.review.t0_ns + int(seconds * 1e9)
        self.review_slider.setValue(int(np.clip(np.searchsorted(self.review.t_eval, t), 0, self.review.ticks - 1)))

    def _show_review_tick(self, index: int) -> None:
        if self.review is None:
            return
        index = int(index)
        state = self.review.state(index)
        self.show_state(state)
        seconds = (state.t_ns - self.review.t0_ns) / 1e9
        total = (self.review.t_end_ns - self.review.t0_ns) / 1e9
        self.review_time.setText(f"t = {seconds:.2f} s of {total:.2f} s  (tick {index + 1} of {self.review.ticks})")
        self.timeline.set_playhead(seconds)
        self.health.update_from_review(self.review.stream_states(index))

    def step_review(self, delta: int) -> None:
        if self.review is not None:
            self.review_slider.setValue(int(np.clip(self.review_slider.value() + delta, 0, self.review.ticks - 1)))

    def back_to_live(self, force: bool = False) -> None:
        if self.review is None:
            return
        if not force and self.edits is not None and self.edits.dirty and not self._confirmed(
                "l", "unsaved subtask edits: Ctrl+S saves them, L again drops them"):
            return
        self.review.close()
        self.review, self.edits = None, None
        for widget in (self.review_slider, self.segment_table, self.review_time):
            widget.setVisible(False)
        self.timeline.set_playhead(None)
        self._show_info()
        self.status.showMessage("live")

    def closeEvent(self, event) -> None:
        self.timer.stop()
        if self.review is not None:
            self.review.close()
        super().closeEvent(event)
