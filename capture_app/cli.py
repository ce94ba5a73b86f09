"""``capture-app``: record, inspect, run drivers (and, as they land, monitor, resync, calibrate, doctor).

Exit statuses: 0 ok; 1 the command ran and found a problem (missing stream, layout
violation); 2 bad input (config, calibration, arguments); 4 the writer failed (the
partial file keeps what was flushed).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from capture_app.core.clock import NS_PER_S, now_ns
from capture_app.core.errors import CalibrationError, CaptureError, ConfigError, WriterError

log = logging.getLogger("capture_app")


def _load_rig(args):
    from capture_app.rig.config import load_config
    return load_config(None if getattr(args, "sim", False) or not args.config else args.config)


def _progress_line(session, elapsed: float) -> str:
    status = session.stream_status()
    parts = [f"{elapsed:6.1f} s"]
    for name, st in status.items():
        if name == "ground_truth":
            continue
        flag = "" if st.state == "ok" else f" {st.state.upper()}" + (f" ({st.reason})" if st.reason else "")
        parts.append(f"{name.replace('_tracker', '').replace('_camera', '')} {st.rate_hz:.0f}Hz{flag}")
    writer = session.writer
    if writer is not None:
        stats = writer.stats()
        parts.append(f"gaps {sum(stats.seq_gaps.values())} overflow {sum(stats.overflow.values())} "
                     f"backlog {stats.backlog_items}")
        if sum(stats.video_undecodable.values()):
            parts.append(f"video undecodable {sum(stats.video_undecodable.values())}")
    rejected = sum(st.rejected for st in status.values())
    if rejected:
        parts.append(f"rejected {rejected}")
    losses = session.loss_counts()
    for key, label in (("bus_malformed", "malformed"), ("bus_unexpected", "unexpected")):
        if losses.get(key):
            parts.append(f"{label} {losses[key]}")
    return " | ".join(parts)


def cmd_record(args) -> int:
    from capture_app.recorder.session import CaptureSession

    config = _load_rig(args)
    if args.require_check is not None:
        from capture_app.recorder.rig_check import require_recent_check
        why = require_recent_check(args.out, args.require_check)
        if why:
            print(f"error: --require-check {args.require_check:g}: {why}", file=sys.stderr)
            return 2
    if args.seed is not None:
        from capture_app.rig.config import with_changes
        config = with_changes(config, sim_seed=args.seed)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with CaptureSession(config) as session:
            missing = session.wait_for_streams(args.wait)
            if missing:
                for stream, why in session.missing_stream_reasons(missing).items():
                    print(f"error: stream {stream!r} is not delivering: {why}", file=sys.stderr)
                if not args.allow_missing:
                    print("Fix the devices above (try `capture-app doctor`) or pass --allow-missing.", file=sys.stderr)
                    return 1
            writer = session.start_episode(args.out, name=args.name, instruction=args.instruction, task=args.task,
                                           operator=args.operator)
            print(f"recording {writer.partial_path} (Ctrl-C to finish)", file=sys.stderr)
            live = _live_rerun(args.rerun, session)
            start = now_ns()
            next_print = start
            while not stop.is_set():
                elapsed = (now_ns() - start) / NS_PER_S
                if args.duration is not None and elapsed >= args.duration:
                    break
                if writer.error is not None:
                    break
                if now_ns() >= next_print:
                    print(_progress_line(session, elapsed), file=sys.stderr, flush=True)
                    next_print += NS_PER_S
                if live is not None:
                    live.log_tick(session.latest_tick)
                stop.wait(0.05)
            if live is not None:
                live.close()
            if writer.error is not None:
                try:
                    session.stop_episode()
                except CaptureError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                kept = writer.final_path if writer.stopped_cleanly else writer.partial_path
                hint = "" if writer.stopped_cleanly else f" (run `capture-app recover {kept}`)"
                print(f"kept {kept}{hint}", file=sys.stderr)
                return 4
            path = session.stop_episode()
            report = session.last_quality_report
            print(str(path))
            if report is None:
                print(f"error: the final synced table and quality report of {path} could not be written (see the "
                      f"log above); the episode keeps its live table: run `capture-app resync {path}`", file=sys.stderr)
                return 1
            from capture_app.episode.quality import format_report
            print(format_report(report), file=sys.stderr)
            return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _live_rerun(target: str | None, session):
    """The live Rerun view of ``record --rerun``, or None; a missing rerun-sdk is a clear error."""
    if target is None:
        return None
    try:
        from capture_app.tools.rerun_view import LiveRerun
        return LiveRerun(target, session.episode_started_ns, session.calibration)
    except ImportError:
        raise CaptureError("--rerun needs rerun-sdk: pip install 'capture-app[rerun]'") from None


def cmd_view(args) -> int:
    try:
        from capture_app.tools.rerun_view import rrd_entity_rows, view_episode
    except ImportError:
        raise CaptureError("capture-app view needs rerun-sdk: pip install 'capture-app[rerun]'") from None
    view_episode(args.episode, save=args.save)
    if args.save:
        rows = rrd_entity_rows(args.save)
        print(f"{args.save}: {len(rows)} entities, {sum(rows.values())} rows (open it with `rerun {args.save}`)")
    return 0


def cmd_inspect(args) -> int:
    from capture_app.episode.format import format_summary, validate_and_summarize

    status = 0
    for path in args.files:
        try:
            summary = validate_and_summarize(path)
        except (OSError, KeyError) as exc:
            print(f"error: cannot read {path} as an episode: {exc}. If it is a .partial file from a crash, run "
                  f"`capture-app recover {path}`.", file=sys.stderr)
            status = 2
            continue
        print(format_summary(summary))
        if summary.problems:
            status = max(status, 1)
    return status


def cmd_recover(args) -> int:
    from capture_app.episode.recover import recover

    for path in args.files:
        target, trimmed = recover(path)
        print(f"{target}: recovered" + (f", changed {trimmed}" if trimmed else " (every dataset reads back whole)"))
    return 0


def cmd_driver(args) -> int:
    from drivers.host import run_drivers

    config = _load_rig(args)
    names = [d.name for d in config.drivers if not d.endpoint] if args.all else args.names
    if not names:
        raise ConfigError("name at least one driver (or --all); configured: "
                          + ", ".join(d.name for d in config.drivers))
    for name in names:
        config.driver(name)  # ConfigError naming the known drivers
    endpoint = args.publish or args.connect
    if args.nice is not None and args.nice > os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # lowering priority is always allowed
    return run_drivers(config, names, endpoint, bind=bool(args.publish), parent_pid=args.parent_pid,
                       duration_s=args.duration, keys_dir=args.keys, parent_pipe=args.parent_pipe)


def cmd_keys(args) -> int:
    from capture_app.bus.remote import generate_keys

    for name, path in generate_keys(args.directory).items():
        print(f"{name}: {path}")
    print(f"Secret keys are 0600 in a 0700 directory; copy each only where it is used: driver.key_secret + app.key to a "
          f"driver host (`capture-app driver NAME --publish tcp://0.0.0.0:PORT --keys DIR`), monitor.key_secret + "
          f"app.key to a monitor (`capture-app monitor --connect tcp://... --keys DIR`); the recorder's rig config "
          f"sets [bus] keys = \"{args.directory}\" (app.key_secret, driver.key, monitor.key).")
    return 0


def cmd_monitor(args) -> int:
    from capture_app.monitor.app import run_monitor

    if getattr(args, "panel", None):  # with the field panel beside the window (docs/panel.md)
        from capture_app.panel.commands import monitor_with_panel
        if not args.connect:
            _load_rig(args)
        return monitor_with_panel(args, run_monitor)
    rig_name = None
    if not args.connect:
        rig_name = _load_rig(args).name  # a bad rig config is reported here, before a recorder is started on it
    curve = None
    if args.keys:
        from capture_app.bus.remote import load_keys
        curve = load_keys(f"{args.keys}/monitor.key_secret", f"{args.keys}/app.key")  # the monitors' key
    return run_monitor(None if args.sim else args.config, out_dir=args.out, connect=args.connect, curve=curve,
                       tasks_path=args.tasks, operator=args.operator, screenshot=args.screenshot, after_s=args.after,
                       review=args.review, speak=args.speak, rig_name=rig_name,
                       new_recorder=getattr(args, "new_recorder", False))


def cmd_serve(args) -> int:
    """The recorder process: the rig, the synchronizer and the writer, headless, driven by monitors."""
    from capture_app.recorder.control_server import ControlServer
    from capture_app.recorder.session import CaptureSession
    from capture_app.recorder.takes import Takes

    config = _load_rig(args)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    curve = None
    if args.control.startswith("tcp://") and config.bus_keys_dir:  # only monitors holding monitor.key_secret
        from capture_app.bus.remote import load_keys
        curve = load_keys(f"{config.bus_keys_dir}/app.key_secret",
                          allowed_client_files=(f"{config.bus_keys_dir}/monitor.key",))
    from capture_app.recorder.control_server import check_control_endpoint
    check_control_endpoint(args.control, curve)  # before the rig starts: tcp needs keys, ipc a private directory
    try:
        with CaptureSession(config) as session:
            for stream, why in session.missing_stream_reasons(session.wait_for_streams(args.wait)).items():
                print(f"warning: stream {stream!r} is not delivering: {why}", file=sys.stderr)
            takes = Takes(session, args.out)
            server = ControlServer(session, takes, args.control, curve=curve).start()
            print(f"recorder for rig {config.name}: control {server.control_endpoint}, state "
                  f"{server.state_endpoint}; episodes in {args.out}", file=sys.stderr, flush=True)
            from capture_app.handsfree.runner import Handsfree  # gestures, pedal, cues ([handsfree])
            try:
                handsfree = Handsfree(session, takes, server).start()
            except Exception:
                server.close()
                raise
            panel = None
            if args.panel:  # the field panel, its own process (docs/panel.md)
                from capture_app.panel.commands import start_panel_process
                panel = start_panel_process(server.control_endpoint, *args.panel, keys_dir=config.bus_keys_dir)
            from capture_app.rig.recorders import registered  # monitors of this user find it (--sim attaches)
            uploads = None
            if config.upload.destination and getattr(args, "config", None):  # [upload]: between takes only
                from capture_app.fleet.background import BackgroundUploads
                uploads = BackgroundUploads.for_rig(args.config, args.out, config.upload.interval_s,
                                                    busy=lambda: session.recording or takes.finishing > 0).start()
            try:
                with registered(server.control_endpoint, config.name, os.path.abspath(args.out)):
                    while not stop.wait(0.2):
                        pass
                if session.recording:  # a stopped recorder saves the take it was recording
                    print(f"saved {takes.stop('saved', by='recorder shutdown')['path']}", file=sys.stderr)
                takes.wait_finalized()
            finally:
                handsfree.close()
                if panel is not None:
                    panel.terminate()
                    panel.wait(30)
                if uploads is not None:
                    uploads.close()
                server.close()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_doctor(args) -> int:
    from capture_app.tools.doctor import format_checks, run_doctor

    config = _load_rig(args)
    checks, all_present = run_doctor(config)
    print(f"rig {config.name} ({config.source_path})")
    print(format_checks(checks))
    if not all_present:
        print("Some configured devices are not usable: see FAIL above.", file=sys.stderr)
    if args.live:
        from capture_app.tools.doctor_live import format_timings, live_check
        print(f"\nstreaming {args.seconds:g} s from each device:")
        timings, errors = live_check(config, args.seconds, include_simulated=args.include_sim)
        print(format_timings(timings, errors))
        all_present = all_present and not errors and not any(t.problems for t in timings)
    return 0 if all_present else 1


def cmd_resync(args) -> int:
    from calibration.store import CalibrationStore
    from capture_app.recorder.resync import resync_episode

    calibration = CalibrationStore(args.calibration_dir).get(args.calibration) if args.calibration else None
    from capture_app.recorder.final_table import finalize_episode
    from capture_app.episode.quality import format_report

    for path in args.files:
        version = resync_episode(path, calibration)
        which = calibration.calibration_id if calibration else "the episode's own calibration"
        print(f"{path}: /synced version {version} computed with {which}")
        print(format_report(finalize_episode(path)))  # the quality report of the new table, the rig's thresholds
    return 0


def cmd_check(args) -> int:
    from pathlib import Path

    from capture_app.recorder.rig_check import analyse, run_check, store_verdict
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.analyse:
        path, lines = Path(args.analyse), analyse(args.analyse)
        store_verdict(path, lines, Path(args.out))
    else:
        path, lines = run_check(_load_rig(args), args.out, say=lambda text: print(f">>> {text}", flush=True),
                                lead_s=args.lead)
    print(f"rig check {path}:")
    for line in lines:
        print("  " + line.line())
    passed = all(line.passed for line in lines)
    print("rig check PASSED" if passed else "rig check FAILED: fix the lines marked FAIL and run it again")
    return 0 if passed else 1


def cmd_drift(args) -> int:
    from capture_app.tools.drift_report import main as drift_main
    return drift_main(args.file, args.write_calibration)


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
