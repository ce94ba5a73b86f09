"""The main window: a client of the recorder process (docs/control.md).

Live views, stream and loss health, take control, subtask hotkeys and review. The window
owns no session: it draws the recorder's ``view`` and ``status`` feed (read by a QTimer
from ``RecorderClient``, whose threads never touch a widget) and sends commands whose
replies come back as a Qt signal. Killing the window never affects a take.

Keyboard first (operators wear gloves): every action has a key, text fields are edited in a
dialog (E) so no field ever swallows a hotkey, a refused key says why, and discarding needs
a second X.

This module lays the window out and runs its timer; ``take_control`` (takes and subtasks),
``review_mode`` (review), ``control_panel`` (the right-hand panel) and ``summaries`` (the words) do the
rest. The top bar and the stream table judge by the same rules, ``capture_app.core.live_verdict``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from capture_app.core.live_verdict import LEVEL_COLOURS, bar_verdict
from capture_app.core.streams import SYNCED_STREAMS
from capture_app.monitor.control_panel import SHORTCUTS, InfoDialog, build_control_panel
from capture_app.monitor.cues import Cues
from capture_app.monitor.overlay import ViewState
from capture_app.monitor.review_mode import ReviewMode
from capture_app.monitor.summaries import (calibration_readout, check_prompt_line, handsfree_line, losses_of,
                                           not_delivering, quality_summary, take_losses)
from capture_app.monitor.take_control import SPACE_GUARD_S, TakeControl
from capture_app.monitor.views import EgoView, HandView, HealthTable, Timeline, TopView, WorldView
from capture_app.rig.tasks import TaskTemplate

__all__ = ["MainWindow", "SHORTCUTS", "SPACE_GUARD_S", "calibration_readout", "losses_of", "not_delivering",
           "quality_summary", "take_losses"]

log = logging.getLogger(__name__)

REFRESH_MS = 30
LIVE_TIMELINE_S = 60.0  # the live timeline shows the last minute of subtasks (review shows the whole take)
HEALTH_EVERY = 6  # refreshes: health, banner and REC panel 5 times a second
CONFIRM_S = 3.0   # a second X (discard) or Space (drop review edits) within this confirms


class _Signals(QtCore.QObject):
    """Replies from the command thread, delivered on the GUI thread."""

    replied = QtCore.Signal(str, bool, object, str)  # command, ok, result, error


class MainWindow(TakeControl, ReviewMode, QtWidgets.QMainWindow):
    LIVE_TIMELINE_S = LIVE_TIMELINE_S

    def __init__(self, client, tasks: list[TaskTemplate], out_dir: str | Path, operator: str = "",
                 calibration=None, cues: Cues | None = None):
        super().__init__()
        self.client = client
        self.tasks = tasks
        self.task_index = 0
        self.out_dir = Path(out_dir)
        self.cues = cues or Cues(enabled=False)
        self.review = None               # EpisodeReview in review mode
        self.edits = None                # its SegmentEdits
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
        self.recording_name = ""         # the name of the take recording now ("" when none)
        self.bar_level = ""              # the top bar's live verdict: ok | degraded | lost
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
        self._rig = client.hello['status'].get('rig', '')
        self.setWindowTitle(f"capture-app: {self._rig}")
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
        grid.addWidget(build_control_panel(self), 1, 3, 5, 1)
        for col, stretch in enumerate((3, 3, 3, 2)):
            grid.setColumnStretch(col, stretch)
        for row, stretch in ((1, 3), (2, 3), (3, 2)):
            grid.setRowStretch(row, stretch)
        self.status = self.statusBar()
        self.resize(1600, 1000)

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
            episode = takes.get("episode") or {}
            self.recording_name = episode.get("name", "") if takes.get("recording") else ""
            if takes.get("recording"):
                self.segments, self.current_label = takes.get("segments", []), takes.get("current", "")
                self._take_t0_ns = int(episode.get("t_start_ns", 0) or 0)
        if initial:
            self._adopt_history(takes)
        if self.review is None:
            self.health.update_from_status(status)
        self._update_banner(status)
        check = check_prompt_line(status)  # capture-app check's prompts, while it runs on this recorder
        check = check or handsfree_line(status)  # else a hands-free input not working (pedal unplugged)
        if check is not None and check != self.status.currentMessage():
            self.status.showMessage(check)
        self._update_rec(takes)
        self._update_title()

    def _update_banner(self, status: dict) -> None:
        """The top bar: the live verdict of ``capture_app.core.live_verdict`` (the stream table's rules):
        green all is well now, amber degraded or lost in the last seconds, red act now. Its tooltip lists
        everything lost so far (the take's and the recorder's totals)."""
        level, full = bar_verdict(status)
        text = full if self._fits_bar(full) else bar_verdict(status, short=True)[1]
        self.bar_level = level
        if self.warning.text() != text or self.warning.property("level") != level:
            self.warning.setText(text)
            self.warning.setProperty("level", level)
            fg = "black" if level == "degraded" else "white"
            self.warning.setStyleSheet(f"background:{LEVEL_COLOURS[level]}; color:{fg}; padding:4px"
                                       + ("; font-weight:bold" if level != "ok" else ""))
        totals = "; ".join(losses_of(status))
        tip = (full + "\n\n" if text != full else "") + (f"so far: {totals}" if totals else "nothing lost so far")
        if self.warning.toolTip() != tip:
            self.warning.setToolTip(tip)

    def _fits_bar(self, text: str) -> bool:
        """Whether ``text`` fits the top bar's fixed two lines (else its short form is shown)."""
        width = max(200, self.warning.width() - 10)
        font = QtGui.QFont(self.warning.font())
        font.setBold(True)  # as drawn when not ok
        rect = QtGui.QFontMetrics(font).boundingRect(QtCore.QRect(0, 0, width, 10_000),
                                                     int(QtCore.Qt.TextWordWrap), text)
        return rect.height() <= self.warning.height() - 8

    def _update_title(self) -> None:
        title = f"capture-app: {self._rig}" + (f" — recording {self.recording_name}" if self.recording_name else "")
        if self.windowTitle() != title:
            self.setWindowTitle(title)

    def _update_rec(self, takes: dict) -> None:
        task = self.tasks[self.task_index].name
        free = takes.get("free_disk_mb", 0) / 1000
        if self.take_state in ("recording", "starting") and takes.get("recording"):
            elapsed = takes.get("elapsed_s", 0.0)
            self.rec.setText(f"● REC {int(elapsed) // 60:02d}:{elapsed % 60:04.1f}")
            self.rec.setStyleSheet("font-size:34px; font-weight:bold; color:white; background:#c62828")
            left = takes.get("minutes_left")
            episode = takes.get("episode") or {}
            self.rec_details.setText(
                f"recording <b>{episode.get('name') or self.recording_name or '?'}</b><br>"
                f"operator {episode.get('operator') or '-'}; task {episode.get('task', task)}, subtask "
                f"<b>{self.current_label or '-'}</b>; take {takes.get('take_count', 0) + 1}; "
                f"{takes.get('file_mb', 0):.0f} MB; disk {free:.1f} GB free"
                + (f", ~{left:.0f} min left" if left is not None else ""))
        else:
            word = {"stopping": "saving...", "starting": "starting..."}.get(self.take_state, "not recording")
            self.rec.setText(word)
            self.rec.setStyleSheet("font-size:28px; font-weight:bold; color:#424242; background:#e0e0e0")
            self.rec_details.setText(f"task {task}; takes {takes.get('take_count', 0)}; disk {free:.1f} GB free")
        self.current_subtask.setText(self.current_label or "-")
        if self.review is None and self.take_state == "recording" and self._take_t0_ns:
            from capture_app.episode.annotations import Segment
            self.timeline.show_segments([Segment(**s) for s in self.segments], self._take_t0_ns,
                                        self._display_time() or self._take_t0_ns, window_s=LIVE_TIMELINE_S)

    def closeEvent(self, event) -> None:
        self.timer.stop()
        if self.review is not None:
            self.review.close()
        super().closeEvent(event)
