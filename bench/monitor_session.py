"""A long take with the monitor open, against the same take headless, on the real process layout:
a recorder process (`capture-app serve --sim`), optional busy processes, and the monitor window
(offscreen) in this process marking a subtask every few seconds.

Reports, for each run: samples the writer refused, sequence gaps, marks sent vs stored, operator
events stored, tick lateness (the file's /synced_live lateness_ns), and with the monitor the GUI
timer callback duration and the interval between callbacks (the frame time).

    python bench/monitor_session.py [--seconds 600] [--busy 1] [--headless-seconds S]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from bench._util import machine, pct  # noqa: E402
from capture_app.episode.file import open_episode
from capture_app.episode.annotations import read_segments  # noqa: E402
from capture_app.rig.child_process import child_env, cli_command  # noqa: E402
from capture_app.monitor.client import RecorderClient  # noqa: E402



def episode_figures(path: str) -> dict:
    with open_episode(path) as f:
        streams = f["streams"]
        lateness = f["synced_live/lateness_ns"][:] / 1e6
        messages = [m.decode() for m in f["events/message"][:]]
        valid = f["synced_live/action_valid"][:].all(axis=1) if "synced_live/action_valid" in f else np.zeros(0)
        return {"samples": sum(len(streams[s]["seq"]) for s in streams), "streams": len(streams),
                "valid_rows": float(valid.mean()) if len(valid) else 0.0,
                "refused": sum(int(streams[s].attrs.get("writer_overflow", 0)) for s in streams),
                "gaps": sum(int(streams[s].attrs.get("seq_gaps", 0)) for s in streams),
                "segments": len(read_segments(f)),
                "mark_events": sum(m.startswith("subtask ") and " started" in m for m in messages),
                "lateness_p50": float(np.median(lateness)), "lateness_p99": pct(lateness, 99),
                "late_ticks": int((lateness >= 50).sum()), "rows": len(lateness)}


def wait_finalized(client: RecorderClient, path: str, timeout_s: float = 600) -> None:
    """Until the recorder reports the take's final table written (its `take` message)."""
    deadline = time.monotonic() + timeout_s
    while not any(t["path"] == path for t in client.takes_finished):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not finalized within {timeout_s:.0f} s")
        time.sleep(0.2)


def take_with_monitor(endpoint: str, seconds: float, mark_every_s: float) -> tuple[dict, int, np.ndarray, np.ndarray, np.ndarray]:
    from PySide6 import QtCore, QtWidgets

    from capture_app.monitor.window import MainWindow
    from capture_app.rig.tasks import load_tasks
    import gc

    from capture_app.monitor.app import pace_the_display
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    print(f"GUI thread: {pace_the_display()} (as `capture-app monitor` does)")
    client = RecorderClient(endpoint, name="bench monitor")
    window = MainWindow(client, load_tasks(), ".")
    window.resize(1600, 1000)
    window.show()
    gc.freeze()
    stamps: list[float] = []
    refresh = window.refresh

    ages_ms: list[float] = []  # how old each newly drawn view was: now - its t_eval (the sync delay included)

    def timed_refresh():
        stamps.append(time.perf_counter())
        shown = window._shown_views
        refresh()
        if window._shown_views != shown:
            ages_ms.append((time.monotonic_ns() - window._last_view_t) / 1e6)
    window.timer.timeout.disconnect()
    window.timer.timeout.connect(timed_refresh)
    window.start_recording()
    marks = 0

    def mark():
        nonlocal marks
        if window.take_state == "recording":
            window.start_subtask(1 + marks % 3)
            marks += 1
    marker = QtCore.QTimer()
    marker.timeout.connect(mark)
    marker.start(int(mark_every_s * 1000))
    window.timer_durations_ms.clear()
    QtCore.QTimer.singleShot(int(seconds * 1000), app.quit)
    app.exec()
    marker.stop()
    durations = np.array(window.timer_durations_ms)
    intervals = np.diff(stamps) * 1000
    deadline = time.monotonic() + 30
    while client.pending and time.monotonic() < deadline:  # a mark sent just before the end goes first
        time.sleep(0.05)
    take = client.call("stop")
    wait_finalized(client, take["path"])
    window.timer.stop()
    window.close()
    client.close()
    return take, marks, durations, intervals, np.array(ages_ms)


def take_headless(endpoint: str, seconds: float, mark_every_s: float) -> tuple[dict, int]:
    client = RecorderClient(endpoint, name="bench script")
    client.call("start", {"task": "pour"})
    marks, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(mark_every_s)
        view = client.view
        if view is not None:
            client.call("mark_start", {"label": ["grasp", "lift", "pour"][marks % 3], "t_ns": view["t_eval_ns"]})
            marks += 1
    take = client.call("stop")
    wait_finalized(client, take["path"])
    client.close()
    return take, marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="seconds per take (default 600)")
    parser.add_argument("--busy", type=int, default=1, help="busy processes beside the rig (default 1)")
    parser.add_argument("--headless-seconds", type=float, help="seconds of the headless take (default: --seconds)")
    parser.add_argument("--mark-every", type=float, default=4.0, help="seconds between subtask marks (default 4)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.busy} busy process(es); {args.seconds:.0f} s per take")
    work = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    endpoint = f"ipc://{work / 'control'}"
    recorder = subprocess.Popen(cli_command("serve", "--sim", "--control", endpoint, "--out", str(work)),
                                env=child_env(), stdin=subprocess.DEVNULL, stderr=open(work / "recorder.log", "wb"))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        RecorderClient(endpoint, connect_timeout_s=60).close()
        take, marks, durations, intervals, ages = take_with_monitor(endpoint, args.seconds, args.mark_every)
        shown = episode_figures(take["path"])
        take_b, marks_b = take_headless(endpoint, args.headless_seconds or args.seconds, args.mark_every)
        headless = episode_figures(take_b["path"])
    finally:
        for p in busy:
            p.kill()
        recorder.terminate()
        recorder.wait(120)
    for name, figures, sent in (("monitor open", shown, marks), ("headless", headless, marks_b)):
        print(f"{name:>12}: {figures['samples']} samples in {figures['streams']} streams, live rows fully valid "
              f"{100 * figures['valid_rows']:.1f} %, refused {figures['refused']}, gaps {figures['gaps']}, marks sent {sent} / stored "
              f"{figures['segments']} / events {figures['mark_events']}, tick lateness median "
              f"{figures['lateness_p50']:.2f} ms p99 {figures['lateness_p99']:.2f} ms, ticks late by a period "
              f"{figures['late_ticks']} of {figures['rows']}")
    print(f"GUI timer callback: median {np.median(durations):.2f} ms, p99 {pct(durations, 99):.2f} ms; "
          f"frame interval (30 ms timer): median {np.median(intervals):.1f} ms, p99 {pct(intervals, 99):.1f} ms")
    print(f"views drawn: {len(ages) / args.seconds:.1f} per second (the recorder sends 20); age when drawn (now - the "
          f"view's t_eval, which is the 100 ms sync delay behind its tick): median {np.median(ages):.0f} ms, "
          f"p99 {pct(ages, 99):.0f} ms")


if __name__ == "__main__":
    main()
