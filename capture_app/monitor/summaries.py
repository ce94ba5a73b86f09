"""The monitor's words: one-line summaries of a calibration, a take's quality and losses, and of what a
recorder ``status`` says is lost or not delivering (pure functions of the dicts of docs/control.md)."""

from __future__ import annotations

from capture_app.monitor.views import drivers_by_stream


def calibration_readout(calibration) -> str:
    """The calibration check line under the ego view: which calibration, and how good it was."""
    text = f"calibration {calibration.calibration_id}"
    head = calibration.residuals.get("head_camera") if isinstance(calibration.residuals, dict) else None
    if head:
        text += (f": head camera reprojection {head['reprojection_rms_px']} px, consistency "
                 f"{head['translation_consistency_mm']} mm / {head['rotation_consistency_deg']} deg")
    return text + ". Magenta fingertips and wrist axes must sit on the hands."


def quality_summary(report: dict | None) -> str:
    """One line for the operator: the take's verdict and, for a redo, the first reason."""
    if report is None:
        return "quality not computed (see the recorder's log)"
    if report["verdict"] == "ok":
        hands = report.get("hands", {})
        return "quality OK " + " ".join(f"{h} {v['valid']:.0%}" for h, v in hands.items())
    return f"REDO: {report['problems'][0]}" + (f" (+{len(report['problems']) - 1} more)" if len(report["problems"]) > 1 else "")


def take_losses(report: dict | None) -> str:
    """The end-of-take summary of what was lost: per stream gaps, writer refusals, rejections, and the
    invalid share of each hand's rows ("nothing lost" when all are zero)."""
    if not report:
        return ""
    parts = []
    for stream, st in sorted(report.get("streams", {}).items()):
        lost = {k: st.get(k, 0) for k in ("seq_gaps", "writer_overflow", "rejected", "tracking_lost")}
        if any(lost.values()):
            parts.append(f"{stream} " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in lost.items() if v))
    for hand, h in sorted(report.get("hands", {}).items()):
        if h.get("valid", 1.0) < 1.0:
            parts.append(f"{hand} hand invalid {1 - h['valid']:.1%} of rows")
    return "; ".join(parts) or "nothing lost"


def losses_of(status: dict) -> list[str]:
    """Everything lost or refused in the take so far, one phrase each (empty when nothing is)."""
    out = []
    writer = status.get("writer") or {}
    refused = {s: n for s, n in (writer.get("refused") or {}).items() if n}
    if refused:
        out.append("writer refused " + ", ".join(f"{s} {n}" for s, n in refused.items()))
    if writer.get("error"):
        out.append(f"writer failed: {writer['error']}")
    for key, what in (("items_refused", "writer could not store"), ("values_repaired", "values made storable")):
        if writer.get(key):
            out.append(f"{what} {writer[key]}")
    undecodable = {s: n for s, n in (writer.get("video_undecodable") or {}).items() if n}
    if undecodable:
        out.append("video frames undecodable after a loss " + ", ".join(f"{s} {n}" for s, n in undecodable.items()))
    rejected = {s: sum(r.values()) for s, r in (status.get("rejected") or {}).items() if r}
    if rejected:
        out.append("rejected " + ", ".join(f"{s} {n}" for s, n in rejected.items()))
    losses = status.get("losses") or {}
    invalid = {k: n for k, n in (losses.get("invalid_rows") or {}).items() if n}
    if invalid and (status.get("takes") or {}).get("recording"):
        out.append("invalid rows " + ", ".join(f"{k} {n}" for k, n in invalid.items()))
    for key in ("bus_malformed", "non_finite", "unsynchronised", "control_refused", "status_refused", "bad_status"):
        if losses.get(key):
            out.append(f"{key.replace('_', ' ')} {losses[key]}")
    speech = (status.get("handsfree") or {}).get("voice_refused")
    if speech:  # speech the voice input heard and did not take as a command (docs/control.md, handsfree)
        out.append(f"speech not taken as a command {speech}")
    changes = {s: n for s, n in (losses.get("sender_changes") or {}).items() if n}
    if changes:  # a stream's publisher changed (protocol.md, Trust model)
        out.append("sender changed " + ", ".join(f"{s} {n}x" for s, n in changes.items()))
    drift = status.get("drift") or {}  # the recorder's live drift watch (docs/control.md)
    for body, mount in sorted((drift.get("mounts") or {}).items()):
        if mount.get("unresolved"):
            what = "ego camera mount" if body == "head" else f"{body} wrist tracker"
            out.append(f"{what} slipped {mount.get('net_deg', 0):.1f} deg: re-seat it and recalibrate")
    latency = [a for a in drift.get("alarms") or [] if a.get("kind") == "latency"]
    if latency:
        out.append(latency[-1]["text"])
    return out


def not_delivering(status: dict) -> dict[str, str]:
    """Streams that deliver nothing now (waiting or lost), with the best reason known: their driver's
    last error, else the stream's own reason."""
    driver_for = drivers_by_stream(status)
    out = {}
    for stream, st in (status.get("streams") or {}).items():
        if st["state"] in ("waiting", "lost") and stream != "ground_truth":
            driver = driver_for.get(stream)
            out[stream] = (driver or {}).get("last_error") or st["reason"]
    return out


def check_prompt_line(status: dict) -> str | None:
    """The status bar's line while ``capture-app check`` runs on the recorder (the state feed's ``check``,
    docs/control.md): the step's prompt and, when the step has an end, how long it lasts; None otherwise."""
    check = status.get("check")
    if not check or not check.get("text"):
        return None
    until = check.get("until_s")
    return f"rig check: {check['text']}" + (f" (until {until:.0f} s)" if isinstance(until, (int, float)) else "")


def handsfree_line(status: dict) -> str | None:
    """The status bar's line when a hands-free input of the recorder is not working (the state feed's
    ``handsfree.missing``, docs/control.md), e.g. "hands-free: pedal missing"; None otherwise."""
    missing = (status.get("handsfree") or {}).get("missing") or []
    return f"hands-free: {', '.join(missing)} missing" if missing else None
