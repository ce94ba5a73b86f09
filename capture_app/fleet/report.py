"""``capture-app fleet report DEST --out report.html``: one static page (inline SVG plots, no script, no
server) over every rig's heartbeat and every uploaded episode's manifest: hours per day, task and
operator, quality verdicts, valid-fraction distributions, per-rig health."""

from __future__ import annotations

import html
import time
from collections import defaultdict

from capture_app.fleet.status import status_text

BAR_W, BAR_GAP, PLOT_H = 28, 6, 160


def _number(value: float) -> str:
    return "0" if abs(value) < 0.005 else f"{value:.3g}"


def bar_chart(title: str, values: dict[str, float], unit: str = "", color: str = "#3b7dd8") -> str:
    """An SVG bar chart of ``values`` (label -> value) with the values written over the bars."""
    items = list(values.items())
    top = max([v for _, v in items] + [1e-9])
    width = max(max(len(items), 1) * (BAR_W + BAR_GAP) + 60, 8 * len(title) + 20)  # the title fits
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PLOT_H + 100}" role="img">',
             f'<title>{html.escape(title)}</title>',
             f'<text x="4" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, value) in enumerate(items):
        h = value / top * PLOT_H
        x, y = 40 + i * (BAR_W + BAR_GAP), 34 + PLOT_H - h
        parts.append(f'<rect x="{x}" y="{y:.1f}" width="{BAR_W}" height="{h:.1f}" fill="{color}"/>')
        parts.append(f'<text x="{x + BAR_W / 2}" y="{y - 3:.1f}" font-size="10" text-anchor="middle">'
                     f'{_number(value)}{html.escape(unit)}</text>')
        parts.append(f'<text x="{x + BAR_W / 2}" y="{PLOT_H + 46}" font-size="10" text-anchor="end" '
                     f'transform="rotate(-40 {x + BAR_W / 2} {PLOT_H + 46})">{html.escape(str(label)[:24])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(title: str, values: list[float], bins: int = 10) -> str:
    """Counts of ``values`` in [0, 1] in ``bins`` equal bins."""
    counts = [0] * bins
    for v in values:
        counts[min(int(v * bins), bins - 1)] += 1
    return bar_chart(title, {f"{k / bins:.1f}-{(k + 1) / bins:.1f}": c for k, c in enumerate(counts)},
                     color="#6a9f3b")


def report_html(fleet: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    per_day, per_task, per_operator, verdicts = (defaultdict(float), defaultdict(float), defaultdict(float),
                                                 defaultdict(float))
    left, right = [], []
    for m in fleet["episodes"]:
        info = m.get("episode_info", {})
        hours = float(info.get("duration_s") or 0) / 3600
        day = str(info.get("created") or "")[:10] or time.strftime("%Y-%m-%d", time.localtime(m.get("uploaded_at", 0)))
        per_day[day] += hours
        per_task[info.get("task") or info.get("instruction") or "-"] += hours
        per_operator[info.get("operator") or "-"] += hours
        verdicts[info.get("verdict") or "none"] += 1
        for values, key in ((left, "left_valid"), (right, "right_valid")):
            if isinstance(info.get(key), (int, float)):
                values.append(float(info[key]))
    rigs = fleet["rigs"]
    plots = [bar_chart("hours per day", dict(sorted(per_day.items())), " h"),
             bar_chart("hours per task", dict(per_task), " h"),
             bar_chart("hours per operator", dict(per_operator), " h"),
             bar_chart("quality verdicts (episodes)", dict(verdicts), "", "#c0504d"),
             histogram("left hand valid fraction (episodes)", left),
             histogram("right hand valid fraction (episodes)", right),
             bar_chart("free disk per rig", {r["rig"]: r.get("free_disk_bytes", 0) / 1e9 for r in rigs}, " GB",
                       "#8064a2"),
             bar_chart("upload backlog per rig", {r["rig"]: r["upload_backlog"]["episodes"] for r in rigs}, "",
                       "#f79646"),
             bar_chart("heartbeat age per rig", {r["rig"]: (now - r.get("time", 0)) / 60 for r in rigs}, " min",
                       "#4bacc6")]
    generated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>capture-app fleet report</title>"
            "<style>body{font-family:sans-serif;margin:20px} svg{margin:8px;border:1px solid #ddd} "
            "pre{background:#f6f6f6;padding:8px;overflow-x:auto}</style></head><body>"
            f"<h1>Fleet report</h1><p>{len(rigs)} rigs, {len(fleet['episodes'])} uploaded episodes, "
            f"{sum(per_day.values()):.2f} h; generated {generated}.</p>"
            + "".join(plots) + f"<h2>Status</h2><pre>{html.escape(status_text(fleet, now))}</pre></body></html>\n")
