"""Hands-free inputs and cues (#26): a pedal read through evdev's own event types, the cues the recorder
says, and a take driven by the pedal alone through the control path."""

from __future__ import annotations

import contextlib
import threading
import types

import h5py
import pytest

from capture_app.core.clock import now_ns
from capture_app.core.errors import ConfigError
from capture_app.handsfree.cues import CueSpeaker, CueWatcher, beep_kind, beep_wav, verdict_text
from capture_app.handsfree.pedal import PedalReader
from capture_app.monitor.summaries import handsfree_line
from capture_app.recorder.control_server import status_of
from capture_app.rig.config import parse_config
from capture_app.rig.handsfree_config import HandsfreeConfig
from tests.conftest import small_sim_text
from tests.fake_evdev import FakeInputDevice


def _wait(predicate, timeout_s=20.0):
    done = threading.Event()
    deadline = now_ns() + int(timeout_s * 1e9)
    while not predicate() and now_ns() < deadline:
        done.wait(0.02)
    return predicate()


def test_pedal_presses_are_commands_releases_and_autorepeats_are_not():
    device = FakeInputDevice()
    got = []
    reader = PedalReader(HandsfreeConfig(), got.append, device=device).start()
    try:
        assert device.grabbed
        device.key("KEY_PAGEDOWN", repeats=5)       # held: one command, not six
        assert _wait(lambda: len(got) == 1)
        device.key("KEY_Q")                          # not mapped: nothing
        device.key("KEY_PAGEUP")
        assert _wait(lambda: len(got) == 2)
        device.key("KEY_PAGEUP")                     # within the debounce: a bounce
        assert _wait(lambda: reader.bounces == 1)
        assert [(c.name, c.via, c.detail) for c in got] == [("next_subtask", "pedal", "KEY_PAGEDOWN"),
                                                            ("undo", "pedal", "KEY_PAGEUP")]
        assert all(now_ns() - 2e9 < c.onset_ns <= now_ns() for c in got)
    finally:
        reader.close()


def test_an_unplugged_pedal_is_said_noted_and_looked_for():
    device = FakeInputDevice()
    said, notes = [], []
    reader = PedalReader(HandsfreeConfig(pedal_device="/nonexistent/pedal"), lambda c: None, device=device,
                         cue=said.append, note=lambda level, text: notes.append((level, text))).start()
    try:
        device.unplug()
        assert _wait(lambda: "pedal disconnected" in said)
        assert _wait(lambda: len(notes) >= 1)
    finally:
        reader.close()
    level, text = notes[0]
    assert level == "warning" and text.startswith("pedal /nonexistent/pedal lost: ") and "plugged in again" in text
    assert said == ["pedal disconnected"]     # looked for again, quietly: /nonexistent/pedal never opens
    assert len(notes) == 1


def test_a_pedal_that_cannot_be_opened_is_said_and_noted_once():
    said, notes = [], []
    reader = PedalReader(HandsfreeConfig(pedal_device="/nonexistent/pedal"), lambda c: None,
                         cue=said.append, note=lambda level, text: notes.append((level, text))).start()
    try:
        assert _wait(lambda: len(notes) >= 1)
        threading.Event().wait(2.5)               # one more try at opening it (every REOPEN_S): not said again
    finally:
        reader.close()
    assert said == ["pedal not found"]
    assert len(notes) == 1 and notes[0][0] == "warning"
    assert notes[0][1].startswith("cannot open pedal /nonexistent/pedal: ") and "trying again every" in notes[0][1]


def test_unknown_pedal_key_names_are_refused():
    with pytest.raises(ConfigError, match="KEY_PAGEDWN"):
        PedalReader(HandsfreeConfig(pedal_keys={"KEY_PAGEDWN": "undo"}), lambda c: None, device=FakeInputDevice())


class _FakeTakes:
    def __init__(self):
        self.s = {"recording": False, "take_count": 0, "segments": [], "current": "", "last_take": None,
                  "free_disk_mb": 50_000.0}

    def state(self):
        return dict(self.s)


