"""The fleet view over a destination: every rig's heartbeat and every uploaded episode's manifest
(``capture-app fleet status DEST``: tables on the terminal)."""

from __future__ import annotations

import time

from capture_app.fleet.destination import Destination
from capture_app.fleet.heartbeat import HEARTBEAT_NAME
from capture_app.fleet.manifest import MANIFEST_NAME, check_manifest


def read_fleet(dest: Destination) -> dict:
    """{"rigs": [heartbeat...], "episodes": [manifest...], "problems": [text...]} from the destination."""
    rigs, episodes, problems = [], [], []
    for key in dest.glob(f"*/{HEARTBEAT_NAME}"):
        try:
            rigs.append(dest.read_json(key))
        except (OSError, ValueError) as exc:
            problems.append(f"{key}: unreadable heartbeat ({exc})")
    for key in dest.glob(f"*/episodes/*/{MANIFEST_NAME}"):
        try:
            manifest = dest.read_json(key)
        except (OSError, ValueError) as exc:
            problems.append(f"{key}: unreadable manifest ({exc})")
            continue
        problems += check_manifest(manifest, key)
        episodes.append(manifest)
    rigs.sort(key=lambda r: r.get("rig", ""))
    episodes.sort(key=lambda m: (m.get("rig", ""), m.get("episode", "")))
    return {"rigs": rigs, "episodes": episodes, "problems": problems}


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.0f} d"


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def status_text(fleet: dict, now: float | None = None, episodes: bool = True) -> str:
    now = time.time() if now is None else now
    rig_rows = []
    for r in fleet["rigs"]:
        verdicts = [v.get("verdict") or "none" for v in r.get("last_verdicts", [])]
        ok, redo = sum(v == "ok" for v in verdicts), sum(v == "redo" for v in verdicts)
        other = len(verdicts) - ok - redo  # no quality report (an unreadable or unfinished episode)
        check = r.get("last_rig_check") or {}
        rig_rows.append([r.get("rig"), r.get("software_version"), _age(now - r.get("time", 0)) + " ago",
                         r.get("calibration_id") or "-", check.get("result", "-") if check else "-",
                         r.get("takes_today"), f"{r.get('hours_recorded', 0):.2f}",
                         f"{ok} ok / {redo} redo" + (f" / {other} none" if other else ""), r.get("uploaded"),
                         f"{r['upload_backlog']['episodes']} ({r['upload_backlog']['bytes'] / 1e9:.2f} GB)",
                         f"{r.get('free_disk_bytes', 0) / 1e9:.1f} GB"])
    text = [_table(["rig", "version", "heartbeat", "calibration", "rig check", "today", "hours", "last verdicts",
                    "uploaded", "backlog", "free disk"], rig_rows)]
    if episodes:
        rows = []
        for m in fleet["episodes"]:
            info = m.get("episode_info", {})
            size = sum(f.get("size", 0) for f in m.get("files", []))
            rows.append([m.get("rig"), m.get("episode"), f"{size / 1e6:.1f} MB",
                         f"{float(info.get('duration_s') or 0):.1f} s", info.get("verdict") or "-",
                         info.get("operator") or "-", m["files"][0]["sha256"][:12] if m.get("files") else "-",
                         time.strftime("%Y-%m-%d %H:%M", time.localtime(m.get("uploaded_at", 0)))])
        text += ["", f"{len(rows)} uploaded episodes (verified, with manifests):",
                 _table(["rig", "episode", "size", "duration", "verdict", "operator", "sha256", "uploaded"], rows)]
    for p in fleet["problems"]:
        text.append(f"PROBLEM: {p}")
    return "\n".join(text)
