"""The red/green rules the panel applies to a recorder ``status`` (docs/control.md), without Qt.

The same rules as the Qt monitor's health table and banner (``capture_app/monitor/views.py``
``HealthTable.update_from_status``, ``window.py`` ``losses_of`` / ``_update_banner``), as pure
functions of a status message, so the page and the window colour the same stream the same way.
Times: ``now_s`` and ``LOST_WARNING_S`` in seconds of any monotonic clock.
"""

from __future__ import annotations

from capture_app.core.streams import SYNCED_STREAMS

LOST_WARNING_S = 0.5      # a stream must stay lost this long before the banner names it (as the Qt monitor)
STATE_COLOURS = {"ok": "#2e7d32", "degraded": "#f9a825", "lost": "#c62828", "waiting": "#757575",
                 "failed": "#c62828"}


def drivers_by_stream(status: dict) -> dict[str, dict]:
    """Each stream's driver health (a recorder ``status`` message's ``drivers``), by stream name."""
    return {s: h for h in (status.get("drivers") or {}).values() for s in (h.get("streams") or [h.get("stream")])}


def stream_rows(status: dict) -> list[dict]:
    """Per synced stream, in SYNCED_STREAMS order: name, state (ok / degraded / lost / waiting / failed),
    colour, rate_hz, expected_rate_hz, age_s, seq_gaps, refused (writer), rejected, tracking, reason."""
    streams, writer = status.get("streams") or {}, status.get("writer") or {}
    refused, rejected = writer.get("refused") or {}, status.get("rejected") or {}
    driver_for = drivers_by_stream(status)
    rows = []
    for stream in SYNCED_STREAMS:
        st = streams.get(stream)
        if st is None:
            continue
        driver = driver_for.get(stream)
        state, reason = st["state"], st["reason"]
        if driver is not None and driver.get("state") in ("failed", "reconnecting") and driver.get("last_error"):
            state, reason = ("failed" if driver["state"] == "failed" else "lost"), driver["last_error"]
        n_refused, n_rejected = int(refused.get(stream, 0)), int(sum((rejected.get(stream) or {}).values()))
        if state == "ok" and n_refused:
            state, reason = "degraded", f"writer refused {n_refused} sample(s): machine overloaded"
        rows.append({"stream": stream, "state": state, "colour": STATE_COLOURS.get(state, "#757575"),
                     "rate_hz": float(st.get("rate_hz") or 0.0), "expected_rate_hz": float(st.get("expected_rate_hz") or 0.0),
                     "age_s": st.get("age_s"), "seq_gaps": int(st.get("seq_gaps") or 0), "refused": n_refused,
                     "rejected": n_rejected, "tracking": str(st.get("tracking", "")), "reason": str(reason or "")})
    return rows


def losses_of(status: dict) -> list[str]:
    """Everything lost or refused so far, one phrase each (empty when nothing is)."""
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
    changes = {s: n for s, n in (losses.get("sender_changes") or {}).items() if n}
    if changes:
        out.append("sender changed " + ", ".join(f"{s} {n}x" for s, n in changes.items()))
    return out


class Banner:
    """The bar on top: green "all streams OK, nothing lost", or red with what is lost. A stream is named
    once it has been waiting or lost for LOST_WARNING_S (a blip does not flash the bar)."""

    def __init__(self):
        self._lost_since: dict[str, float] = {}

    def update(self, status: dict, now_s: float, recording: bool) -> tuple[bool, str]:
        """(red, text) for ``status`` seen at ``now_s``."""
        lost = []
        for stream, st in (status.get("streams") or {}).items():
            if stream == "ground_truth":
                continue
            if st["state"] in ("lost", "waiting"):
                since = self._lost_since.setdefault(stream, now_s)
                if now_s - since > LOST_WARNING_S:
                    lost.append(f"{stream}: {st['reason']}")
            else:
                self._lost_since.pop(stream, None)
        losses = losses_of(status)
        if lost or losses:
            head = "LOST while recording — " if recording and lost else ("LOST — " if lost else "")
            return True, head + "; ".join(lost + losses)
        return False, "all streams OK, nothing lost"


def quality_summary(report: dict | None) -> tuple[str, list[str]]:
    """The take's verdict for the operator: (headline, reasons). Headline "ok ..." or "REDO"."""
    if report is None:
        return "quality not computed (see the recorder's log)", []
    if report.get("verdict") == "ok":
        hands = report.get("hands", {})
        return "quality OK " + " ".join(f"{h} {v['valid']:.0%}" for h, v in hands.items()), []
    return "REDO", [str(p) for p in report.get("problems", [])]
