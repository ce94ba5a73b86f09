"""``capture-app upload`` (one pass of the rig's upload queue) and ``capture-app fleet status|report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from capture_app.core.errors import CaptureError


def _upload_config(args):
    from capture_app.rig.config import UploadConfig, load_config
    config = load_config(args.config)
    upload = config.upload
    changes = {k: v for k, v in (("destination", args.dest), ("keep_local_gb", args.keep_local_gb)) if v is not None}
    if changes:
        fields = {**upload.__dict__, **changes}
        upload = UploadConfig(**fields)
    return config, upload


def cmd_upload(args) -> int:
    from capture_app.fleet.uploader import Uploader, low_priority, stop_on_signals
    config, upload = _upload_config(args)
    if not Path(args.out).is_dir():
        raise CaptureError(f"{args.out}: no such episodes folder; pass --out with the folder `record`/`serve` write to")
    low_priority()
    stop = stop_on_signals()
    uploader = Uploader(args.out, upload, config.name, progress=not args.no_progress, should_stop=lambda: stop[0],
                        calibration=config.calibration_path or None)
    result = uploader.run()
    print(f"upload to {upload.destination}: {len(result['uploaded'])} uploaded and verified, "
          f"{len(result['failed'])} failed, {len(result['deleted'])} local copies deleted by the policy, "
          f"{len(result['backlog'])} waiting", file=sys.stderr)
    for name in result["failed"]:
        print(f"  FAILED {name}: {uploader.state.entries[name].get('error')}", file=sys.stderr)
    return 1 if result["failed"] else 0


def _destination(args):
    from capture_app.fleet.destination import Destination
    options = {}
    if args.config:
        from capture_app.rig.config import load_config
        options = load_config(args.config).upload.storage_options
    return Destination(args.dest, options)


def cmd_fleet_status(args) -> int:
    from capture_app.fleet.status import read_fleet, status_text
    fleet = read_fleet(_destination(args))
    print(status_text(fleet, episodes=not args.rigs_only))
    return 1 if fleet["problems"] else 0


def cmd_fleet_report(args) -> int:
    from capture_app.fleet.report import report_html
    from capture_app.fleet.status import read_fleet
    fleet = read_fleet(_destination(args))
    Path(args.out).write_text(report_html(fleet))
    print(f"{args.out}: {len(fleet['rigs'])} rigs, {len(fleet['episodes'])} episodes", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    upload = sub.add_parser("upload", help="upload finished episodes to the [upload] destination (docs/upload.md)")
    upload.add_argument("--config", help="rig config with an [upload] table (its name is the rig's name)")
    upload.add_argument("--out", default="episodes", help="the episodes folder (default: ./episodes)")
    upload.add_argument("--dest", help="destination fsspec URL (overrides [upload] destination)")
    upload.add_argument("--keep-local-gb", type=float, help="overrides [upload] keep_local_gb (negative: never delete)")
    upload.add_argument("--no-progress", action="store_true", help="no progress bar")
    upload.set_defaults(func=cmd_upload)
    fleet = sub.add_parser("fleet", help="every rig's uploads and health, from the destination")
    views = fleet.add_subparsers(dest="view", required=True)
    status = views.add_parser("status", help="a table of rigs (heartbeats) and uploaded episodes")
    report = views.add_parser("report", help="a static HTML page with plots")
    report.add_argument("--out", required=True, help="the HTML file to write")
    for parser in (status, report):
        parser.add_argument("dest", help="the destination the rigs upload to (fsspec URL)")
        parser.add_argument("--config", help="a rig config whose [upload] storage_options reach DEST")
    status.add_argument("--rigs-only", action="store_true", help="leave out the table of episodes")
    status.set_defaults(func=cmd_fleet_status)
    report.set_defaults(func=cmd_fleet_report)
