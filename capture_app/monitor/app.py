"""``capture-app monitor``: the window on a rig, or an offscreen screenshot."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path


def run_monitor(config, *, out_dir: str, tasks_path: str | None = None, operator: str = "",
                screenshot: str | None = None, after_s: float = 3.0, review: str | None = None) -> int:
    """Open the main window on ``config``'s rig. With ``screenshot``, render offscreen, save a PNG
    after ``after_s`` seconds and exit."""
    if screenshot:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    elif not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
        print("error: no display (DISPLAY / WAYLAND_DISPLAY unset). Run the monitor on a desktop session, use "
              "`capture-app monitor --sim --screenshot out.png`, or record headless with `capture-app record --sim`.",
              file=sys.stderr)
        return 2
    from PySide6 import QtCore, QtWidgets

    from capture_app.monitor.window import MainWindow
    from capture_app.session import CaptureSession
    from capture_app.tasks import load_tasks

    tasks = load_tasks(tasks_path)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    with CaptureSession(config) as session:
        missing = session.wait_for_streams(5)
        for stream, why in session.missing_stream_reasons(missing).items():
            print(f"warning: stream {stream!r} is not delivering: {why}", file=sys.stderr)
        window = MainWindow(session, tasks, out_dir, operator=operator)
        if review:
            window.open_review(review)
        window.show()
        if screenshot:
            def shoot():
                window.grab().save(str(Path(screenshot)))
                print(screenshot)
                app.quit()
            QtCore.QTimer.singleShot(int(after_s * 1000), shoot)
        code = app.exec()
        window.close()
        # Tear the window down while Python and Qt are both fully alive, not during interpreter exit.
        window.timer.stop()
        window.deleteLater()
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.DeferredDelete)
        gc.collect()
    return code
