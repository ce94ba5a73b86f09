"""A field panel and a Qt monitor on one recorder show the same take (issue 27, "stay consistent").

The window (offscreen) starts a take and marks a subtask by keys; the panel's page state, read over its
WebSocket as the page reads it, shows that take; a subtask tapped on the panel shows in the window; a stop
tapped on the panel ends the take in the window too.
"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("aiohttp")
websocket = pytest.importorskip("websocket")  # websocket-client (comes with selenium, the browser-test extra)
from PySide6 import QtCore  # noqa: E402

from capture_app.monitor.client import RecorderClient  # noqa: E402
from capture_app.monitor.window import MainWindow  # noqa: E402
from capture_app.rig.tasks import load_tasks  # noqa: E402
from tests.panel_browser import PanelProcess  # noqa: E402
from tests.recorder_fixture import running_recorder  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


class PageSocket:
    """The page's WebSocket to a panel, read synchronously."""

    def __init__(self, url: str):
        self.ws = websocket.create_connection(url.replace("http://", "ws://").rstrip("/") + "/ws", timeout=60)
        self.state: dict = {}
        self.acks: list[dict] = []

    def wait(self, predicate, what: str, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.state and predicate(self.state):
                return self.state
            message = json.loads(self.ws.recv())
            if message["type"] == "state":
                self.state = message
            elif message["type"] == "ack":
                self.acks.append(message)
        raise AssertionError(f"the panel never showed {what}: {self.state}")

    def tap(self, action: str, args: dict | None = None, rid: int = 1) -> dict:
        self.ws.send(json.dumps({"action": action, "args": args or {}, "rid": rid}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = [a for a in self.acks if a["rid"] == rid]
            if found:
                return found[0]
            message = json.loads(self.ws.recv())
            if message["type"] == "state":
                self.state = message
            elif message["type"] == "ack":
                self.acks.append(message)
        raise AssertionError(f"no acknowledgement of {action}")


def test_a_panel_and_a_qt_monitor_show_the_same_take(qtbot, tmp_path):
    with running_recorder(tmp_path) as (endpoint, session, takes):
        panel = PanelProcess(endpoint, tmp_path / "panel.log", "--thumb-hz", "0")
        client = RecorderClient(endpoint, name="test monitor")
        window = MainWindow(client, load_tasks(), tmp_path / "episodes", operator="ana")
        qtbot.addWidget(window)
        window.show()
        window.activateWindow()
        page = None
        try:
            qtbot.waitUntil(lambda: window._last_view_t != 0, timeout=30000)
            page = PageSocket(panel.url)
            page.wait(lambda s: s["take_state"] == "idle", "an idle recorder")
            qtbot.keyClick(window, QtCore.Qt.Key_Space)          # the window starts the take
            qtbot.waitUntil(lambda: client.pending == 0 and window.take_state == "recording", timeout=60000)
            qtbot.keyClick(window, QtCore.Qt.Key_1)              # and marks "grasp"
            qtbot.waitUntil(lambda: client.pending == 0 and window.current_label == "grasp", timeout=60000)
            shown = page.wait(lambda s: s["recording"] and s["current"] == "grasp", "the window's take and mark")
            assert shown["task"] == "pour" and shown["subtasks"][0] == "grasp"
            ack = page.tap("subtask", {"index": 1}, rid=1)       # the panel marks "lift"
            assert ack["ok"], ack
            qtbot.waitUntil(lambda: window.current_label == "lift", timeout=60000)
            ack = page.tap("stop", rid=2)                        # the panel stops the take
            assert ack["ok"], ack
            qtbot.waitUntil(lambda: window.take_state == "idle", timeout=60000)
            assert not session.recording
            page.wait(lambda s: s["take_state"] == "idle" and s["take_count"] == 1, "the take counted")
        finally:
            if page is not None:
                page.ws.close()
            window.timer.stop()
            client.close()
            panel.stop()
        takes.wait_finalized()
