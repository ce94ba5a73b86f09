"""The live verdict: how each stream and the rig as a whole stand NOW, from one recorder ``status`` message.

One set of rules for every display of a recorder's health (the Qt monitor's top bar and stream table, the
phone panel, scripts), so they cannot disagree. Pure: functions of the state-feed ``status`` map of
docs/control.md (plain dicts, as unpacked from msgpack); no Qt, no I/O, no clock (the recorder's counts
already carry time: ``age_s``, ``gaps_last_second`` and the ``recent`` window below).

Levels, worst last (``LEVELS``):

- ``ok``       all is well now (green);
- ``degraded`` data is still coming but something is wrong or was lost in the last ``recent.window_s``
               seconds (amber: watch it, the take may still be good);
- ``lost``     act now (red): a stream delivers nothing (no sample for 0.5 s, tracking lost, no data yet,
               its driver failed or reconnects), or the episode writer failed.

The bar's level is the worst of the stream table's levels, except for what has no row there (the writer's
failure, and recent losses of no single stream, which are ``degraded``): so the bar and the table agree.
Invalid action rows are a consequence of a stream's trouble, which its row shows; recent ones are named in
the bar's text but do not set its level (rows before a part's first valid row in a take are not counted at
all: its streams had no data yet, docs/control.md ``invalid_rows_at_start``).

Losses count against "now" only inside a window: the recorder publishes, in ``status["recent"]``, how much
each cumulative counter grew over the last ``window_s`` seconds (``counts_between`` of two
``cumulative_counts``), so a stream that recovers turns green again ``window_s`` seconds after its last loss.

API (stable; the phone panel uses it):

- ``stream_verdicts(status) -> dict[str, StreamVerdict]``: per stream (``NOT_JUDGED`` left out);
- ``bar_verdict(status, short=False) -> (level, text)``: the whole rig, worst of the streams and of the losses that
  belong to no single stream; ``text`` names every stream that is not ok with the same words as its verdict;
- ``cumulative_counts(status) -> dict[str, int]`` and ``counts_between(earlier, later) -> dict[str, int]``:
  the flat counters the recorder diffs to fill ``status["recent"]["counts"]``;
- ``LEVELS``, ``LEVEL_COLOURS``, ``RECENT_WINDOW_S``, ``worst(levels)``.
"""

from __future__ import annotations

from dataclasses import dataclass

LEVELS = ("ok", "degraded", "lost")
LEVEL_COLOURS = {"ok": "#2e7d32", "degraded": "#f9a825", "lost": "#c62828"}  # green, amber, red
RECENT_WINDOW_S = 5.0   # losses older than this no longer count against "now"
NOT_JUDGED = ("ground_truth",)  # the simulator's truth: shown nowhere, judged never

# Counters of one stream ("<name>:<stream>" in the flat counts) and how a recent one is said.
STREAM_COUNTERS = {
    "writer_refused": "refused by the writer (machine overloaded)",
    "rejected": "rejected",
    "video_undecodable": "video frames undecodable after a loss",
    "sender_changes": "sender changed",
}
# Counters that belong to no single stream ("<name>" or "<name>:<part>") and the level a recent one gives.
RIG_COUNTERS = {
    "invalid_rows": ("ok", "invalid rows"),  # said, not judged: the streams' rows judge
    "items_refused": ("degraded", "writer could not store"),
    "values_repaired": ("degraded", "values made storable"),
    "bus_malformed": ("degraded", "bus malformed"),
    "non_finite": ("degraded", "non finite"),
    "unsynchronised": ("degraded", "unsynchronised"),
    "control_refused": ("degraded", "control refused"),
    "status_refused": ("degraded", "status refused"),
    "bad_status": ("degraded", "bad status"),
}


@dataclass(frozen=True)
class StreamVerdict:
    """One stream now. ``level`` is ok | degraded | lost (``LEVELS``); ``state`` the word to show (ok,
    degraded, lost, waiting: no data yet, failed: its driver gave up); ``reason`` why, "" when ok."""

    stream: str
    level: str
    state: str
    reason: str


def worst(levels) -> str:
    """The worst of ``levels`` ("ok" for none)."""
    return max(levels, key=LEVELS.index, default="ok")


def _drivers_by_stream(status: dict) -> dict[str, dict]:
    return {s: h for h in (status.get("drivers") or {}).values() for s in (h.get("streams") or [h.get("stream")])}


def recent_of(status: dict) -> tuple[float, dict[str, int]]:
    """The recorder's recent window: (window_s, counts). A status without one (an older recorder) has none."""
    recent = status.get("recent") or {}
    return float(recent.get("window_s", RECENT_WINDOW_S)), dict(recent.get("counts") or {})


