"""The monitor's live verdict and take handling (#24 points 4 and 5), offscreen, on a simulated recorder:
the top bar and the stream table agree while a stream degrades, is lost and recovers; the first live rows of a
take do not turn the bar red; a double Space neither stops nor starts a take twice; the timeline closes the
segment a stop closed; a monitor attached later shows the operator, the take being recorded and the earlier
takes; the take list wraps its lines and review shows every subtask."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore  # noqa: E402

from capture_app.core.live_verdict import bar_verdict, worst  # noqa: E402
from capture_app.monitor.client import RecorderClient  # noqa: E402
from capture_app.monitor.take_control import SPACE_GUARD_S  # noqa: E402
from capture_app.monitor.window import MainWindow  # noqa: E402
from capture_app.rig.tasks import load_tasks  # noqa: E402
from tests.recorder_fixture import running_recorder  # noqa: E402

pytestmark = pytest.mark.slow

# left_wrist_tracker (250 Hz), in seconds after the drivers start: 2.5 s without data every 7 s from 9 s on (lost
# after 0.5 s; when it is back, degraded for a second: the samples lost), so a take starting late on a busy
# machine still sees one
SPELLS = "drop_spells_s = [" + ", ".join(f"[{t}, {t + 2.5}]" for t in range(9, 80, 7)) + "]"


def _window(qtbot, endpoint, tmp_path, operator="ana"):
    client = RecorderClient(endpoint, name="test monitor")
    window = MainWindow(client, load_tasks(), tmp_path / "episodes", operator=operator)
    qtbot.addWidget(window)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(lambda: window._last_view_t != 0, timeout=30000)
    return window


def _close(window):
    window.timer.stop()
    window.client.close()


def _settled(qtbot, window):
    qtbot.waitUntil(lambda: window.client.pending == 0, timeout=60000)
    qtbot.wait(50)


def _watch(window) -> list[dict]:
    """Every status the window adopts: the bar's level and text, the table's levels, recording or not."""
    seen = []
    adopt = window._adopt_status

    def recorded(status, initial=False):
        adopt(status, initial)
        seen.append({"bar": window.bar_level, "text": window.warning.text(), "table": dict(window.health.levels),
                     "recording": bool((status.get("takes") or {}).get("recording")),
                     "invalid": dict((status.get("losses") or {}).get("invalid_rows") or {})})
    window._adopt_status = recorded
    return seen


def test_the_bar_and_the_table_agree_while_a_stream_degrades_is_lost_and_recovers(qtbot, tmp_path):
    with running_recorder(tmp_path, options={"left_wrist_tracker": SPELLS}) as (endpoint, session, takes):
        window = _window(qtbot, endpoint, tmp_path)
        try:
            seen = _watch(window)
            qtbot.keyClick(window, QtCore.Qt.Key_Space)
            _settled(qtbot, window)
            assert window.take_state == "recording"

            def wrist(*levels):
                return lambda: bool(seen) and seen[-1]["recording"] and seen[-1]["table"].get("left_wrist_tracker") in levels
            qtbot.waitUntil(wrist("lost"), timeout=90000)
            lost_at = len(seen) - 1
            qtbot.waitUntil(wrist("ok", "degraded"), timeout=30000)   # back
            back_at = len(seen) - 1
            qtbot.waitUntil(lambda: len(seen) >= back_at + 5, timeout=30000)  # a second more
        finally:
            _close(window)
    during = [s for s in seen if s["recording"] and s["table"]]
    assert during
    for s in during:  # at every status: the bar is the table's worst, and names every stream not ok
        assert s["bar"] == worst(s["table"].values()), s
        for stream, level in s["table"].items():
            assert level == "ok" or stream in s["text"], s
    assert seen[lost_at]["bar"] == "lost" and "left_wrist_tracker lost" in seen[lost_at]["text"]
    # back: it delivers again; degraded while the samples it lost are in the last second (or the machine is
    # busy), and the bar no longer calls it lost
    assert "left_wrist_tracker lost" not in seen[back_at]["text"]
    assert "degraded" in [s["table"]["left_wrist_tracker"] for s in seen[lost_at:]]


def test_invalid_rows_before_a_parts_first_valid_row_are_counted_apart():
    """The first live ticks of a take (streams not yet delivering since the take's start) are not losses."""
    from capture_app.recorder.episodes import Episodes
    from capture_app.recorder.synchronizer import VALIDITY_NAMES
    episodes = Episodes(None, None, None)
    rows = []
    episodes._writer = types.SimpleNamespace(submit_row=lambda kind, tick: rows.append(tick))
    episodes.started_ns = 0

    def tick(*valid):
        episodes.on_tick(types.SimpleNamespace(t_tick_ns=1, action_valid=np.array(valid, dtype=bool)))
    tick(False, False, False, False)
    tick(False, True, False, False)
    for _ in range(5):
        tick(True, True, True, True)
    assert episodes.invalid_rows == {name: 0 for name in VALIDITY_NAMES}
    assert episodes.invalid_rows_at_start == {"left_wrist": 2, "right_wrist": 1, "left_fingers": 2, "right_fingers": 2}
    tick(True, False, True, True)  # after its first valid row, an invalid one is a loss
    assert episodes.invalid_rows["right_wrist"] == 1 and len(rows) == 8
    status = {"streams": {}, "takes": {"recording": True}, "losses": {
        "invalid_rows": {n: 0 for n in VALIDITY_NAMES}, "invalid_rows_at_start": episodes.invalid_rows_at_start}}
    assert bar_verdict(status)[0] == "ok"


def test_a_double_space_is_one_press_and_the_stop_closes_the_timeline(qtbot, tmp_path):
    with running_recorder(tmp_path) as (endpoint, session, takes):
        window = _window(qtbot, endpoint, tmp_path)
        try:
            qtbot.keyClick(window, QtCore.Qt.Key_Space)
            qtbot.keyClick(window, QtCore.Qt.Key_Space)   # a double tap: one start, no stop
            _settled(qtbot, window)
            assert window.take_state == "recording" and session.recording
            assert "Space ignored" in window.last_refusal
            assert window.recording_name
            qtbot.waitUntil(lambda: window.recording_name in window.rec_details.text(), timeout=10000)
            assert window.recording_name in window.windowTitle()
            qtbot.keyClick(window, QtCore.Qt.Key_1)
            _settled(qtbot, window)
            qtbot.waitUntil(lambda: bool(window.timeline._bars), timeout=10000)
            assert [t.textItem.toPlainText() for _, t, _ in window.timeline._bars.values()] == ["grasp ..."]
            qtbot.wait(int(SPACE_GUARD_S * 1000) + 200)
            qtbot.keyClick(window, QtCore.Qt.Key_Space)   # stop and save
            qtbot.keyClick(window, QtCore.Qt.Key_Space)   # a double tap: no second take
            _settled(qtbot, window)
            qtbot.waitUntil(lambda: bool(window.saved_episodes), timeout=60000)
            qtbot.wait(500)
            assert window.take_state == "idle" and not session.recording and takes.take_count == 1
            bars = list(window.timeline._bars.values())
            assert [t.textItem.toPlainText() for _, t, _ in bars] == ["grasp"]  # drawn closed at the stop
            assert bars[0][2] > 0
            assert window.recording_name == "" and "recording" not in window.windowTitle()
        finally:
            _close(window)


def test_a_monitor_attached_later_shows_the_operator_the_take_and_the_earlier_takes(qtbot, tmp_path):
    with running_recorder(tmp_path) as (endpoint, session, takes):
        first = RecorderClient(endpoint, name="first monitor")
        try:
            first.call("start", {"name": "take-one", "operator": "ana", "task": "pour"})
            time.sleep(0.6)  # the marks below lie within the take
            t = first.call("status")["t_ns"]
            for i, label in enumerate(("grasp", "lift", "pour", "place", "release")):
                first.call("mark_start", {"label": label, "t_ns": t - (5 - i) * 50_000_000})
            first.call("stop")
            takes.wait_finalized()
            first.call("start", {"name": "take-two-with-a-long-descriptive-name", "operator": "ana", "task": "pour"})
        finally:
            first.close()  # the first window is gone
        window = _window(qtbot, endpoint, tmp_path, operator="")
        try:
            assert "operator: ana" in window.info.text()
            assert "take-two-with-a-long-descriptive-name" in window.rec_details.text()
            assert "take-two-with-a-long-descriptive-name" in window.windowTitle()
            lines = [window.session_list.item(r).text() for r in range(window.session_list.count())]
            assert len(lines) == 1 and lines[0].startswith("take-one.h5  [saved; ") and "checking" not in lines[0]
            # a long verdict wraps: the whole line is shown (and is the tooltip), never cut off
            report = {"verdict": "redo", "problems": ["ego_camera image coverage 30% of rows (needs 95%): "
                                                      "the camera stalled for 42 s before the end"] * 2,
                      "hands": {}, "streams": {}}
            window._add_take({"name": "take-x", "path": str(tmp_path / "take-x.h5"), "outcome": "saved"})
            window._take_checked({"name": "take-x", "path": str(tmp_path / "take-x.h5"), "outcome": "saved",
                                  "report": report})
            item = window.session_list.item(1)
            qtbot.wait(100)
            assert "stalled for 42 s" in item.toolTip() and "(+1 more)" in item.text()
            rect = window.session_list.visualItemRect(item)
            line = window.session_list.fontMetrics().height()
            assert rect.height() >= 2 * line and rect.right() <= window.session_list.viewport().width()
            window.client.call("stop")
            takes.wait_finalized()
            qtbot.waitUntil(lambda: window.take_state == "idle", timeout=30000)
            window.open_review(tmp_path / "episodes" / "take-one.h5")
            table = window.segment_table
            qtbot.wait(200)
            assert table.rowCount() == 5
            last = table.rowCount() - 1
            assert table.rowViewportPosition(last) >= 0
            assert table.rowViewportPosition(last) + table.rowHeight(last) <= table.viewport().height()
            window.back_to_live(force=True)
        finally:
            _close(window)
