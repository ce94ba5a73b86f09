"""``capture-app``: record, inspect, run drivers (and, as they land, monitor, resync, calibrate, doctor).

Exit statuses: 0 ok; 1 the command ran and found a problem (missing stream, layout
violation); 2 bad input (config, calibration, arguments); 4 the writer failed (the
partial file keeps what was flushed).
"""

from __future__ import annotations

import argparse
import logging
import sys

from capture_app.core.errors import CalibrationError, CaptureError, ConfigError, WriterError
from capture_app.tools.file_commands import cmd_drift, cmd_inspect, cmd_recover, cmd_resync, cmd_view
from capture_app.tools.live_commands import cmd_check, cmd_monitor, cmd_record, cmd_serve
from capture_app.tools.rig_commands import cmd_doctor, cmd_driver, cmd_keys

log = logging.getLogger("capture_app")


def positive_seconds(text: str) -> float:
    """argparse type: a duration in seconds that is a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} s: give a duration above 0 seconds")
    return value


def control_endpoint(text: str) -> str:
    """argparse type: a recorder's control endpoint, ipc://PATH or tcp://HOST:PORT (docs/control.md)."""
    from capture_app.core.values import checked_endpoint
    try:
        return checked_endpoint("control endpoint", text, inproc=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (docs/control.md)") from None


def bus_endpoint(text: str) -> str:
    """argparse type: a driver's bus endpoint, ipc://PATH or tcp://HOST:PORT (docs/protocol.md)."""
    from capture_app.core.values import checked_endpoint
    try:
        return checked_endpoint("endpoint", text, inproc=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (docs/protocol.md)") from None


def wait_seconds(text: str) -> float:
    """argparse type: seconds to wait, a finite number from 0 to 3600."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text} s: give a wait from 0 to 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capture-app", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command")

    record = sub.add_parser("record", help="record one episode headless")
    source = record.add_mutually_exclusive_group()
    source.add_argument("--sim", action="store_true", help="use the embedded simulated rig (the default)")
    source.add_argument("--config", help="rig config TOML file")
    record.add_argument("--duration", type=positive_seconds, help="seconds to record, > 0 (default: until Ctrl-C)")
    record.add_argument("--out", default="episodes", help="output directory (default: ./episodes)")
    record.add_argument("--name", help="episode name (default: date-time and task)")
    record.add_argument("--instruction", default="", help="language instruction for the whole episode")
    record.add_argument("--task", default="", help="task name")
    record.add_argument("--operator", default="", help="operator name")
    record.add_argument("--seed", type=int, help="simulated rig seed")
    record.add_argument("--wait", type=wait_seconds, default=5.0, help="seconds to wait for every stream before recording")
    record.add_argument("--allow-missing", action="store_true", help="record even if a stream is not delivering")
    record.add_argument("--rerun", nargs="?", const="spawn", metavar="TARGET",
                        help="stream the synced ticks to Rerun: a spawned viewer (no TARGET), a viewer's "
                             "rerun+http://HOST:PORT/proxy address, or a FILE.rrd")
    record.add_argument("--require-check", type=float, metavar="HOURS", help="refuse to record without a passed "
                        "`capture-app check` in --out from the last HOURS hours")
    record.set_defaults(func=cmd_record)

    check = sub.add_parser("check", help="scripted ~30 s rig check (stored as its own episode), one verdict line per check")
    check.add_argument("--config", help="rig config TOML (default: the simulated rig)")
    check.add_argument("--sim", action="store_true", help="use the simulated rig")
    check.add_argument("--out", default="episodes", help="where the check episode and rig_check_last.json go")
    check.add_argument("--lead", type=positive_seconds, default=8.0, help="seconds from start to the first prompt")
    check.add_argument("--analyse", metavar="EPISODE", help="recompute the verdict of a recorded check episode")
    check.set_defaults(func=cmd_check)

    view = sub.add_parser("view", help="an episode in the Rerun viewer: 3D world, hands, cameras, action, subtasks")
    view.add_argument("episode", help="episode file (.h5)")
    view.add_argument("--save", metavar="FILE.rrd", help="save a recording to open later instead of spawning a viewer")
    view.set_defaults(func=cmd_view)

    recover = sub.add_parser("recover", help="make an episode interrupted by a crash (.partial, or .h5 still recording) readable again")
    recover.add_argument("files", nargs="+")
    recover.set_defaults(func=cmd_recover)

    monitor = sub.add_parser("monitor", help="the live monitor window (the default command)")
    source = monitor.add_mutually_exclusive_group()
    source.add_argument("--sim", action="store_true", help="use the embedded simulated rig (the default)")
    source.add_argument("--config", help="rig config TOML file")
    monitor.add_argument("--out", default="episodes", help="where episodes are saved (default: ./episodes)")
    monitor.add_argument("--tasks", help="task templates YAML (default: the embedded examples)")
    monitor.add_argument("--operator", default="", help="operator name")
    monitor.add_argument("--review", help="open this episode for review")
    monitor.add_argument("--screenshot", help="save a PNG of the window here after --after seconds and exit (offscreen without a display)")
    monitor.add_argument("--after", type=positive_seconds, default=3.0, help="seconds before the screenshot (default 3)")
    monitor.add_argument("--connect", type=control_endpoint, help="attach to a running recorder's control endpoint (from `capture-app "
                                           "serve`) instead of starting one")
    monitor.add_argument("--keys", help="with --connect tcp://: the CurveZMQ key directory from `capture-app keys`")
    monitor.add_argument("--new-recorder", action="store_true",
                         help="start a new recorder even if one of this user is running on the same rig (by default "
                              "the monitor attaches to it)")
    monitor.add_argument("--speak", action="store_true", help="spoken cues for start, stop and subtask marks "
                                                              "(espeak-ng if installed, else a beep)")
    from capture_app.panel.commands import panel_address as _panel_address
    monitor.add_argument("--panel", type=_panel_address, metavar="[HOST:]PORT",
                         help="also start the field panel (a web page for a phone, docs/panel.md) on the same recorder")
    monitor.set_defaults(func=cmd_monitor)

    serve = sub.add_parser("serve", help="the headless recorder that monitors attach to (docs/control.md)")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--sim", action="store_true", help="use the embedded simulated rig (the default)")
    source.add_argument("--config", help="rig config TOML file")
    serve.add_argument("--control", required=True, type=control_endpoint,
                       help="control endpoint to bind: ipc://PATH in a directory only you can use, or tcp://HOST:PORT "
                            "(the state feed then binds PORT+1; needs [bus] keys, loopback too)")
    serve.add_argument("--out", default="episodes", help="output directory (default: ./episodes)")
    serve.add_argument("--wait", type=wait_seconds, default=5.0,
                       help="seconds to wait for every stream before serving (default 5)")
    from capture_app.panel.commands import panel_address
    serve.add_argument("--panel", type=panel_address, metavar="[HOST:]PORT",
                       help="also start the field panel (a web page for a phone, docs/panel.md) on PORT, loopback "
                            "unless HOST is given (then it needs the token it prints)")
    serve.set_defaults(func=cmd_serve)

    inspect = sub.add_parser("inspect", help="summarise episodes and check their layout")
    inspect.add_argument("files", nargs="+")
    inspect.set_defaults(func=cmd_inspect)

    doctor = sub.add_parser("doctor", help="check SDKs, devices, udev rules and permissions of a rig")
    doctor.add_argument("--config", help="rig config TOML (default: the simulated rig)")
    doctor.add_argument("--live", action="store_true",
                        help="also stream from each device and report rate, timestamp domain, clock offset and jitter")
    doctor.add_argument("--seconds", type=positive_seconds, default=3.0, help="with --live: seconds per device (default 3)")
    doctor.add_argument("--include-sim", action="store_true", help="with --live: also the simulated devices")
    doctor.set_defaults(func=cmd_doctor)

    resync = sub.add_parser("resync", help="recompute the 20 Hz synced table of recorded episodes")
    resync.add_argument("files", nargs="+")
    resync.add_argument("--calibration", help="a calibration JSON file, or a version id (or 'current') from "
                                              "--calibration-dir; default: the one embedded in each episode")
    resync.add_argument("--calibration-dir", default="rig-calibration", help="calibration versions (for a version id)")
    resync.set_defaults(func=cmd_resync)

    drift = sub.add_parser("drift", help="what the live drift watch found in an episode; the calibration that repairs it")
    drift.add_argument("file")
    drift.add_argument("--write-calibration", metavar="OUT", help="write the episode's calibration corrected by the "
                       "estimated mount slip (and latency change) to OUT, for `resync --calibration OUT`")
    drift.set_defaults(func=cmd_drift)

    driver = sub.add_parser("driver", help="run drivers in this process, publishing on the bus")
    driver.add_argument("names", nargs="*", help="driver names from the rig config")
    driver.add_argument("--all", action="store_true", help="every driver of the config without an endpoint")
    driver.add_argument("--config", help="rig config TOML (default: the simulated rig)")
    where = driver.add_mutually_exclusive_group(required=True)
    where.add_argument("--publish", type=bus_endpoint, help="bind this endpoint (ipc://PATH in a directory only you "
                                                            "can use, or tcp://HOST:PORT with --keys)")
    where.add_argument("--connect", type=bus_endpoint, help="connect to the app's bus endpoint")
    driver.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    driver.add_argument("--parent-pipe", type=int, help=argparse.SUPPRESS)
    driver.add_argument("--duration", type=positive_seconds, help="stop after this many seconds (> 0)")
    driver.add_argument("--nice", type=int, default=None,
                        help="run at this niceness, -20..19, if that is lower priority than now (default: unchanged)")
    driver.add_argument("--keys", help="CurveZMQ key directory (from `capture-app keys`); required for tcp://")

    keys = sub.add_parser("keys", help="create CurveZMQ keys for drivers on other hosts")
    keys.add_argument("directory")
    keys.set_defaults(func=cmd_keys)
    driver.set_defaults(func=cmd_driver)
    from capture_app.tools.calibrate import add_parser as add_calibrate
    add_calibrate(sub)
    from capture_app.dataset.commands import add_parsers as add_dataset_commands
    add_dataset_commands(sub)
    from capture_app.panel.commands import add_parser as add_panel
    add_panel(sub, control_endpoint)
    from capture_app.fleet.commands import add_parsers as add_fleet_commands
    add_fleet_commands(sub)
    from capture_app.handsfree.enrol_command import add_parser as add_voice_enrol
    add_voice_enrol(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") for a in argv)  # accepted before or after the subcommand
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    if not argv or argv[0] not in parser._subparsers._group_actions[0].choices and argv[0] not in ("-h", "--help"):
        argv = ["monitor", *argv]  # `capture-app [--sim]` = the monitor
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, CalibrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WriterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except CaptureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file that is missing, locked or not HDF5
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
