"""The ``capture-app panel`` subcommand, and the panel process ``serve --panel`` starts beside a recorder."""

from __future__ import annotations

import argparse
import subprocess
import sys

from capture_app.rig.child_process import child_env, cli_command


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value}: give 0 (any free port) to 65535")
    return value


def panel_address(text: str) -> tuple[str, int]:
    """argparse type for ``serve --panel``: ``PORT`` (loopback) or ``HOST:PORT``."""
    host, _, port = text.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), port_number(port)


def add_parser(sub, control_endpoint) -> None:
    """Add ``panel`` to the CLI's subparsers; ``control_endpoint`` is the CLI's endpoint checker."""
    panel = sub.add_parser("panel", help="the field panel: a web page for a phone that watches and runs a recorder "
                                         "(docs/panel.md)")
    source = panel.add_mutually_exclusive_group()
    source.add_argument("--connect", type=control_endpoint, help="attach to a running recorder's control endpoint "
                                                                 "(from `capture-app serve`)")
    source.add_argument("--sim", action="store_true", help="start a recorder on the embedded simulated rig (the default)")
    source.add_argument("--config", help="start a recorder on this rig config TOML file")
    panel.add_argument("--keys", help="with --connect tcp://: the CurveZMQ key directory from `capture-app keys`")
    panel.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this computer "
                                                           "only; 0.0.0.0 for a phone on the network: needs the token)")
    panel.add_argument("--port", type=port_number, default=8600, help="TCP port (default 8600; 0: any free port)")
    panel.add_argument("--token", help="the access token (default: a new random one when --host is not loopback; "
                                       "given on loopback, it is required there too)")
    panel.add_argument("--out", default="episodes", help="where a recorder started here saves episodes")
    panel.add_argument("--tasks", help="task templates YAML (default: the embedded examples)")
    panel.add_argument("--operator", default="", help="operator name for the take info")
    panel.add_argument("--thumb-hz", type=float, default=None, help="thumbnails a second (default 2; 0: none)")
    panel.add_argument("--new-recorder", action="store_true",
                       help="start a new recorder even if one of this user is running on the same rig (by default "
                            "the panel attaches to it, as the monitor does)")
    panel.set_defaults(func=cmd_panel)


def _running_recorder(args) -> dict | None:
    """Without --connect: a running recorder of this user on the same rig (the monitor's registry), unless
    --new-recorder. The rig config is loaded here, so a bad one is reported before anything starts."""
    if args.connect or getattr(args, "new_recorder", False):
        return None
    from capture_app.monitor.app import attachable_recorder
    from capture_app.rig.config import load_config
    running = attachable_recorder(load_config(None if args.sim or not args.config else args.config).name)
    if running is not None:
        print(f"attaching to the running recorder of rig {running['rig']!r} (pid {running['pid']}, control "
              f"{running['control']}); --new-recorder starts another", file=sys.stderr)
    return running


def cmd_panel(args) -> int:
    from capture_app.panel.app import run_panel

    running = _running_recorder(args)
    if running is not None:
        args.connect, args.out = running["control"], running.get("out") or args.out
    curve = None
    if args.keys:
        from capture_app.bus.remote import load_keys
        curve = load_keys(f"{args.keys}/monitor.key_secret", f"{args.keys}/app.key")  # the monitors' key
    return run_panel(connect=args.connect, config_path=args.config, out_dir=args.out, host=args.host, port=args.port,
                     token=args.token, tasks_path=args.tasks, operator=args.operator, curve=curve,
                     thumb_hz=args.thumb_hz)


def start_panel_process(control: str, host: str, port: int, keys_dir: str | None = None) -> subprocess.Popen:
    """``capture-app panel --connect control`` as a child of ``serve --panel``: its own process (a crash or a
    kill of the panel never touches the recorder); its URL and QR code go to this terminal."""
    command = cli_command("panel", "--connect", control, "--host", host, "--port", str(port))
    if keys_dir and control.startswith("tcp://"):
        command += ["--keys", keys_dir]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, env=child_env())


def monitor_with_panel(args, run_monitor) -> int:
    """``capture-app monitor --panel [HOST:]PORT``: the Qt window and the field panel on one recorder (the one at
    ``--connect``, else one started here as ``monitor`` starts it, stopped at the end: it saves a take in progress)."""
    import shutil
    import tempfile
    from pathlib import Path

    from capture_app.monitor.app import start_recorder_process, stop_recorder_process

    running = _running_recorder(args)
    if running is not None:
        args.out = running.get("out") or args.out
    recorder, workdir, connect = None, None, running["control"] if running else args.connect
    if connect is None:
        workdir = Path(tempfile.mkdtemp(prefix="capture-app-monitor-"))
        connect = f"ipc://{workdir / 'control'}"
        recorder = start_recorder_process(None if args.sim else args.config, args.out, connect, workdir / "recorder.log")
    panel = start_panel_process(connect, *args.panel, keys_dir=args.keys)
    try:
        curve = None
        if args.keys:
            from capture_app.bus.remote import load_keys
            curve = load_keys(f"{args.keys}/monitor.key_secret", f"{args.keys}/app.key")
        return run_monitor(None, out_dir=args.out, connect=connect, curve=curve, tasks_path=args.tasks,
                           operator=args.operator, screenshot=args.screenshot, after_s=args.after,
                           review=args.review, speak=args.speak)
    finally:
        panel.terminate()
        panel.wait(30)
        if recorder is not None:
            stop_recorder_process(recorder)
            if recorder.returncode == 0:
                shutil.rmtree(workdir, ignore_errors=True)
