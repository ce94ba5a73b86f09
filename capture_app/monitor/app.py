"""``capture-app monitor``: the window, attached to a recorder process (started here unless --connect)."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from capture_app.rig.child_process import child_env, cli_command
from capture_app.core.errors import CaptureError

log = logging.getLogger(__name__)


MONITOR_NICENESS = 5
GUI_REALTIME_PRIORITY = 1  # below the recorder's ticking thread ([sync] realtime_priority = 10)


def pace_the_display() -> str:
    """Call on the GUI thread before the recorder client starts its threads. The window draws every 30 ms:
    where permitted the GUI thread runs under SCHED_FIFO at a priority below the recorder's ticks, so it
    wakes on time on a busy machine (it uses ~2 ms per frame); otherwise it is niced, so that the
    recording gets the CPU first. The client's threads, started afterwards, inherit the same (they hold
    the GIL the GUI thread needs: at a lower priority they would make it wait behind other work);
    processes started afterwards do not. Returns how the thread is scheduled."""
    from capture_app.rig.priority import make_this_thread_realtime
    scheduling = make_this_thread_realtime(GUI_REALTIME_PRIORITY, reset_on_fork=True)
    if not scheduling.startswith("SCHED_FIFO"):
        os.nice(MONITOR_NICENESS)
        scheduling += f", niceness {MONITOR_NICENESS}"
    return scheduling


def start_recorder_process(config_path: str | None, out_dir: str, control: str, log_path: Path) -> subprocess.Popen:
    """``capture-app serve`` as a child process (its own GIL and its own lifetime: it outlives a killed monitor)."""
    command = cli_command("serve", "--control", control, "--out", out_dir)
    command += ["--config", config_path] if config_path else ["--sim"]
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                                start_new_session=True)  # a Ctrl-C in the monitor's terminal is the monitor's
    finally:
        log.close()


def attachable_recorder(rig_name: str | None) -> dict | None:
    """The oldest running recorder of this user on rig ``rig_name`` with an ipc:// control endpoint (the
    registry of ``capture_app.rig.recorders``), or None."""
    from capture_app.rig.recorders import running_recorders
    for entry in running_recorders():
        if entry.get("rig") == rig_name and str(entry.get("control", "")).startswith("ipc://"):
            return entry
    return None


def run_monitor(config_path: str | None, *, out_dir: str, connect: str | None = None, tasks_path: str | None = None,
                operator: str = "", screenshot: str | None = None, after_s: float = 3.0, review: str | None = None,
                speak: bool = False, curve=None, rig_name: str | None = None, new_recorder: bool = False) -> int:
    """Open the main window on a recorder: the one at ``connect``; else, unless ``new_recorder``, a running
    recorder of this user on the same rig (``rig_name``; a window killed earlier leaves its recorder
    running); else one started now on the rig config (the simulated rig without one). With ``screenshot``,
    save a PNG of the window after ``after_s`` seconds and exit (rendered offscreen when there is no
    display)."""
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if screenshot and not has_display:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # no display: render offscreen (with one: the real window)
    elif not screenshot and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
        print("error: no display (DISPLAY / WAYLAND_DISPLAY unset). Run the monitor on a desktop session, use "
              "`capture-app monitor --sim --screenshot out.png`, or record headless with `capture-app record --sim`.",
              file=sys.stderr)
        return 2
    from PySide6 import QtCore, QtWidgets

    from capture_app.monitor.client import RecorderClient
    from capture_app.monitor.cues import Cues
    from capture_app.monitor.window import MainWindow, not_delivering
    from capture_app.rig.tasks import load_tasks

    tasks = load_tasks(tasks_path)
    recorder, workdir = None, None
    running = attachable_recorder(rig_name) if connect is None and rig_name and not new_recorder else None
    if running is not None:
        connect, out_dir = running["control"], running.get("out") or out_dir
        print(f"attaching to the running recorder of rig {running['rig']!r} (pid {running['pid']}, control "
              f"{connect}, episodes in {out_dir}); --new-recorder starts another", file=sys.stderr)
    if connect is None:
        workdir = Path(tempfile.mkdtemp(prefix="capture-app-monitor-"))
        connect = f"ipc://{workdir / 'control'}"
        recorder = start_recorder_process(config_path, out_dir, connect, workdir / "recorder.log")
        print(f"recorder: pid {recorder.pid}, control {connect}, log {workdir / 'recorder.log'}", file=sys.stderr)
    try:
        scheduling = pace_the_display()  # the client's threads are started below and inherit it
        try:
            client = RecorderClient(connect, name=f"monitor@{os.uname().nodename}", curve=curve,
                                    connect_timeout_s=60)
        except CaptureError as exc:
            if recorder is not None and recorder.poll() is not None:
                text = (workdir / "recorder.log").read_text(errors="replace").strip().splitlines()
                raise CaptureError(f"the recorder exited ({recorder.returncode}): {text[-1] if text else ''}") from None
            raise exc
        for stream, why in not_delivering(client.status or {}).items():
            print(f"warning: stream {stream!r} is not delivering: {why}", file=sys.stderr)
        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
        window = MainWindow(client, tasks, out_dir, operator=operator, cues=Cues(enabled=speak))
        if review:
            window.open_review(review)
        window.show()
        # Frames on time, the recording first; the long-lived Qt/pyqtgraph objects stay out of the cyclic
        # GC's full collections (stalls).
        log.info("monitor display thread: %s", scheduling)
        gc.freeze()
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
        if recorder is not None and (client.status or {}).get("takes", {}).get("recording"):
            client.call("stop", {"outcome": "saved"})  # closing the one-command app saves the take it started
        client.close()
        return code
    finally:
        if recorder is not None:
            stop_recorder_process(recorder)
            if recorder.returncode == 0:
                shutil.rmtree(workdir, ignore_errors=True)


def stop_recorder_process(recorder: subprocess.Popen, timeout_s: float = 120) -> None:
    """SIGTERM: the recorder finishes any take and its final table, then exits."""
    if recorder.poll() is None:
        recorder.terminate()
        try:
            recorder.wait(timeout_s)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()