def test_cue_texts_for_a_take():
    takes = _FakeTakes()
    streams = {"left_glove": types.SimpleNamespace(state="ok")}
    session = types.SimpleNamespace(stream_status=lambda: dict(streams))
    said = []
    watcher = CueWatcher(takes, session, said.append, disk_warn_mb=1000)
    watcher._observe(initial=True)
    reach, pour = {"label": "reach", "start_ns": 1, "end_ns": 2}, {"label": "pour", "start_ns": 2, "end_ns": -1}
    steps = [
        ({"recording": True}, None, ["recording, take 1"]),
        ({"segments": [{**reach, "end_ns": -1}], "current": "reach"}, None, ["reach"]),
        ({"segments": [reach, pour], "current": "pour"}, None, ["pour"]),
        ({}, "lost", []),                                       # a blink is not said
        ({"_wait": 1.1}, None, ["left glove lost"]),
        ({}, None, []),                                         # said once
        ({"segments": [reach, {**pour, "end_ns": 3}], "current": ""}, "ok", ["pour ended"]),
        ({"segments": [reach, pour], "current": "pour"}, None, ["mark undone"]),
        ({"segments": [reach], "current": ""}, None, ["mark undone"]),
        ({"segments": [reach, {"label": "stir", "start_ns": 5, "end_ns": 6}], "current": ""}, None,
         ["stir", "stir ended"]),                               # a start and an end between two looks
        ({"free_disk_mb": 500.0, "minutes_left": 7.2}, None, ["disk nearly full, 7 minutes left"]),
    ]
    for change, stream_state, expected in steps:
        if "_wait" in change:
            threading.Event().wait(change.pop("_wait"))
        takes.s.update(change)
        if stream_state:
            streams["left_glove"] = types.SimpleNamespace(state=stream_state)
        said.clear()
        watcher._observe()
        assert said == expected, change
    take = {"outcome": "saved", "report": None}
    takes.s.update(recording=False, take_count=12, last_take=take, segments=[], current="")
    said.clear()
    watcher._observe()
    assert said == ["take 12 saved"]
    take["report"] = {"verdict": "redo", "problems": ["left_glove: lost 4.0% of its samples"]}
    said.clear()
    watcher._observe()
    assert said == ["redo: left_glove: lost 4.0% of its samples"]
    assert verdict_text({"outcome": "saved", "report": {"verdict": "ok"}}, 12) == "take 12 saved, quality ok"


def test_cues_play_in_order_through_the_sink_and_beep_without_speech():
    said = []
    speaker = CueSpeaker("auto", sink=said.append)
    for text in ("recording, take 1", "reach", "take 1 saved"):
        speaker.say(text)
    speaker.close()
    assert said == ["recording, take 1", "reach", "take 1 saved"]
    assert [beep_kind(t) for t in ("recording, take 2", "take 2 saved", "left glove lost")] == ["start", "stop", "alert"]
    assert beep_wav([(880, 0.1)])[:4] == b"RIFF"
    off = CueSpeaker("off", sink=said.append)
    off.say("nothing")
    off.close()
    assert said[-1] == "take 1 saved"


@contextlib.contextmanager
def _recorder_with_pedal(tmp_path, config_text: str, said: list):
    """A simulated recorder (session, takes, control server) with hands-free on and a fake pedal; yields
    (takes, handsfree, device)."""
    from capture_app.handsfree.runner import Handsfree
    from capture_app.recorder.control_server import ControlServer
    from capture_app.recorder.session import CaptureSession
    from capture_app.recorder.takes import Takes

    device = FakeInputDevice()
    with CaptureSession(parse_config(config_text)) as session:
        assert session.wait_for_streams(20) == []
        takes = Takes(session, tmp_path / "episodes")
        server = ControlServer(session, takes, f"ipc://{tmp_path / 'control'}").start()
        try:
            with Handsfree(session, takes, server, cue_sink=said.append, pedal_device=device) as handsfree:
                yield takes, handsfree, device
        finally:
            server.close()


def test_a_take_by_pedal_alone_is_logged_with_its_source(tmp_path):
    said = []
    with _recorder_with_pedal(tmp_path, small_sim_text('\n[handsfree]\nsubtasks = ["reach"]\n'),
                              said) as (takes, handsfree, device):
        for key, n in (("KEY_B", 1), ("KEY_PAGEDOWN", 2), ("KEY_DOT", 3), ("KEY_B", 4)):
            threading.Event().wait(0.3)   # a person's presses: farther apart than a bounce
            device.key(key)
            assert _wait(lambda: len(handsfree.commander.done) == n, 60), handsfree.commander.done
        takes.wait_finalized()
        assert _wait(lambda: any("quality" in s or s.startswith("redo") for s in said), 30), said
        done = list(handsfree.commander.done)
    assert [(c.name, ok) for c, ok, _ in done] == [("start_stop", True), ("next_subtask", True),
                                                  ("end_subtask", True), ("start_stop", True)]
    path = next((tmp_path / "episodes").glob("*.h5"))
    with h5py.File(path, "r") as f:
        pedal = [m.decode() for s, m in zip(f["events/source"][:], f["events/message"][:]) if s == b"pedal"]
    assert [m.split(" by ")[0] for m in pedal] == ["take started", "subtask 'reach' started", "subtask ended",
                                                   "take saved"]
    assert all(" by KEY_" in m and " via pedal, " in m and "ms after its onset" in m for m in pedal), pedal
    spoken = [s for s in said if not s.endswith(" lost")]  # a loaded machine may lose a sim stream a while
    assert spoken[:5] == ["recording, take 1", "reach", "reach ended", "take 1 saved", verdict_text(
        {"outcome": "saved", "report": takes.last_take["report"]}, 1)], said


