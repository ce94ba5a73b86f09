"""Each rig's heartbeat: one JSON object beside its uploads (``<rig>/heartbeat.json``, docs/upload.md,
"Heartbeat"), rewritten after every upload pass, so a lead sees every rig's health from the destination."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from capture_app import __version__
from capture_app.fleet.destination import Destination
from capture_app.fleet.state import UploadState

HEARTBEAT_FORMAT = "capture-app-heartbeat"
HEARTBEAT_VERSION = 1
HEARTBEAT_NAME = "heartbeat.json"
LAST_VERDICTS = 10
RIG_CHECK_GLOB = "rig-check*.json"  # capture-app doctor reports saved in the episodes folder, if any


def build_heartbeat(rig: str, folder: Path, state: UploadState, now: float | None = None) -> dict:
    """The heartbeat from the upload state (every episode this rig ever queued) and the local folder."""
    now = time.time() if now is None else now
    infos = [(name, e) for name, e in state.entries.items() if e.get("info")]
    infos.sort(key=lambda item: str(item[1]["info"].get("created") or "") + item[0])
    today = time.strftime("%Y-%m-%d", time.localtime(now))
    backlog = [e for e in state.entries.values() if e["status"] in ("pending", "uploading")]
    checks = sorted(folder.glob(RIG_CHECK_GLOB), key=lambda p: p.stat().st_mtime)
    last_check = None
    if checks:
        try:
            last_check = {"file": checks[-1].name, "time": checks[-1].stat().st_mtime,
                          "result": json.loads(checks[-1].read_text()).get("result")}
        except (OSError, ValueError):
            last_check = {"file": checks[-1].name, "time": checks[-1].stat().st_mtime, "result": "unreadable"}
    calibration_ids = [i["info"].get("calibration_id") for _, i in infos if i["info"].get("calibration_id")]
    disk = shutil.disk_usage(folder)
    return {
        "format": HEARTBEAT_FORMAT, "version": HEARTBEAT_VERSION, "rig": rig, "software_version": __version__,
        "time": now, "calibration_id": calibration_ids[-1] if calibration_ids else "",
        "last_rig_check": last_check,
        "takes_today": sum(1 for _, e in infos if str(e["info"].get("created") or "").startswith(today)),
        "takes_total": len(infos),
        "hours_recorded": sum(float(e["info"].get("duration_s") or 0) for _, e in infos) / 3600,
        "last_verdicts": [{"episode": Path(n).stem, "verdict": e["info"].get("verdict")}
                          for n, e in infos[-LAST_VERDICTS:]],
        "uploaded": sum(1 for e in state.entries.values() if e["status"] in ("verified", "deleted")),
        "upload_backlog": {"episodes": len(backlog), "bytes": sum(int(e.get("size") or 0) for e in backlog)},
        "free_disk_bytes": disk.free,
    }


def write_heartbeat(dest: Destination, rig: str, folder: Path, state: UploadState) -> dict:
    beat = build_heartbeat(rig, Path(folder), state)
    dest.write_json(f"{rig}/{HEARTBEAT_NAME}", beat)
    return beat
