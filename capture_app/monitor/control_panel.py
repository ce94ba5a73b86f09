"""The monitor's right-hand panel: the REC indicator, task and take info, buttons, the takes of this session,
the review controls and the key list; and the take info dialog. Built once; the window fills it."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

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
TAKES_LIST_HEIGHT = 170   # px: about six wrapped take lines, then it scrolls (the newest is kept in view)
SEGMENT_ROWS_SHOWN = 12   # review: the subtask table grows to this many rows before it scrolls


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


def takes_list() -> QtWidgets.QListWidget:
    """The session's takes, one line each: a long name and verdict wrap (never cut off); the full line and
    what the take lost are each item's tooltip."""
    widget = QtWidgets.QListWidget()
    widget.setFocusPolicy(QtCore.Qt.NoFocus)
    widget.setWordWrap(True)
    widget.setTextElideMode(QtCore.Qt.ElideNone)
    widget.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
    widget.setResizeMode(QtWidgets.QListView.Adjust)
    widget.setFixedHeight(TAKES_LIST_HEIGHT)
    return widget


def fit_rows(table: QtWidgets.QTableWidget, most: int = SEGMENT_ROWS_SHOWN) -> None:
    """Make ``table`` tall enough to show every row (at most ``most``, then it scrolls)."""
    rows = min(table.rowCount(), most)
    height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
    height += sum(table.rowHeight(r) for r in range(rows)) if rows else table.verticalHeader().defaultSectionSize()
    if table.horizontalScrollBar().isVisible():
        height += table.horizontalScrollBar().sizeHint().height()
    table.setFixedHeight(height + 2)


def build_control_panel(window) -> QtWidgets.QWidget:
    """The panel's widgets, made attributes of ``window`` (rec, rec_details, task_box, info, subtask_list,
    current_subtask, session_list, review_time, review_slider, segment_table); in a scroll area, so no
    widget is ever squeezed below its size."""
    panel = QtWidgets.QWidget()
    panel.setMinimumWidth(300)
    form = QtWidgets.QFormLayout(panel)
    window.rec = QtWidgets.QLabel("not recording")  # the big REC indicator
    window.rec.setAlignment(QtCore.Qt.AlignCenter)
    window.rec.setMinimumHeight(70)
    form.addRow(window.rec)
    window.rec_details = QtWidgets.QLabel("")
    window.rec_details.setWordWrap(True)
    form.addRow(window.rec_details)
    window.task_box = QtWidgets.QComboBox()
    window.task_box.addItems([t.name for t in window.tasks])
    window.task_box.setFocusPolicy(QtCore.Qt.NoFocus)
    window.task_box.currentIndexChanged.connect(window._select_task)
    form.addRow("task", window.task_box)
    window.info = QtWidgets.QLabel("")
    window.info.setWordWrap(True)
    form.addRow("take (E)", window.info)
    window.subtask_list = QtWidgets.QLabel()
    window.subtask_list.setWordWrap(True)
    form.addRow("subtasks", window.subtask_list)
    window.current_subtask = QtWidgets.QLabel("-")
    window.current_subtask.setStyleSheet("font-size:18px; font-weight:bold")
    form.addRow("current", window.current_subtask)
    buttons = QtWidgets.QGridLayout()
    for i, (text, slot) in enumerate((("Start / stop (Space)", window.toggle_recording), ("Abort (Esc)", window.abort),
                                       ("Discard (X X)", window.discard), ("Edit info (E)", window.edit_info))):
        button = QtWidgets.QPushButton(text)
        button.setFocusPolicy(QtCore.Qt.NoFocus)
        button.clicked.connect(slot)
        buttons.addWidget(button, i // 2, i % 2)
    form.addRow(buttons)
    window.session_list = takes_list()
    form.addRow("takes", window.session_list)
    window.review_time = QtWidgets.QLabel("")
    window.review_time.setVisible(False)
    form.addRow(window.review_time)
    window.review_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
    window.review_slider.setFocusPolicy(QtCore.Qt.NoFocus)
    window.review_slider.setVisible(False)
    window.review_slider.valueChanged.connect(window._show_review_tick)
    form.addRow(window.review_slider)
    window.segment_table = QtWidgets.QTableWidget(0, 4)
    window.segment_table.setHorizontalHeaderLabels(["label", "description", "start s", "end s"])
    window.segment_table.horizontalHeader().setStretchLastSection(True)
    window.segment_table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
    window.segment_table.setVisible(False)
    window.segment_table.cellChanged.connect(window._cell_edited)
    form.addRow(window.segment_table)
    keys = QtWidgets.QLabel("<br>".join(f"<b>{k}</b>: {v}" for k, v in SHORTCUTS))
    keys.setWordWrap(True)
    form.addRow("keys", keys)
    scroll = QtWidgets.QScrollArea()
    scroll.setWidget(panel)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QtWidgets.QFrame.NoFrame)
    scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
    scroll.setFocusPolicy(QtCore.Qt.NoFocus)
    scroll.setMinimumWidth(320)
    return scroll