def stream_verdicts(status: dict) -> dict[str, StreamVerdict]:
    """Each stream's verdict now (streams in ``NOT_JUDGED`` left out). A stream is lost when its recorder
    state is lost or waiting or its driver failed or is reconnecting; degraded when its state is degraded
    or, in the last ``window_s`` seconds, the writer refused, the checks rejected, a video frame could not
    be stored or its sender changed; ok otherwise."""
    window_s, recent = recent_of(status)
    driver_for = _drivers_by_stream(status)
    out = {}
    for stream, st in (status.get("streams") or {}).items():
        if stream in NOT_JUDGED:
            continue
        state, reason = st.get("state", "lost"), st.get("reason", "")
        driver = driver_for.get(stream)
        if driver is not None and driver.get("state") in ("failed", "reconnecting") and driver.get("last_error"):
            state, reason = ("failed" if driver["state"] == "failed" else "lost"), driver["last_error"]
        if state in ("lost", "waiting", "failed"):
            level = "lost"
        elif state == "degraded":
            level = "degraded"
        else:
            level = "ok"
        if level == "ok":
            said = [f"{n} {what} in the last {window_s:.0f} s" for key, what in STREAM_COUNTERS.items()
                    if (n := recent.get(f"{key}:{stream}", 0))]
            if said:
                level, state, reason = "degraded", "degraded", "; ".join(said)
        out[stream] = StreamVerdict(stream, level, state, reason)
    return out


def bar_verdict(status: dict, short: bool = False) -> tuple[str, str]:
    """The whole rig now: ``(level, text)``. The level is the worst of the stream verdicts, the writer's
    failure (lost) and recent losses of no single stream (degraded). The text lists every stream not ok as
    ``stream state: reason`` (lost ones first), then the rest, then recent invalid rows of the take; when
    all is ok it says so and, during a take, what the take lost earlier (not counted now). ``short`` leaves
    out the streams' reasons and the take's earlier losses (for a display too small for the whole text;
    the level is the same)."""
    window_s, recent = recent_of(status)
    recording = bool((status.get("takes") or {}).get("recording"))
    verdicts = sorted(stream_verdicts(status).values(), key=lambda v: -LEVELS.index(v.level))
    problems = [(v.level, f"{v.stream} {v.state}: {v.reason}" if v.reason and not short else f"{v.stream} {v.state}")
                for v in verdicts if v.level != "ok"]
    writer = status.get("writer") or {}
    if writer.get("error"):
        problems.append(("lost", f"writer failed: {writer['error']}"))
    for key, (level, what) in RIG_COUNTERS.items():
        parts = {k.partition(":")[2]: n for k, n in recent.items() if k.partition(":")[0] == key and n}
        if not parts or (key == "invalid_rows" and not recording):
            continue
        detail = ", ".join(f"{p} {n}" if p else str(n) for p, n in parts.items())
        problems.append((level, f"{what} in the last {window_s:.0f} s: {detail}"))
    level = worst(lv for lv, _ in problems)
    if level == "ok":
        said = [text for _, text in problems]  # recent invalid rows: said, not judged
        text = "all streams OK now" + (f"; {'; '.join(said)}" if said else f", nothing lost in the last {window_s:.0f} s")
        earlier = take_losses_so_far(status) if recording and not short else []
        return "ok", text + (f" (earlier in this take: {'; '.join(earlier)})" if earlier else "")
    problems.sort(key=lambda p: -LEVELS.index(p[0]))
    head = ("LOST while recording — " if recording else "LOST — ") if level == "lost" else "DEGRADED — "
    return level, head + "; ".join(text for _, text in problems)


def take_losses_so_far(status: dict) -> list[str]:
    """What the take being recorded lost so far (its writer's refusals and gaps, its invalid rows after each
    part's first valid row), one phrase each; for information, not a verdict."""
    writer = status.get("writer") or {}
    out = []
    for key, what in (("refused", "writer refused"), ("seq_gaps", "gaps")):
        counts = {s: n for s, n in (writer.get(key) or {}).items() if n}
        if counts:
            out.append(what + " " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    invalid = {k: n for k, n in ((status.get("losses") or {}).get("invalid_rows") or {}).items() if n}
    if invalid:
        out.append("invalid rows " + ", ".join(f"{k} {n}" for k, n in invalid.items()))
    return out


def cumulative_counts(status: dict) -> dict[str, int]:
    """Every loss counter of a ``status`` (without ``recent``), flat: ``"<counter>:<stream or part>"`` or
    ``"<counter>"`` -> count. Writer counters and ``invalid_rows`` start at 0 with each take, the others
    with the recorder."""
    writer = status.get("writer") or {}
    losses = status.get("losses") or {}
    out: dict[str, int] = {}
    for key, values in (("writer_refused", writer.get("refused")), ("video_undecodable", writer.get("video_undecodable")),
                        ("sender_changes", losses.get("sender_changes")), ("invalid_rows", losses.get("invalid_rows"))):
        for name, n in (values or {}).items():
            out[f"{key}:{name}"] = int(n)
    for stream, reasons in (status.get("rejected") or {}).items():
        out[f"rejected:{stream}"] = int(sum((reasons or {}).values()))
    for key in ("items_refused", "values_repaired"):
        out[key] = int(writer.get(key) or 0)
    for key in ("bus_malformed", "non_finite", "unsynchronised", "control_refused", "status_refused", "bad_status"):
        out[key] = int(losses.get(key) or 0)
    return out


def counts_between(earlier: dict[str, int], later: dict[str, int]) -> dict[str, int]:
    """How much each counter grew from ``earlier`` to ``later`` (both ``cumulative_counts``); a counter that
    went down was reset (a new take) and counts from 0. Only counters that grew are returned."""
    out = {}
    for key, n in later.items():
        before = earlier.get(key, 0)
        grown = n - before if n >= before else n
        if grown > 0:
            out[key] = grown
    return out
