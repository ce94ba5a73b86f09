"""Finishing an episode file: the final synced table and the quality report.

Run when an episode has been written and closed, in a process of its own (``python -m
capture_app.recorder.final_table EPISODE``) so that its Python work never competes with a running
recorder's synchronizer for the GIL. It moves the live table to ``/synced_live``, writes the
final ``/synced`` (every sample by capture time, ``capture_app.recorder.resync``) and stores the
quality report as the root attribute ``quality`` (JSON, ``capture_app.episode.quality``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from calibration.model import calibration_from_json
from capture_app.episode.file import open_episode
from capture_app.episode.format import TRACKING_CODES
from capture_app.core.errors import CaptureError
from capture_app.episode.quality import (REPORT_VERSION, QualityThresholds, drift_reasons, episode_span_ns, hand_figures,
                                 image_coverage, stream_figures, verdict_reasons)
from capture_app.recorder.resync import live_table, write_final_table
from capture_app.core.streams import CAMERA_STREAMS, SYNCED_STREAMS


def quality_report(f: h5py.File, thresholds: QualityThresholds, recorded=None) -> dict:
    """The report of an open episode whose /synced is final (and /synced_live the live table). ``recorded``,
    when given, is ``recorded(stream)`` -> (capture times, receive times, samples with tracking lost) of every
    sample of that stream as stored in the file, or None (then they are read from the file): the take's
    follower keeps them while it records (``capture_app.recorder.settled_rows``), so the stop reads nothing
    that grows with the take."""
    try:
        expected = json.loads(f.attrs.get("expected_rates_hz", "{}"))
    except ValueError:
        expected = {}
    streams = {}
    first_last = {}
    span = episode_span_ns(f.attrs)
    for name in sorted(set(expected) | set(f.get("streams", {}))):
        if name == "ground_truth":
            continue
        group = f.get(f"streams/{name}")
        if group is None or "t_capture_ns" not in group or len(group["t_capture_ns"]) == 0:
            streams[name] = stream_figures(np.zeros(0, np.int64), np.zeros(0, np.int64), expected.get(name, 0.0),
                                           0, 0, 0, 0, span, int(group.attrs.get("undelivered", 0)) if group else 0)
            first_last[name] = None
            continue
        known = recorded(name) if recorded is not None else None
        if known is not None and len(known[0]) == len(group["t_capture_ns"]):
            t_capture, t_receive, tracking_lost = known
        else:
            t_capture, t_receive = group["t_capture_ns"][:], group["t_receive_ns"][:]
            tracking_lost = int(np.sum(group["tracking"][:] == TRACKING_CODES["lost"]))
        rejected = sum(json.loads(group.attrs.get("rejected", "{}")).values())
        streams[name] = stream_figures(t_capture, t_receive, float(group.attrs.get("expected_rate_hz", 0.0)),
                                       int(group.attrs.get("seq_gaps", 0)), int(group.attrs.get("writer_overflow", 0)),
                                       rejected, tracking_lost, span, int(group.attrs.get("undelivered", 0)))
        first_last[name] = (int(t_capture[0]), int(t_capture[-1]))
    report = {"version": REPORT_VERSION, "rows": 0, "hands": {}, "streams": streams,
              "thresholds": thresholds.__dict__}
    if "synced/action_valid" in f:
        synced = f["synced"]
        offsets = json.loads(synced.attrs.get("latency_offsets_ns", "{}"))
        shifted = {}  # each stream's first and last capture time with its latency offset removed, as t_eval is
        for s in SYNCED_STREAMS:
            first_and_last = first_last.get(s)
            shifted[s] = None if first_and_last is None else (first_and_last[0] - offsets.get(s, 0),
                                                              first_and_last[1] - offsets.get(s, 0))
        report["rows"] = len(synced["action_valid"])
        status, t_eval = synced["stream_status"][:], synced["t_eval_ns"][:]
        report["hands"] = hand_figures(synced["action_valid"][:], status, t_eval, shifted)
        for name in CAMERA_STREAMS:
            if name in streams and name in SYNCED_STREAMS:
                streams[name].update(image_coverage(status[:, SYNCED_STREAMS.index(name)], t_eval, span[0]))
    if "synced_live/action_valid" in f:
        live = f["synced_live/action_valid"][:]
        report["live"] = {"rows": len(live), "valid": round(float(np.mean(live.all(axis=1))), 4) if len(live) else 0.0}
    reasons = verdict_reasons(report["hands"], streams, thresholds)
    try:
        drift = json.loads(f.attrs.get("drift", "{}"))
    except ValueError:
        drift = {"error": "the drift attribute is not JSON"}
    if drift:
        report["drift"] = drift
        reasons += drift_reasons(drift) if isinstance(drift, dict) else []
    if not report["hands"]:
        reasons.append({"subject": "episode", "check": "rows", "value": 0, "limit": 1,
                        "text": "no synced rows: the episode is too short"})
    problems = [r["text"] for r in reasons]
    report["reasons"] = reasons
    report["problems"] = problems
    report["verdict"] = "redo" if problems else "ok"
    return report


def finalize_episode(path: str | Path, thresholds: QualityThresholds | None = None, rows_source=None,
                     recorded=None, timings: dict | None = None) -> dict:
    """Write the final table (when the episode has a live one) and the quality report; returns the report.
    ``thresholds`` default to the [quality] section of the rig config stored in the episode; ``rows_source``
    may supply rows computed while the take recorded (``resync.write_final_table``) and ``recorded`` the
    streams' times (``quality_report``). ``timings``, when given, receives the seconds each step took."""
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        if timings is not None:
            now = time.perf_counter()
            timings[name] = round(now - clock, 4)
            clock = now
    with open_episode(path, "r+") as f:
        thresholds = thresholds or thresholds_from_rig(f)
        try:
            live_table(f)
            has_live = True
        except CaptureError:
            has_live = False
        if has_live and f.get("synced") is not None and f["synced"].attrs.get("table", "live") == "live":
            calibration = calibration_from_json(str(f["calibration"].attrs["json"]), f"{path}:/calibration")
            lap("open_s")
            write_final_table(f, calibration, rows_source=rows_source)
            lap("table_s")
        report = quality_report(f, thresholds, recorded)
        f.attrs["quality"] = json.dumps(report)
        f.attrs["quality_verdict"] = report["verdict"]
        lap("report_s")
    lap("close_s")
    return report


def thresholds_from_rig(f_or_text) -> QualityThresholds:
    """The [quality] thresholds of the rig config stored in an episode (defaults where unset)."""
    from capture_app.rig.config import parse_config
    text = f_or_text if isinstance(f_or_text, str) else str(f_or_text.attrs.get("rig_config", ""))
    try:
        return parse_config(text, "<episode rig config>").quality if text else QualityThresholds()
    except CaptureError:
        return QualityThresholds()


def main(argv: list[str]) -> int:
    """``python -m capture_app.recorder.final_table EPISODE``: finalize one episode (exit 0, or 1 with the error)."""
    from capture_app.episode.quality import format_report
    path = argv[0]
    try:
        report = finalize_episode(path)
    except (OSError, KeyError, ValueError, CaptureError) as exc:
        print(f"error: finalizing {path} failed: {exc}; the episode keeps its live table "
              f"(run `capture-app resync {path}` to retry)", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
