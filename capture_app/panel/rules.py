"""What the panel shows of a recorder ``status`` (docs/control.md): the stream rows, the bar, the take's verdict.

The red/amber/green rules are ``capture_app/core/live_verdict.py``, the same module the Qt monitor's bar
and stream table use, so the page and the window judge every stream alike by construction. This module
only shapes their verdicts (and the status's numbers) into what the page draws. Pure, no I/O.
"""

from __future__ import annotations

from capture_app.core.live_verdict import LEVEL_COLOURS, bar_verdict, stream_verdicts
from capture_app.core.streams import SYNCED_STREAMS


def stream_rows(status: dict) -> list[dict]:
    """Per judged stream, synced streams first in SYNCED_STREAMS order: stream, state (the verdict's word:
    ok / degraded / lost / waiting / failed), level (ok / degraded / lost), colour, rate_hz,
    expected_rate_hz, age_s, seq_gaps, refused (writer), rejected, tracking, reason."""
    streams, writer = status.get("streams") or {}, status.get("writer") or {}
    refused, rejected = writer.get("refused") or {}, status.get("rejected") or {}
    verdicts = stream_verdicts(status)
    order = [s for s in SYNCED_STREAMS if s in verdicts] + sorted(set(verdicts) - set(SYNCED_STREAMS))
    rows = []
    for stream in order:
        st, verdict = streams.get(stream) or {}, verdicts[stream]
        rows.append({"stream": stream, "state": verdict.state, "level": verdict.level,
                     "colour": LEVEL_COLOURS[verdict.level], "rate_hz": float(st.get("rate_hz") or 0.0),
                     "expected_rate_hz": float(st.get("expected_rate_hz") or 0.0), "age_s": st.get("age_s"),
                     "seq_gaps": int(st.get("seq_gaps") or 0), "refused": int(refused.get(stream, 0) or 0),
                     "rejected": int(sum((rejected.get(stream) or {}).values())),
                     "tracking": str(st.get("tracking", "")), "reason": str(verdict.reason or "")})
    return rows


def bar(status: dict) -> dict:
    """The bar on top: {"level": ok / degraded / lost, "colour", "text"} (``live_verdict.bar_verdict``)."""
    level, text = bar_verdict(status)
    return {"level": level, "colour": LEVEL_COLOURS[level], "text": text}


def quality_summary(report: dict | None) -> tuple[str, list[str]]:
    """The take's verdict for the operator: (headline, reasons). Headline "ok ..." or "REDO"."""
    if report is None:
        return "quality not computed (see the recorder's log)", []
    if report.get("verdict") == "ok":
        hands = report.get("hands", {})
        return "quality OK " + " ".join(f"{h} {v['valid']:.0%}" for h, v in hands.items()), []
    return "REDO", [str(p) for p in report.get("problems", [])]
