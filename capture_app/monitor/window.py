"""The main window: live views, stream health, recording control, subtask hotkeys, review.

Threading: a QTimer on the GUI thread pulls the session's newest tick and health
snapshots (the GUI never waits on a device or on I/O). Finishing an episode (draining
and closing the file) runs on a worker thread that reports back through a Qt signal.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from capture_app.annotations import Annotator
from capture_app.clock import NS_PER_S, now_ns
from capture_app.errors import CaptureError
from capture_app.monitor.overlay import HANDS, ViewState, state_from_tick
from capture_app.monitor.review import EpisodeReview
from capture_app.monitor.views import EgoView, HandView, HealthTable, Timeline, TopView, WorldView
from capture_app.session import CaptureSession
from capture_app.streams import SYNCED_STREAMS
from capture_app.tasks import TaskTemplate

log = logging.getLogger(__name__)

REFRESH_MS = 30
HEALTH_EVERY = 6  # refreshes: health, warning and recording state 5 times a second
LOST_WARNING_S = 0.5

SHORTCUTS = [
    ("Space", "start recording / stop and save"),
    ("Esc", "abort: stop now, keep the file marked aborted"),
    ("X", "discard the current take (no file is left)"),
    ("1-9", "start subtask N of the current task"),
    ("0", "end the current subtask"),
    ("Backspace", "undo the last subtask mark"),
    ("T", "next task template"),
    ("D", "top camera: colour / depth"),
    ("O", "open an episode for review"),
    ("L", "back to live"),
    ("Left / Right", "review: previous / next tick (PgUp / PgDn: 1 s)"),
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
        return "quality not computed (see the log)"
    if report["verdict"] == "ok":
        hands = report.get("hands", {})
        return "quality OK " + " ".join(f"{h} {v['valid']:.0%}" for h, v in hands.items())
    return f"REDO: {report['problems'][0]}" + (f" (+{len(report['problems']) - 1} more)" if len(report["problems"]) > 1 else "")


class _Signals(QtCore.QObject):
    """Low-rate events from worker threads, delivered on the GUI thread."""

    episode_finished = QtCore.Signal(str, str)  # path, error text ("" when fine)


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, session: CaptureSession | None, tasks: list[TaskTemplate], out_dir: str | Path,
                 operator: str = "", calibration=None):
        super().__init__()
        self.session = session
        self.tasks = tasks
        self.task_index = 0
        self.out_dir = Path(out_dir)
        self.annotator = Annotator()
        self.review: EpisodeReview | None = None
        self.saved_episodes: list[str] = []
        self.last_error = ""
        self._finishing = False
        self._segments_shown = 0
        self._lost_since: dict[str, float] = {}
        self._last_tick_time = 0
        self._refreshes = 0
        self._shown_ticks = 0
        self.timer_durations_ms: list[float] = []
        self._signals = _Signals()
        self._signals.episode_finished.connect(self._on_episode_finished)
        calibration = calibration or session.calibration
        self.setWindowTitle("capture-app")
        self._build(calibration, operator)
        self._bind_keys()
        self._select_task(0)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(REFRESH_MS)

    # --- layout -------------------------------------------------------------------
    def _build(self, calibration, operator: str) -> None:
        central = QtWidgets.QWidget()
        self.setCentralWidget(central)
        grid = QtWidgets.QGridLayout(central)
        self.warning = QtWidgets.QLabel("")
        self.warning.setStyleSheet("background:#c62828; color:white; font-weight:bold; padding:4px")
        self.warning.setVisible(False)
        grid.addWidget(self.warning, 0, 0, 1, 3)
        self.ego = EgoView(calibration.ego_intrinsics)
        self.calibration_label = QtWidgets.QLabel(calibration_readout(calibration))
        self.calibration_label.setWordWrap(True)
        self.top = TopView()
        self.world = WorldView()
        self.hands = {h: HandView(h) for h in HANDS}
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
        self.health = HealthTable([s for s in SYNCED_STREAMS])
        grid.addWidget(self.health, 3, 2)
        self.timeline = Timeline()
        grid.addWidget(self.timeline, 4, 0, 1, 3)
        grid.addWidget(self._control_panel(operator), 1, 3, 4, 1)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 3)
        grid.setColumnStretch(2, 3)
        grid.setColumnStretch(3, 2)
        grid.setRowStretch(1, 3)
        grid.setRowStretch(2, 3)
        grid.setRowStretch(3, 2)
        self.status = self.statusBar()
        self.resize(1600, 1000)

    def _control_panel(self, operator: str) -> QtWidgets.QWidget:
        panel = QtWidgets.QWidget()
        form = QtWidgets.QFormLayout(panel)
        self.episode_name = QtWidgets.QLineEdit()
        self.episode_name.setPlaceholderText("(date-time_task)")
        self.operator = QtWidgets.QLineEdit(operator)
        self.task_box = QtWidgets.QComboBox()
        self.task_box.addItems([t.name for t in self.tasks])
        self.task_box.setFocusPolicy(QtCore.Qt.NoFocus)
        self.task_box.currentIndexChanged.connect(self._select_task)
        self.instruction = QtWidgets.QLineEdit()
        form.addRow("episode", self.episode_name)
        form.addRow("operator", self.operator)
        form.addRow("task", self.task_box)
        form.addRow("instruction", self.instruction)
        self.subtask_list = QtWidgets.QLabel()
        self.subtask_list.setWordWrap(True)
        form.addRow("subtasks", self.subtask_list)
        buttons = QtWidgets.QGridLayout()
        for i, (text, slot) in enumerate((("Start", self.start_recording), ("Stop && save", self.stop_and_save),
                                           ("Discard", self.discard), ("Abort", self.abort))):
            button = QtWidgets.QPushButton(text)
            button.setFocusPolicy(QtCore.Qt.NoFocus)
            button.clicked.connect(slot)
            buttons.addWidget(button, i // 2, i % 2)
        form.addRow(buttons)
        self.recording_label = QtWidgets.QLabel("not recording")
        self.recording_label.setStyleSheet("font-size:16px; font-weight:bold")
        form.addRow(self.recording_label)
        self.current_subtask = QtWidgets.QLabel("")
        form.addRow("current", self.current_subtask)
        self.session_list = QtWidgets.QListWidget()
        self.session_list.setFocusPolicy(QtCore.Qt.NoFocus)
        form.addRow("saved", self.session_list)
        self.segment_table = QtWidgets.QTableWidget(0, 4)
        self.segment_table.setHorizontalHeaderLabels(["label", "description", "start s", "end s"])
        self.segment_table.horizontalHeader().setStretchLastSection(True)
        self.segment_table.setVisible(False)
        form.addRow(self.segment_table)
        self.review_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.review_slider.setFocusPolicy(QtCore.Qt.NoFocus)
        self.review_slider.setVisible(False)
        self.review_slider.valueChanged.connect(self._show_review_tick)
        form.addRow(self.review_slider)
        keys = QtWidgets.QLabel("<br>".join(f"<b>{k}</b>: {v}" for k, v in SHORTCUTS))
        keys.setWordWrap(True)
        form.addRow("keys", keys)
        return panel

    def _bind_keys(self) -> None:
        bindings = [("Space", self.toggle_recording), ("Escape", self.abort), ("X", self.discard),
                    ("0", self.end_subtask), ("Backspace", self.undo_mark), ("T", self.next_task),
                    ("D", self.top.toggle_depth), ("O", self.open_review_dialog), ("L", self.back_to_live),
                    ("Left", lambda: self.step_review(-1)), ("Right", lambda: self.step_review(1)),
                    ("PgUp", lambda: self.step_review(-20)), ("PgDown", lambda: self.step_review(20)),
                    ("Ctrl+S", self.save_review)]
        bindings += [(str(n), (lambda n=n: self.start_subtask(n))) for n in range(1, 10)]
        self._shortcuts = []
        for key, slot in bindings:
            shortcut = QtGui.QShortcut(QtGui.QKeySequence(key), self)
            shortcut.activated.connect(slot)
            self._shortcuts.append(shortcut)

    # --- tasks ----------------------------------------------------------------------
    def _select_task(self, index: int) -> None:
        self.task_index = index
        task = self.tasks[index]
        if self.task_box.currentIndex() != index:
            self.task_box.setCurrentIndex(index)
        self.instruction.setText(task.instruction)
        self.subtask_list.setText("  ".join(f"{i + 1} {s.label}" for i, s in enumerate(task.subtasks)))

    def next_task(self) -> None:
        if not self.recording:
            self._select_task((self.task_index + 1) % len(self.tasks))

    # --- recording --------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.session is not None and self.session.recording

    def toggle_recording(self) -> None:
        if self.recording:
            self.stop_and_save()
        else:
            self.start_recording()

    def start_recording(self) -> None:
        if self.session is None or self.recording or self._finishing:
            return
        if self.review is not None:
            self.back_to_live()
        try:
            self.session.start_episode(self.out_dir, name=self.episode_name.text().strip() or None,
                                       instruction=self.instruction.text(), task=self.tasks[self.task_index].name,
                                       operator=self.operator.text())
        except CaptureError as exc:
            self._show_error(str(exc))
            return
        self.annotator = Annotator()
        self.episode_name.setEnabled(False)
        self.status.showMessage(f"recording {self.session.writer.partial_path}")

    def _finish(self, how: str) -> None:
        """Detach and finish the episode on a worker thread: 'save', 'abort' or 'discard'."""
        if not self.recording or self._finishing:
            return
        self._finishing = True
        session = self.session
        segments = self.annotator.finished(self._display_time())
        writer = session.writer
        if how != "discard":
            writer.set_annotations(segments)

        def work():
            try:
                if how == "discard":
                    session.discard_episode()
                    self._signals.episode_finished.emit("", "")
                else:
                    path = session.stop_episode({"outcome": "aborted" if how == "abort" else "saved"})
                    self._signals.episode_finished.emit(str(path), "")
            except Exception as exc:  # reported on the GUI thread
                self._signals.episode_finished.emit("", str(exc))
        threading.Thread(target=work, name="episode-finish", daemon=True).start()

    def stop_and_save(self) -> None:
        self._finish("save")

    def abort(self) -> None:
        self._finish("abort")

    def discard(self) -> None:
        self._finish("discard")

    def _on_episode_finished(self, path: str, error: str) -> None:
        self._finishing = False
        self.episode_name.setEnabled(True)
        self.episode_name.clear()
        if error:
            self._show_error(error)
        elif path:
            self.saved_episodes.append(path)
            report = self.session.last_quality_report
            verdict = quality_summary(report)
            self.session_list.addItem(f"{Path(path).name}  [{verdict}]")
            self.status.showMessage(f"saved {path}: {verdict}")
        else:
            self.status.showMessage("take discarded")

    def _show_error(self, text: str) -> None:
        self.last_error = text
        log.error("%s", text)
        self.status.showMessage(f"error: {text}")

    # --- subtasks ------------------------------------------------------------------------
    def _display_time(self) -> int:
        """The instant the operator is looking at: the shown tick's t_eval."""
        return self._last_tick_time or now_ns()

    def start_subtask(self, number: int) -> None:
        if self.review is not None:
            return
        subtasks = self.tasks[self.task_index].subtasks
        if not self.recording or number > len(subtasks):
            return
        template = subtasks[number - 1]
        t = self._display_time()
        self.annotator.start(template.label, t, template.description, template.hand)
        self.session.writer.log_event("info", "annotator", f"subtask {template.label!r} started", t_ns=t)

    def end_subtask(self) -> None:
        if self.recording and self.annotator.end(self._display_time()) is not None:
            self.session.writer.log_event("info", "annotator", "subtask ended", t_ns=self._display_time())

    def undo_mark(self) -> None:
        if self.recording and self.annotator.undo():
            self.session.writer.log_event("info", "annotator", "last subtask mark undone")

    # --- the timer ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Pull the newest tick (images 20 Hz, plots 10 Hz) and, 5 times a second, health and recording state."""
        started = time.perf_counter()
        self._refreshes += 1
        if self.review is None and self.session is not None:
            tick = self.session.latest_tick
            if tick is not None and tick.t_eval_ns != self._last_tick_time:
                self._last_tick_time = tick.t_eval_ns
                self._shown_ticks += 1
                self.show_state(state_from_tick(tick), plots=self._shown_ticks % 2 == 0)
            if self._refreshes % HEALTH_EVERY == 0:
                status = self.session.stream_status()
                self.health.update_status(status, self.session.driver_health())
                self._update_warning(status)
                self._update_recording_label()
        self.timer_durations_ms.append((time.perf_counter() - started) * 1000)
        del self.timer_durations_ms[:-10_000]

    def show_state(self, state: ViewState, plots: bool = True) -> None:
        self.ego.update_state(state)
        self.top.update_state(state)
        if plots:
            self.world.update_state(state)
            for view in self.hands.values():
                view.update_state(state)

    def _update_warning(self, status) -> None:
        now = time.monotonic()
        lost = []
        for stream, st in status.items():
            if stream == "ground_truth":
                continue
            if st.state in ("lost", "waiting"):
                since = self._lost_since.setdefault(stream, now)
                if now - since > LOST_WARNING_S:
                    lost.append(f"{stream}: {st.reason}")
            else:
                self._lost_since.pop(stream, None)
        show = bool(lost) and self.recording
        if show:
            self.warning.setText("LOST while recording — " + "; ".join(lost) + ". Stop (Space), abort (Esc) or go on.")
        if self.warning.isVisible() != show:
            self.warning.setVisible(show)

    def _update_recording_label(self) -> None:
        if self.recording:
            writer = self.session.writer
            elapsed = (now_ns() - self.session.episode_started_ns) / NS_PER_S
            try:
                size = writer.partial_path.stat().st_size / 1e6
            except OSError:
                size = 0.0
            self.recording_label.setText(f"REC {elapsed:6.1f} s  {size:6.1f} MB")
            self.recording_label.setStyleSheet("font-size:16px; font-weight:bold; color:#c62828")
            current = self.annotator.current
            self.current_subtask.setText(current.label if current else "-")
            if int(elapsed) != getattr(self, "_timeline_stamp", -1) or self._segments_shown != len(self.annotator.segments):
                self._timeline_stamp = int(elapsed)  # the timeline: once a second, or when a mark changes it
                self._segments_shown = len(self.annotator.segments)
                self.timeline.show_segments(self.annotator.segments, self.session.episode_started_ns,
                                            self._display_time())
        else:
            self.recording_label.setText("finishing..." if self._finishing else "not recording")
            self.recording_label.setStyleSheet("font-size:16px; font-weight:bold")

    # --- review ------------------------------------------------------------------------------
    def open_review_dialog(self) -> None:
        if self.recording:
            return
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open episode", str(self.out_dir), "Episodes (*.h5)")
        if path:
            self.open_review(path)

    def open_review(self, path: str | Path) -> None:
        """Show a saved episode: scrub its ticks with the same views and edit its subtasks."""
        if self.recording:
            return
        self.review = EpisodeReview(path)
        self.review_slider.setRange(0, max(0, self.review.ticks - 1))
        self.review_slider.setVisible(True)
        self.segment_table.setVisible(True)
        self._fill_segment_table()
        self.timeline.show_segments(self.review.segments, self.review.t0_ns, self.review.t_end_ns)
        self.review_slider.setValue(0)
        self._show_review_tick(0)
        self.status.showMessage(f"reviewing {path}")

    def _fill_segment_table(self) -> None:
        segments = self.review.segments
        self.segment_table.setRowCount(len(segments))
        t0 = self.review.t0_ns
        for row, s in enumerate(segments):
            values = (s.label, s.description, f"{(s.start_ns - t0) / 1e9:.3f}",
                      f"{(s.end_ns - t0) / 1e9:.3f}" if s.end_ns >= 0 else "")
            for col, text in enumerate(values):
                self.segment_table.setItem(row, col, QtWidgets.QTableWidgetItem(text))

    def edited_segments(self):
        """The review table's segments as edited (times in seconds since the episode start)."""
        from capture_app.annotations import Segment
        t0 = self.review.t0_ns
        out = []
        for row, original in enumerate(self.review.segments):
            def cell(col):
                item = self.segment_table.item(row, col)
                return item.text() if item else ""
            end = cell(3)
            out.append(Segment(cell(0), cell(1), original.hand, t0 + int(round(float(cell(2)) * 1e9)),
                               t0 + int(round(float(end) * 1e9)) if end else -1))
        return out

    def save_review(self) -> None:
        if self.review is None:
            return
        try:
            segments = self.edited_segments()
        except ValueError as exc:
            self._show_error(f"a start or end time is not a number: {exc}")
            return
        self.review.save_segments(segments)
        self.timeline.show_segments(segments, self.review.t0_ns, self.review.t_end_ns)
        self.status.showMessage(f"saved {len(segments)} subtasks to {self.review.path}")

    def _show_review_tick(self, index: int) -> None:
        if self.review is not None:
            self.show_state(self.review.state(int(index)))

    def step_review(self, delta: int) -> None:
        if self.review is not None:
            self.review_slider.setValue(int(np.clip(self.review_slider.value() + delta, 0, self.review.ticks - 1)))

    def back_to_live(self) -> None:
        if self.review is not None:
            self.review.close()
            self.review = None
            self.review_slider.setVisible(False)
            self.segment_table.setVisible(False)
            self.status.showMessage("live")

    def closeEvent(self, event) -> None:
        self.timer.stop()
        if self.review is not None:
            self.review.close()
        super().closeEvent(event)
