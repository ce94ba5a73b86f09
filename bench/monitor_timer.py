"""Duration of the monitor's GUI timer callback (pull the newest tick, update every view and the
health table) with the full simulated rig running and recording, offscreen; and tick lateness
meanwhile (the GUI shares the GIL with the synchronizer).

    python bench/monitor_timer.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PySide6 import QtCore, QtWidgets  # noqa: E402

from bench._util import machine, pct  # noqa: E402
from capture_app.config import load_config  # noqa: E402
from capture_app.monitor.window import MainWindow  # noqa: E402
from capture_app.session import CaptureSession  # noqa: E402
from capture_app.tasks import load_tasks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    app = QtWidgets.QApplication([])
    out = tempfile.mkdtemp(prefix="bench-monitor-")
    with CaptureSession(load_config()) as session:
        assert session.wait_for_streams(10) == []
        window = MainWindow(session, load_tasks(), out)
        window.resize(1600, 1000)
        window.show()
        window.start_recording()
        lateness_start = len(session.synchronizer.lateness_ns)
        window.timer_durations_ms.clear()
        QtCore.QTimer.singleShot(int(args.seconds * 1000), app.quit)
        app.exec()
        durations = np.array(window.timer_durations_ms)
        lateness = np.array(session.synchronizer.lateness_ns[lateness_start:]) / 1e6
        window.timer.stop()
        path = session.stop_episode()
        Path(path).unlink()
    print(f"GUI timer callback over {args.seconds:.0f} s ({len(durations)} calls, every 30 ms): "
          f"median {np.median(durations):.2f} ms, p99 {pct(durations, 99):.2f} ms, max {durations.max():.2f} ms")
    print(f"tick lateness with the monitor open and recording: median {np.median(lateness):.2f} ms, "
          f"p99 {pct(lateness, 99):.2f} ms, max {lateness.max():.2f} ms, late by a whole period: {(lateness >= 50).sum()}")


if __name__ == "__main__":
    main()