def test_a_pedal_unplugged_during_a_take_is_in_its_events(tmp_path):
    said = []
    with _recorder_with_pedal(tmp_path, small_sim_text(), said) as (takes, handsfree, device):
        device.key("KEY_B")
        assert _wait(lambda: len(handsfree.commander.done) == 1, 60), handsfree.commander.done
        device.unplug()
        assert _wait(lambda: "pedal disconnected" in said, 30), said
        takes.stop(by="the test", via="test")     # the operator stops it some other way
        takes.wait_finalized()
    path = next((tmp_path / "episodes").glob("*.h5"))
    with h5py.File(path, "r") as f:
        rows = [(lv.decode(), m.decode()) for lv, s, m in
                zip(f["events/level"][:], f["events/source"][:], f["events/message"][:]) if s == b"handsfree"]
    assert len(rows) == 1 and rows[0][0] == "warning", rows
    assert rows[0][1].startswith("pedal 'fake USB foot pedal' lost: ") and "plugged in again" in rows[0][1], rows


def test_a_pedal_lost_between_takes_is_in_the_next_take_and_said_when_it_starts(tmp_path):
    """No take records when the pedal goes: the next take's /events still has the row, at the time it was lost
    (before the take's start), and the take's start cue says the pedal is missing."""
    said = []
    with _recorder_with_pedal(tmp_path, small_sim_text(), said) as (takes, handsfree, device):
        device.unplug()
        assert _wait(lambda: "pedal disconnected" in said, 30), said
        assert handsfree.missing_inputs() == ["pedal"]
        feed = status_of(handsfree.session, takes)["handsfree"]       # the state feed shows it live
        assert (feed["pedal"], feed["voice"], feed["missing"]) == ("missing", None, ["pedal"]), feed
        assert handsfree_line({"handsfree": feed}) == "hands-free: pedal missing"
        lost_by_ns = now_ns()
        takes.start(by="the test", via="test")       # the operator starts it some other way
        assert _wait(lambda: any(s.startswith("recording, take 1") for s in said), 30), said
        takes.stop(by="the test", via="test")
        takes.wait_finalized()
    assert "recording, take 1, pedal missing" in said, said
    assert handsfree_line({"handsfree": None}) is None and handsfree_line({}) is None
    path = next((tmp_path / "episodes").glob("*.h5"))
    with h5py.File(path, "r") as f:
        start_ns = int(f.attrs["start_monotonic_ns"])
        rows = [(int(t), lv.decode(), m.decode()) for t, lv, s, m in zip(
            f["events/t_ns"][:], f["events/level"][:], f["events/source"][:], f["events/message"][:])
            if s == b"handsfree"]
    assert len(rows) == 1, rows
    t_ns, level, message = rows[0]
    assert level == "warning" and message.startswith("before this take: pedal 'fake USB foot pedal' lost: "), rows
    assert t_ns <= lost_by_ns < start_ns


def test_events_between_takes_are_held_for_the_next_take_newest_first_kept(tmp_path):
    """Episodes.log_event with no take recording: the newest HELD_EVENTS wait for the next take, the older
    ones are counted in one row; a take writes them once (the take after it gets none)."""
    from capture_app.recorder import episodes as episodes_module
    from capture_app.recorder.session import CaptureSession

    n = episodes_module.HELD_EVENTS + 5
    with CaptureSession(parse_config(small_sim_text())) as session:
        assert session.wait_for_streams(20) == []
        for i in range(n):
            session.episodes.log_event("info", "outside", f"event {i}")
        session.start_episode(tmp_path, name="first")
        first = session.stop_episode()
        session.start_episode(tmp_path, name="second")
        second = session.stop_episode()
    rows = {}
    for path in (first, second):
        with h5py.File(path, "r") as f:
            rows[path.stem] = [(s.decode(), m.decode()) for s, m in zip(f["events/source"][:], f["events/message"][:])
                               if m.startswith(b"before this take: ")]
    kept = [m for s, m in rows["first"] if s == "outside"]
    assert kept == [f"before this take: event {i}" for i in range(5, n)]
    assert [m for s, m in rows["first"] if s == "session"] == [
        f"before this take: 5 older event(s) between takes not kept here (only the newest "
        f"{episodes_module.HELD_EVENTS}); the recorder's log has them all"]
    assert [m for s, m in rows["second"] if s == "outside"] == []
