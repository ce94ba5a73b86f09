"""The commands that run the recorder: ``record``, ``serve``, ``monitor``, ``check`` (capture_app.cli parses them).

Exit statuses as in ``capture_app.cli``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from capture_app.core.clock import NS_PER_S, now_ns
from capture_app.core.errors import CaptureError

log = logging.getLogger("capture_app")


def load_rig(args):
    """The rig config named by --config (or the embedded simulated rig with --sim or no --config)."""
    from capture_app.rig.config import load_config
    return load_config(None if getattr(args, "sim", False) or not args.config else args.config)


def progress_line(session, elapsed: float) -> str:
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

    config = load_rig(args)
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
                    print(progress_line(session, elapsed), file=sys.stderr, flush=True)
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


def cmd_monitor(args) -> int:
    from capture_app.monitor.app import run_monitor

    if getattr(args, "panel", None):  # with the field panel beside the window (docs/panel.md)
        from capture_app.panel.commands import monitor_with_panel
        if not args.connect:
            load_rig(args)
        return monitor_with_panel(args, run_monitor)
    rig_name = None
    if not args.connect:
        rig_name = load_rig(args).name  # a bad rig config is reported here, before a recorder is started on it
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

    config = load_rig(args)
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


def cmd_check(args) -> int:
    from pathlib import Path

    from capture_app.recorder.rig_check import analyse, run_check, store_verdict
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.analyse:
        path, lines = Path(args.analyse), analyse(args.analyse)
        store_verdict(path, lines, Path(args.out))
    else:
        path, lines = run_check(load_rig(args), args.out, say=lambda text: print(f">>> {text}", flush=True),
                                lead_s=args.lead)
    print(f"rig check {path}:")
    for line in lines:
        print("  " + line.line())
    passed = all(line.passed for line in lines)
    print("rig check PASSED" if passed else "rig check FAILED: fix the lines marked FAIL and run it again")
    return 0 if passed else 1
