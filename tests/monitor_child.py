"""A monitor process for the kill test: the real window, offscreen, on the recorder at argv[1].

Starts a take and marks subtasks 1 and 2 by keys, prints "marked" once the recorder
acknowledged both, then waits to be killed.
"""

import os
import sys
import time

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from PySide6 import QtCore, QtTest, QtWidgets  # noqa: E402

from capture_app.monitor.client import RecorderClient  # noqa: E402
from capture_app.monitor.window import MainWindow  # noqa: E402
from capture_app.rig.tasks import load_tasks  # noqa: E402


def wait_until(app, condition, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            sys.exit("timed out")
        app.processEvents()
        time.sleep(0.02)


def main():
    app = QtWidgets.QApplication(sys.argv[:1])
    client = RecorderClient(sys.argv[1], name="doomed monitor")
    window = MainWindow(client, load_tasks(), ".")
    window.show()
    wait_until(app, lambda: window._last_view_t != 0)
    QtTest.QTest.keyClick(window, QtCore.Qt.Key_Space)
    wait_until(app, lambda: window.take_state == "recording" and client.pending == 0)
    for key in (QtCore.Qt.Key_1, QtCore.Qt.Key_2):
        time.sleep(0.3)
        wait_until(app, lambda: True)
        QtTest.QTest.keyClick(window, key)
    wait_until(app, lambda: client.pending == 0)
    print("marked", flush=True)
    while True:
        app.processEvents()
        time.sleep(0.05)


main()
