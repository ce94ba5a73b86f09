"""The monitor, offscreen, attached to a recorder over docs/control.md: a whole take by keys alone, refused
keys, discard and abort, views and overlay, review annotation, and a monitor killed mid-take."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtGui  # noqa: E402

from capture_app.episode.annotations import read_segments  # noqa: E402
from capture_app.rig.child_process import child_env  # noqa: E402
from capture_app.monitor.client import RecorderClient  # noqa: E402
from capture_app.monitor.overlay import state_from_view  # noqa: E402
from capture_app.monitor.views import TIP_BRUSH  # noqa: E402
from capture_app.monitor.window import SHORTCUTS, MainWindow  # noqa: E402
from capture_app.rig.tasks import load_tasks  # noqa: E402
from tests.recorder_fixture import running_recorder  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def recorder(tmp_path):
    with running_recorder(tmp_path, ego=(640, 360)) as r:
        yield r


@pytest.fixture
def window(qtbot, recorder, tmp_path):
    client = RecorderClient(recorder[0], name="test monitor")
    w = MainWindow(client, load_tasks(), tmp_path / "episodes", operator="ana")
    qtbot.addWidget(w)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(lambda: w._last_view_t != 0, timeout=10000)
    yield w
    w.timer.stop()
    client.close()


def press(qtbot, window, key, modifier=QtCore.Qt.NoModifier):
    qtbot.keyClick(window, key, modifier)
    qtbot.wait(150)


def settled(qtbot, window, timeout=60000):
    """Every command sent has been answered (and its reply handled on the GUI thread)."""
    qtbot.waitUntil(lambda: window.client.pending == 0, timeout=timeout)
    qtbot.wait(50)


def test_a_whole_session_by_keys_alone(qtbot, window, recorder):
    press(qtbot, window, QtCore.Qt.Key_Space)                 # start
    settled(qtbot, window)
    assert window.take_state == "recording"
    qtbot.wait(400)
    press(qtbot, window, QtCore.Qt.Key_1)                     # grasp
    qtbot.wait(300)
    press(qtbot, window, QtCore.Qt.Key_2)                     # lift (ends grasp)
    qtbot.wait(300)
    press(qtbot, window, QtCore.Qt.Key_3)                     # pour (ends lift)
    press(qtbot, window, QtCore.Qt.Key_Backspace)             # undo: pour never started, lift open again
    settled(qtbot, window)
    assert window.current_label == "lift" and recorder[2].annotator.current.label == "lift"
    press(qtbot, window, QtCore.Qt.Key_7)                     # the task has 5 subtasks: refused, and said why
    assert "has 5 subtasks" in window.last_refusal
    press(qtbot, window, QtCore.Qt.Key_T)                     # no task change during a take
    assert "cannot change during a take" in window.last_refusal
    qtbot.wait(300)
    press(qtbot, window, QtCore.Qt.Key_Space)                 # stop and save
    qtbot.waitUntil(lambda: bool(window.saved_episodes), timeout=60000)
    assert window.last_error == "" and window.current_label == "" and window.take_state == "idle"
    path = window.saved_episodes[0]
    # the quality verdict reaches the operator's take list once the recorder computed it
    qtbot.waitUntil(lambda: "quality OK" in window.session_list.item(0).text()
                    or "REDO" in window.session_list.item(0).text(), timeout=120000)
    assert "[saved;" in window.session_list.item(0).text()
    assert window.session_list.item(0).toolTip()  # what the take lost, or "nothing lost"
    with h5py.File(path, "r") as f:
        segments = read_segments(f)
        assert [s.label for s in segments] == ["grasp", "lift"]
        assert segments[0].description == "use right hand to grasp the tall blue mug" and segments[0].hand == "right"
        assert segments[0].end_ns == segments[1].start_ns and segments[1].end_ns > segments[1].start_ns
        ticks = f["annotations/subtasks/start_tick"][:]
        t_eval = f["synced/t_eval_ns"][:]
        assert t_eval[ticks[1]] >= segments[1].start_ns and t_eval[ticks[1] - 1] < segments[1].start_ns
        assert f.attrs["task"] == "pour" and f.attrs["operator"] == "ana" and f.attrs["outcome"] == "saved"
        assert "pour the juice" in f.attrs["instruction"]
        messages = [m.decode() for m in f["events/message"][:]]
        assert "subtask 'grasp' started by test monitor" in messages
        assert "last subtask mark undone by test monitor" in messages


def test_discard_needs_a_second_x_and_abort_keeps_a_file_marked_aborted(qtbot, window, tmp_path):
    press(qtbot, window, QtCore.Qt.Key_Space)
    settled(qtbot, window)
    press(qtbot, window, QtCore.Qt.Key_X)
    qtbot.wait(300)
    assert window.take_state == "recording"                   # one X only asks
    press(qtbot, window, QtCore.Qt.Key_X)
    settled(qtbot, window)
    assert window.take_state == "idle" and list((tmp_path / "episodes").glob("*.h5*")) == []
    assert "[discarded]" in window.session_list.item(0).text()
    press(qtbot, window, QtCore.Qt.Key_Space)
    settled(qtbot, window)
    qtbot.wait(300)
    press(qtbot, window, QtCore.Qt.Key_Escape)
    qtbot.waitUntil(lambda: bool(window.saved_episodes), timeout=60000)
    assert "[aborted;" in window.session_list.item(1).text()
    # the recorder computes the final table in the file right after the stop: read it once that is done
    qtbot.waitUntil(lambda: "checking quality" not in window.session_list.item(1).text(), timeout=120000)
    with h5py.File(window.saved_episodes[0], "r") as f:
        assert f.attrs["outcome"] == "aborted"


def test_every_view_shows_content_and_fingertips_land_where_the_calibration_projects(qtbot, window, recorder):
    window.resize(1600, 1000)
    qtbot.wait(300)
    window.timer.stop()  # freeze what is shown
    qtbot.waitUntil(lambda: window.client.view is not None and "ego" in window.client.view
                    and all(window.client.view["action_valid"]), timeout=10000)
    view = window.client.view
    state = state_from_view(view)
    window.show_state(state)
    qtbot.wait(50)
    for widget in (window.ego.widget, window.top.widget, window.world, *[p for h in window.hands.values()
                                                                          for p, _ in h.plots]):
        image = widget.grab().toImage()
        pixels = np.array([image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)])
        assert len(np.unique(pixels)) > 20, f"{widget} looks empty"
    # Independently of the monitor: project the fingertips with the calibration (pinhole, K @ p / z).
    k = recorder[1].calibration.ego_intrinsics
    frame = state.ego_image
    sx, sy = frame.shape[1] / k.width, frame.shape[0] / k.height
    shot = window.ego.widget.grab().toImage()
    ratio = shot.devicePixelRatio()
    checked = 0
    for hand in ("left", "right"):
        T, keypoints = view["T_cam_wrist"][hand], view["keypoints"][hand]
        for tip in (4, 9, 14, 19, 24):
            p = T[:3, :3] @ keypoints[tip] + T[:3, 3]
            u, v = k.fx * sx * p[0] / p[2] + k.cx * sx, k.fy * sy * p[1] / p[2] + k.cy * sy
            if not (0 <= u < frame.shape[1] and 0 <= v < frame.shape[0]):
                continue
            where = window.ego.image_to_widget(np.array([u, v]))
            x, y = int(where.x() * ratio), int(where.y() * ratio)
            # within 2 px: a neighbouring tip's marker outline may cross this one's centre
            near = {QtGui.QColor(shot.pixel(x + dx, y + dy)).getRgb()[:3] for dx in range(-2, 3) for dy in range(-2, 3)}
            assert TIP_BRUSH in near, (hand, tip, u, v, near)
            checked += 1
    assert checked >= 6
    # a hand whose action is invalid says so on its plots
    state.hand_valid = {"left": False, "right": True}
    window.show_state(state)
    assert all(t.isVisible() for t in window.hands["left"].lost_tags)
    assert not any(t.isVisible() for t in window.hands["right"].lost_tags)
    # every stream's row is visible without scrolling, at the smallest screen we support
    window.resize(1366, 768)
    qtbot.wait(200)
    table = window.health
    assert table.viewport().height() >= sum(table.rowHeight(r) for r in range(table.rowCount()))


def test_board_detection_view_marks_the_corners_it_finds(qtbot, window):
    from calibration.board import BoardConfig
    window.timer.stop()
    board = BoardConfig().image(40)                                 # 320 x 240 px
    image = np.full((360, 640, 3), 255, np.uint8)
    image[60:60 + board.shape[0], 160:160 + board.shape[1]] = board[..., None]
    state = state_from_view(window.client.view)
    state.ego_image = image
    press(qtbot, window, QtCore.Qt.Key_B)
    window.show_state(state)
    assert len(window.ego.board_corners.data) == 35                # every inner corner of the 8 x 6 board
    assert "board: 35 corners" in window.ego.label.textItem.toPlainText()
    window._board_checked = 0.0
    state.ego_image = np.full((360, 640, 3), 128, np.uint8)         # no board in view: said so
    window.show_state(state)
    assert len(window.ego.board_corners.data) == 0 and "not seen" in window.ego.label.textItem.toPlainText()
    press(qtbot, window, QtCore.Qt.Key_B)
    assert window.board_detector is None


def test_review_annotates_validates_and_logs_edits(qtbot, window, tmp_path):
    press(qtbot, window, QtCore.Qt.Key_Space)
    settled(qtbot, window)
    qtbot.wait(300)
    press(qtbot, window, QtCore.Qt.Key_1)
    qtbot.wait(400)
    press(qtbot, window, QtCore.Qt.Key_0)
    qtbot.wait(500)                                           # the take goes on after the subtask's end
    press(qtbot, window, QtCore.Qt.Key_Space)
    qtbot.waitUntil(lambda: bool(window.saved_episodes), timeout=60000)
    settled(qtbot, window)
    path = window.saved_episodes[0]
    qtbot.waitUntil(lambda: "checking quality" not in window.session_list.item(0).text(), timeout=120000)
    with h5py.File(path, "r") as f:
        before = read_segments(f)
    window.open_review(path)
    assert window.review.ticks > 5 and "pour" in window.info.text()  # the file's task, not the live template
    press(qtbot, window, QtCore.Qt.Key_S, QtCore.Qt.ControlModifier)   # no edit: nothing written, nothing moved
    with h5py.File(path, "r") as f:
        assert read_segments(f) == before
    press(qtbot, window, QtCore.Qt.Key_Right)
    assert window.review_slider.value() == 1 and "tick 2 of" in window.review_time.text()
    window.seek_review(0.5)                                   # a click on the timeline at 0.5 s
    assert abs((window.review.t_eval[window.review_slider.value()] - window.review.t0_ns) / 1e9 - 0.5) < 0.06
    window.segment_table.item(0, 3).setText("0.2")            # end before start: refused on save
    window.segment_table.item(0, 2).setText("0.4")
    press(qtbot, window, QtCore.Qt.Key_S, QtCore.Qt.ControlModifier)
    assert "is not after its start" in window.last_refusal
    press(qtbot, window, QtCore.Qt.Key_Backspace)             # undo both time edits
    press(qtbot, window, QtCore.Qt.Key_Backspace)
    window.segment_table.item(0, 1).setText("use right hand to grasp the mug by its handle")
    # the playhead just after the recorded 'grasp' ends (under load the take may end a few ticks after it),
    # then mark subtask 3 there
    after_grasp = int(np.searchsorted(window.review.t_eval, before[0].end_ns, side="right"))
    assert after_grasp < window.review.ticks
    window.step_review(-window.review.ticks)
    window.step_review(after_grasp)
    press(qtbot, window, QtCore.Qt.Key_3)
    press(qtbot, window, QtCore.Qt.Key_S, QtCore.Qt.ControlModifier)
    window.back_to_live()
    with h5py.File(path, "r") as f:
        segments = read_segments(f)
        messages = [m.decode() for m in f["events/message"][:]]
    assert [s.label for s in segments] == ["grasp", "pour"]
    assert segments[0].description == "use right hand to grasp the mug by its handle"
    assert (segments[0].start_ns, segments[0].end_ns) == (before[0].start_ns, before[0].end_ns)
    assert any(m.startswith("edited in review: subtask 'pour' marked at") for m in messages)


def test_killing_the_monitor_mid_take_loses_nothing(tmp_path):
    """A real monitor process (the window, offscreen) starts a take and marks two subtasks, then is SIGKILLed:
    the take goes on and completes with every sample and both marks."""
    with running_recorder(tmp_path) as (endpoint, session, takes):
        child = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "monitor_child.py"),
                                  endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        try:
            line = child.stdout.readline()
            assert line.strip() == "marked", (line, child.stderr.read() if child.poll() is not None else "")
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
            child.stderr.close()
        time.sleep(1.0)
        assert session.recording  # the take did not notice
        observer = RecorderClient(endpoint, name="observer")
        try:
            take = observer.call("stop")
        finally:
            observer.close()
    with h5py.File(take["path"], "r") as f:
        assert [s.label for s in read_segments(f)] == ["grasp", "lift"]
        for stream in ("left_glove", "right_glove", "head_tracker", "ego_camera", "top_camera"):
            g = f[f"streams/{stream}"]
            assert g.attrs["seq_gaps"] == 0 and g.attrs["writer_overflow"] == 0, stream
            seq = g["seq"][:]
            assert len(seq) and (np.diff(seq) == 1).all(), stream


def test_every_shortcut_is_listed_in_the_readme():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    for key, action in SHORTCUTS:
        assert f"| {key} | {action} |" in readme, key


def test_qt_does_not_corrupt_none_refcounts():
    """PySide6 6.12.0 decremented None on every void call (fatal on Python 3.11): keep it out."""
    from PySide6 import QtWidgets
    QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    label = QtWidgets.QLabel("x")
    before = sys.getrefcount(None)
    for _ in range(1000):
        label.setText("y")
    assert abs(sys.getrefcount(None) - before) < 50


def test_the_end_of_take_summary_names_every_loss():
    from capture_app.monitor.window import take_losses
    report = {"streams": {"left_glove": {"seq_gaps": 3, "writer_overflow": 0, "rejected": 2, "tracking_lost": 0},
                          "head_tracker": {"seq_gaps": 0, "writer_overflow": 0, "rejected": 0, "tracking_lost": 0}},
              "hands": {"left": {"valid": 0.9}, "right": {"valid": 1.0}}}
    assert take_losses(report) == "left_glove seq gaps 3, rejected 2; left hand invalid 10.0% of rows"
    report["streams"]["left_glove"].update(seq_gaps=0, rejected=0)
    report["hands"]["left"]["valid"] = 1.0
    assert take_losses(report) == "nothing lost"


def test_the_live_timeline_updates_bars_in_place_and_keeps_the_last_minute(qtbot):
    from capture_app.episode.annotations import Segment
    from capture_app.monitor.views import Timeline
    timeline = Timeline()
    qtbot.addWidget(timeline)
    s = 1_000_000_000
    done = [Segment(f"step{i}", "", "both", i * 4 * s, (i * 4 + 3) * s) for i in range(30)]
    timeline.show_segments(done + [Segment("pour", "", "both", 120 * s)], 0, 121 * s, window_s=60)
    assert len(timeline._bars) == 1 + sum(seg.end_ns >= 61 * s for seg in done)  # only the last minute is drawn
    kept = timeline._bars[(100 * s, "step25")][0]
    closed = Segment("pour", "", "both", 120 * s, 123 * s)
    timeline.show_segments(done + [closed], 0, 124 * s, window_s=60)
    assert timeline._bars[(100 * s, "step25")][0] is kept                   # an unchanged bar is not rebuilt
    assert timeline._bars[(120 * s, "pour")][1].textItem.toPlainText() == "pour"  # the open bar was closed in place
    assert (60 * s, "step15") not in timeline._bars                        # it left the window
    timeline.show_segments(done[:2], 0, 9 * s)                               # review: the whole take
    assert set(timeline._bars) == {(0, "step0"), (4 * s, "step1")}


def test_a_missing_hands_free_input_of_the_recorder_is_in_the_status_bar(qtbot, window, recorder):
    """The recorder's pedal unplugged (what capture_app.handsfree.runner reports in the state feed): the status
    bar says so."""
    session = recorder[1]
    session.handsfree_status = lambda: {"gestures": None, "pedal": "missing", "voice": None, "voice_refused": 0,
                                        "missing": ["pedal"]}
    try:
        qtbot.waitUntil(lambda: window.status.currentMessage() == "hands-free: pedal missing", timeout=10000)
    finally:
        session.handsfree_status = None


def test_speech_the_voice_input_did_not_take_is_counted_among_the_losses():
    """Refused speech is counted live (the state feed's handsfree.voice_refused): the top bar's tooltip lists
    it with the rest of what was refused; none heard, nothing listed."""
    from capture_app.monitor.summaries import losses_of
    feed = {"handsfree": {"gestures": None, "pedal": None, "voice": "listening", "voice_refused": 3, "missing": []}}
    assert losses_of(feed) == ["speech not taken as a command 3"]
    assert losses_of({"handsfree": {**feed["handsfree"], "voice_refused": 0}}) == []
    assert losses_of({"handsfree": None}) == []
