"""``capture-app panel``: the phone page's web server, attached to a recorder (started here unless --connect).

A separate process from the recorder, fed by its state feed like any monitor (docs/control.md); niced so
the recording gets the CPU first. Prints the URL (with the token when one is needed) and, off loopback,
a QR code of it for a phone to scan.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from capture_app.core.errors import CaptureError, ConfigError
from capture_app.panel.access import Access, is_loopback

PANEL_NICENESS = 10
DEFAULT_PORT = 8600


def panel_url(host: str, port: int, token: str | None) -> str:
    """The URL to open (a wildcard bind shows this host's name, which a phone on the network can reach)."""
    shown = os.uname().nodename if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def print_url(url: str, qr: bool, out=sys.stderr) -> None:
    print(f"panel: {url}", file=out, flush=True)
    if qr:
        import segno
        print("scan with the phone (same network as this computer):", file=out)
        segno.make(url, error="m").terminal(out=out, compact=True)
        out.flush()


def run_panel(*, connect: str | None, config_path: str | None = None, out_dir: str = "episodes",
              host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
              tasks_path: str | None = None, operator: str = "", curve=None, thumb_hz: float | None = None) -> int:
    """Serve the panel until SIGINT / SIGTERM; with ``connect`` None, start a recorder (``capture-app serve``)
    on the rig config (the simulated rig without one) and stop it on exit."""
    try:
        from aiohttp import web
    except ImportError:
        raise ConfigError("the panel needs aiohttp: pip install 'capture-app[panel]'") from None
    from calibration.model import calibration_from_json
    from capture_app.monitor.app import start_recorder_process, stop_recorder_process
    from capture_app.panel.feed import PanelFeed
    from capture_app.panel.model import PanelModel
    from capture_app.panel.server import PanelServer
    from capture_app.panel.thumbs import THUMB_HZ
    from capture_app.rig.tasks import load_tasks

    tasks = load_tasks(tasks_path)
    access = Access.for_bind(host, token)
    if not is_loopback(host):
        try:
            import segno  # noqa: F401  (checked before anything starts: the QR code is how a phone gets the token)
        except ImportError:
            raise ConfigError("off loopback the panel prints a QR code: pip install 'capture-app[panel]' (segno)") from None
    os.nice(PANEL_NICENESS)
    recorder, workdir = None, None
    if connect is None:
        workdir = Path(tempfile.mkdtemp(prefix="capture-app-panel-"))
        connect = f"ipc://{workdir / 'control'}"
        recorder = start_recorder_process(config_path, out_dir, connect, workdir / "recorder.log")
        print(f"recorder: pid {recorder.pid}, control {connect}, log {workdir / 'recorder.log'}", file=sys.stderr)
    feed = None
    try:
        try:
            feed = PanelFeed(connect, name=f"panel@{os.uname().nodename}", curve=curve, connect_timeout_s=60)
        except CaptureError:
            if recorder is not None and recorder.poll() is not None:
                text = (workdir / "recorder.log").read_text(errors="replace").strip().splitlines()
                raise CaptureError(f"the recorder exited ({recorder.returncode}): {text[-1] if text else ''}") from None
            raise
        calibration = calibration_from_json(feed.hello["calibration"], f"recorder {connect}")
        server = PanelServer(feed, PanelModel(tasks, operator), access, calibration.ego_intrinsics,
                             THUMB_HZ if thumb_hz is None else thumb_hz)
        asyncio.run(_serve(server, host, port, access, web))
        return 0
    finally:
        if feed is not None:
            feed.close()
        if recorder is not None:
            stop_recorder_process(recorder)
            if recorder.returncode == 0:
                shutil.rmtree(workdir, ignore_errors=True)


async def _serve(server, host: str, port: int, access: Access, web) -> None:
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"panel: cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    bound_port = runner.addresses[0][1] if runner.addresses else port
    print_url(panel_url(host, bound_port, access.token), qr=access.token is not None and not is_loopback(host))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
