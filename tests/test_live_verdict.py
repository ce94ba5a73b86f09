"""The live verdict's rules (capture_app/core/live_verdict.py), pure: one status map in, verdicts out."""

from capture_app.core.live_verdict import (bar_verdict, counts_between, cumulative_counts, stream_verdicts,
                                           worst)


def _stream(state="ok", reason=""):
    return {"state": state, "reason": reason, "rate_hz": 30.0, "expected_rate_hz": 30.0, "age_s": 0.01,
            "samples": 100, "seq_gaps": 0, "gaps_last_second": 0, "tracking": "ok", "rejected": 0}


def _status(recording=True, **states):
    streams = {s: _stream() for s in ("left_glove", "ego_camera", "head_tracker", "ground_truth")}
    streams.update(states)
    return {"streams": streams, "drivers": {}, "writer": {"refused": {}, "seq_gaps": {}} if recording else None,
            "rejected": {}, "losses": {"invalid_rows": {}}, "takes": {"recording": recording}}


def test_all_ok_is_green_and_ground_truth_is_not_judged():
    status = _status(ground_truth=_stream("lost", "no data for 3.0 s"))
    assert "ground_truth" not in stream_verdicts(status)
    assert bar_verdict(status)[0] == "ok"


def test_bar_is_the_worst_stream_and_names_it_with_the_table_words():
    status = _status(ego_camera=_stream("degraded", "12 sample(s) lost in the last second"))
    verdicts = stream_verdicts(status)
    level, text = bar_verdict(status)
    assert (verdicts["ego_camera"].level, level) == ("degraded", "degraded")
    assert "ego_camera degraded: 12 sample(s) lost in the last second" in text
    status["streams"]["left_glove"] = _stream("lost", "no data for 0.8 s")
    level, text = bar_verdict(status)
    assert level == "lost" and text.index("left_glove") < text.index("ego_camera")
    assert bar_verdict(status, short=True) == ("lost", "LOST while recording — left_glove lost; ego_camera degraded")


def test_cumulative_losses_count_only_inside_the_recent_window():
    status = _status()
    status["losses"]["invalid_rows"] = {"left_wrist": 40}
    status["writer"]["refused"] = {"ego_camera": 3}
    # no recent growth: green, the take's totals said for information only
    status["recent"] = {"window_s": 5.0, "counts": {}}
    level, text = bar_verdict(status)
    assert level == "ok" and "earlier in this take" in text and "left_wrist 40" in text
    status["recent"]["counts"] = {"writer_refused:ego_camera": 2}
    assert stream_verdicts(status)["ego_camera"].level == "degraded"
    assert bar_verdict(status)[0] == "degraded"
    status["recent"]["counts"] = {"invalid_rows:left_wrist": 2}  # said, but the streams' rows judge
    level, text = bar_verdict(status)
    assert level == "ok" and "invalid rows in the last 5 s: left_wrist 2" in text
    status["recent"]["counts"] = {"bus_malformed": 1}  # no row in the table: the bar alone says it
    assert bar_verdict(status)[0] == "degraded"


def test_driver_failure_is_lost():
    status = _status()
    status["drivers"] = {"cam": {"state": "failed", "last_error": "USB gone", "streams": ["ego_camera"]}}
    v = stream_verdicts(status)["ego_camera"]
    assert (v.level, v.state, v.reason) == ("lost", "failed", "USB gone")


def test_counts_between_handles_a_reset_counter():
    earlier = {"invalid_rows:left_wrist": 50, "bus_malformed": 2}
    later = {"invalid_rows:left_wrist": 3, "bus_malformed": 2, "rejected:ego_camera": 1}
    assert counts_between(earlier, later) == {"invalid_rows:left_wrist": 3, "rejected:ego_camera": 1}
    assert cumulative_counts(_status())["bus_malformed"] == 0
    assert worst(["ok", "lost", "degraded"]) == "lost" and worst([]) == "ok"
