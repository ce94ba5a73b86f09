"""The monitor's review mode (a mixin of ``MainWindow``): open a saved episode, scrub its ticks with the live
views, and annotate and edit its subtasks (Delete, S, Ctrl+S; cells edited in place). L goes back to live."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6 import QtWidgets

from capture_app.episode.segment_edits import SegmentEdits
from capture_app.monitor.control_panel import fit_rows
from capture_app.monitor.review import EpisodeReview


class ReviewMode:
    """Review of the window. Expects the window's panel widgets (``review_slider``, ``segment_table``,
    ``review_time``, ``info``), ``timeline``, ``health``, ``status`` and its feedback methods."""

    review: EpisodeReview | None = None
    edits: SegmentEdits | None = None

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
        fit_rows(table)  # every subtask visible (up to a dozen, then it scrolls)
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
