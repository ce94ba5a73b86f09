"""The commands on recorded episodes: ``view``, ``inspect``, ``recover``, ``resync``, ``drift`` (capture_app.cli parses them).

Exit statuses as in ``capture_app.cli``."""

from __future__ import annotations

import logging
import sys

from capture_app.core.errors import CaptureError

log = logging.getLogger("capture_app")


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


def cmd_drift(args) -> int:
    from capture_app.tools.drift_report import main as drift_main
    return drift_main(args.file, args.write_calibration)
