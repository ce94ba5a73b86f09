"""Hands-free operation (#26): the gesture recogniser, the [handsfree] table, and a whole session on the
simulated rig driven by scripted glove gestures alone (README, "Hands-free operation")."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from capture_app.core.clock import now_ns
from capture_app.core.errors import ConfigError
from capture_app.core.gestures import POSES, GestureRecogniser, GestureTiming
from capture_app.episode.annotations import read_segments
from capture_app.rig.config import parse_config, to_toml
from drivers.sim.gestures import COMMAND_POSES, LOOKALIKES, scripted_samples, shape_keypoints
from drivers.sim.motion import MotionModel
from tests.conftest import small_sim_text


def _run(recogniser, motion, script, hand, t0, t1):
    fired = []
    for t, k, q in scripted_samples(motion, script, hand, t0, t1):
        for i in range(len(t)):
            g = recogniser.update(int(t[i] * 1e9), k[i], q[i])
            if g is not None:
                fired.append(g)
    return fired


@pytest.mark.parametrize("hand", ["left", "right"])
def test_each_pose_fires_once_and_no_lookalike_does(hand):
    names = COMMAND_POSES + LOOKALIKES
    script = tuple((2.0 + 3.0 * i, name, 1.2) for i, name in enumerate(names))
    fired = _run(GestureRecogniser(hand), MotionModel(3), script, hand, 0.0, 3.0 * len(names) + 2)
    assert [g.pose for g in fired] == list(COMMAND_POSES)
    for g in fired:
        t0 = next(t for t, name, _ in script if name == g.pose)
        assert abs(g.onset_ns / 1e9 - t0) < 0.3          # onset where the pose forms
        assert g.t_ns - g.onset_ns >= 0.8e9               # after the hold, not before
        assert g.hand == hand


def test_hold_cooldown_and_release():
    motion = MotionModel(1)
    # too short to count; then two holds 1.0 s apart (the second within the cooldown of 3 s)
    script = ((2.0, "spread", 0.3), (4.0, "spread", 1.0), (5.6, "spread", 1.0), (10.0, "spread", 3.0))
    fired = _run(GestureRecogniser("left", timing=GestureTiming(hold_s=0.8, cooldown_s=3.0)), motion, script,
                 "left", 0.0, 14.0)
    # 2.0: too short; 4.0: fires; 5.6: formed during the cooldown, never fires; 10.0: held 3 s fires once
    assert [round(g.onset_ns / 1e9) for g in fired] == [4, 10]


def test_a_dropout_does_not_end_a_pose_but_lost_tracking_does():
    k = shape_keypoints("spread")
    r = GestureRecogniser("left", timing=GestureTiming(hold_s=0.5, dropout_s=0.1))
    t = 0
    fired = []
    for i in range(120):  # 1 s at 120 Hz with two single-sample glitches (one non-finite)
        sample = k.copy()
        if i in (20, 40):
            sample[9] = np.nan
        g = r.update(t + i * 8_333_333, sample, None)
        fired += [g] if g else []
    assert len(fired) == 1 and fired[0].onset_ns == 0
    r2 = GestureRecogniser("left", timing=GestureTiming(hold_s=0.5, dropout_s=0.1))
    out = [r2.update(i * 8_333_333, k, None, tracking_ok=(i % 30) > 15) for i in range(120)]
    assert not any(out)


def test_hysteresis_keeps_a_pose_that_loosens():
    k = shape_keypoints("thumb_little")
    r = GestureRecogniser("left", poses=("thumb_little",), timing=GestureTiming(hold_s=0.5))
    assert r.update(0, k) is None and r.holding == "thumb_little"
    loose = k.copy()
    loose[4] = loose[24] + [0, 0, 0.025]   # 2.5 cm apart: outside the enter threshold, inside the exit one
    fired = [r.update(i * 10_000_000, loose) for i in range(1, 60)]
    assert sum(g is not None for g in fired) == 1
    r2 = GestureRecogniser("left", poses=("thumb_little",), timing=GestureTiming(hold_s=0.5))
    assert r2.update(0, loose) is None and r2.holding is None   # it does not start a pose


def test_handsfree_table_checked_and_round_trips():
    text = small_sim_text('\n[handsfree]\ngestures_on = true\nhand = "right"\nsubtasks = ["reach", "pour"]\n'
                          '[handsfree.gestures]\nfist = "abort"\n')
    config = parse_config(text)
    assert config.handsfree.gestures == {"fist": "abort"} and config.handsfree.hand == "right"
    assert parse_config(to_toml(config)).handsfree == config.handsfree
    for bad, says in (('hand = "middle"', "'hand'"), ('hold_s = 0.05', "hold_s"), ('colour = 1', "unknown field"),
                      ('[handsfree.gestures]\nwave = "start"', "poses"), ('[handsfree.gestures]\nfist = "explode"',
                                                                            "commands"),
                      ('[handsfree.pedal_keys]\nPAGEDOWN = "undo"', "evdev key names")):
        with pytest.raises(ConfigError, match=says):
            parse_config(small_sim_text("\n[handsfree]\n" + bad + "\n"))


# --- done when: a whole session driven by scripted gestures alone ------------------------------------------
HOLD_S, COOLDOWN_S, STEP_S = 0.6, 0.6, 1.5
# (pose, what the script expects); lookalikes in between must change nothing
SESSION = [("spread", "start 1"), ("thumb_little", "mark reach"), ("horns", "undo"), ("flat", None),
           ("thumb_little", "mark reach"), ("thumb_little", "mark pour"),
           ("thumb_ring", "end"), ("spread", "stop saved"),
           ("spread", "start 2"), ("thumb_little", "mark reach"), ("fist", "stop aborted"),
           ("spread", "start 3"), ("thumb_little", "mark reach"), ("shaka", "discard?"), ("shaka", "discard")]
FIRST_S = 3.0


def test_a_session_driven_by_gestures_alone(tmp_path):
    from capture_app.handsfree.runner import Handsfree
    from capture_app.recorder.control_server import ControlServer
    from capture_app.recorder.session import CaptureSession
    from capture_app.recorder.takes import Takes

    script = [[FIRST_S + STEP_S * i, pose, 1.0] for i, (pose, _) in enumerate(SESSION)]
    script_toml = "[" + ", ".join(f'[{t}, "{p}", {d}]' for t, p, d in script) + "]"
    epoch = now_ns()
    text = small_sim_text(f'\n[handsfree]\ngestures_on = true\nhold_s = {HOLD_S}\ncooldown_s = {COOLDOWN_S}\n'
                          f'subtasks = ["reach", "pour"]\ncues = "off"\n',
                          options={"left_glove": f"gestures = {script_toml}"})
    config = parse_config(text.replace("options = { ", f"options = {{ epoch_ns = {epoch}, "))
    said = []
    out = tmp_path / "episodes"
    with CaptureSession(config) as session:
        takes = Takes(session, out)
        server = ControlServer(session, takes, f"ipc://{tmp_path / 'control'}").start()
        try:
            with Handsfree(session, takes, server, cue_sink=said.append) as handsfree:
                started_s = (now_ns() - epoch) / 1e9
                print(f"rig started after {started_s:.1f} s")
                assert started_s < FIRST_S - 0.5, f"the rig took {started_s:.1f} s to start (the script begins at {FIRST_S} s)"
                deadline = now_ns() + int((FIRST_S + STEP_S * len(SESSION) + 60) * 1e9)
                n_commands = sum(1 for _, expect in SESSION if expect)
                while len(handsfree.commander.done) < n_commands and now_ns() < deadline:
                    session.intake.wait(0.2)
                handsfree.commander.wait_idle(60)
                done = list(handsfree.commander.done)
                gestures = list(handsfree.gestures.gestures)
                takes.wait_finalized()
        finally:
            server.close()
    assert [c.name for c, ok, _ in done] == [
        "start_stop", "next_subtask", "undo", "next_subtask", "next_subtask", "end_subtask", "start_stop",
        "start_stop", "next_subtask", "abort", "start_stop", "next_subtask", "discard", "discard"]
    assert all(ok for _, ok, _ in done), done
    assert [g.pose for g in gestures] == [p for p, expect in SESSION if expect]
    onsets = [g.onset_ns for g in gestures]
    files = sorted(out.glob("*.h5"))
    assert len(files) == 2 and not list(out.glob("*.partial")), files   # take 3 discarded: no file
    with h5py.File(files[0], "r") as f:
        assert f.attrs["outcome"] == "saved"
        segments = [(s.label, s.start_ns, s.end_ns) for s in read_segments(f)]
        # reach from the second thumb_little's onset (the first was undone), pour from the third's, ended by
        # thumb_ring's onset: the boundaries are the gestures' onsets
        assert segments == [("reach", onsets[3], onsets[4]), ("pour", onsets[4], onsets[5])]
        events = list(zip([s.decode() for s in f["events/source"][:]], [m.decode() for m in f["events/message"][:]]))
    with h5py.File(files[1], "r") as f:
        assert f.attrs["outcome"] == "aborted"
        assert [(s.label, s.start_ns) for s in read_segments(f)] == [("reach", onsets[8])]
        assert read_segments(f)[0].end_ns == onsets[9]      # the abort's onset ends the open subtask
        events2 = [m.decode() for s, m in zip(f["events/source"][:], f["events/message"][:]) if s == b"gesture"]
    gesture_events = [m for s, m in events if s == "gesture"]
    expected = ["take started", "subtask 'reach' started", "last subtask mark undone", "subtask 'reach' started",
                "subtask 'pour' started", "subtask ended", "take saved"]
    assert [m.split(" by ")[0] for m in gesture_events] == expected, gesture_events
    assert all("via gesture, " in m and "ms after its onset" in m for m in gesture_events)
    assert [m.split(" by ")[0] for m in events2] == ["take started", "subtask 'reach' started", "take aborted"]
    for t, (pose, _), g in zip([t for (t, p, _), (_, e) in zip(script, SESSION) if e],
                               [s for s in SESSION if s[1]], gestures):
        assert abs((g.onset_ns - epoch) / 1e9 - t) < 0.3, (pose, t, g)
    assert said == []   # cues = "off"


def test_the_documented_handsfree_table_parses():
    from pathlib import Path
    import re
    text = (Path(__file__).resolve().parent.parent / "docs" / "rig-config.md").read_text()
    block = re.search(r"## Hands-free operation.*?```toml\n(.*?)```", text, re.S).group(1)
    config = parse_config(small_sim_text("\n" + block))
    assert config.handsfree.gestures_on and config.handsfree.subtasks == ("reach", "pour", "place")
    assert config.handsfree.gestures["horns"] == "undo" and config.handsfree.pedal_keys["KEY_B"] == "start_stop"


def test_a_bad_sim_gesture_script_says_what_is_wrong():
    from drivers.sim.devices import SimOptions
    assert SimOptions(gestures=[[2, "fist", 1.0]]).gestures == ((2.0, "fist", 1.0),)
    for bad, says in (([[2, "wave", 1]], "wave"), ([[2, "fist"]], "not \\[t_s, name, duration_s\\]"),
                      ([[-1, "fist", 1]], "t_s >= 0")):
        with pytest.raises(ValueError, match=says):
            SimOptions(gestures=bad)


def test_serve_records_marks_and_speaks_by_gestures_with_no_display(tmp_path):
    """`capture-app serve` as an operator runs it (no display, no monitor): a take started, marked and saved
    by gestures, each cue said (in its log: espeak-ng has no sound card here)."""
    import os
    import subprocess
    import sys
    script = "[[4.0, \"spread\", 1.0], [5.6, \"thumb_little\", 1.0], [7.2, \"spread\", 1.0]]"
    config = tmp_path / "rig.toml"
    config.write_text(small_sim_text('\n[handsfree]\ngestures_on = true\nhold_s = 0.6\ncooldown_s = 0.7\n'
                                     'subtasks = ["reach"]\n', options={"left_glove": f"gestures = {script}"}))
    control = tmp_path / "run"
    control.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = tmp_path / "episodes"
    process = subprocess.Popen([sys.executable, "-m", "capture_app.cli", "serve", "--config", str(config), "--control",
                                f"ipc://{control}/control", "--out", str(out), "--wait", "0"],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    import threading
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), name="test-serve-log")
    reader.start()
    try:
        finished = threading.Event()
        deadline = now_ns() + int(120e9)   # a loaded machine starts the rig late: the script waits for nothing
        while not any("cue: take 1 saved, quality" in x or "cue: redo" in x for x in list(lines)) \
                and process.poll() is None and now_ns() < deadline:
            finished.wait(0.1)
    finally:
        process.send_signal(2)
        process.wait(120)
        reader.join(10)
    log = "".join(lines)
    assert process.returncode == 0, log[-3000:]
    cues = [line.split("cue: ", 1)[1].strip() for line in log.splitlines() if "cue: " in line]
    assert cues[:3] == ["recording, take 1", "reach", "take 1 saved"], log[-3000:]
    (path,) = out.glob("*.h5")
    with h5py.File(path, "r") as f:
        gesture = [m.decode().split(" by ")[0] for s, m in zip(f["events/source"][:], f["events/message"][:])
                   if s == b"gesture"]
        assert [s.label for s in read_segments(f)] == ["reach"]
    assert gesture == ["take started", "subtask 'reach' started", "take saved"]


def test_the_hands_free_control_client_drops_an_unreadable_answer_and_counts_it():
    """An answer that is not msgpack is dropped and counted (the request is resent), then the real answer is
    taken; an answer with id "" (the recorder could not read the request) ends the request with its error."""
    import threading

    import zmq

    from capture_app.bus import control_protocol as protocol
    from capture_app.handsfree.commands import ControlClient
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    router.bind("inproc://handsfree-control")
    client = ControlClient(context, "inproc://handsfree-control")
    answers = []

    def serve() -> None:
        peer, frame = router.recv_multipart()
        request_id, _, _ = protocol.parse_request(frame)
        router.send_multipart([peer, b"\xc1 not msgpack"])
        router.send_multipart([peer, protocol.reply(request_id, True, {"recording": True})])
        peer, frame = router.recv_multipart()
        router.send_multipart([peer, protocol.reply("", False, error="request unreadable: test")])
    server = threading.Thread(target=serve)
    server.start()
    try:
        answers.append(client.request("status"))
        answers.append(client.request("status"))
    finally:
        server.join(10)
        client.close()
        router.close(0)
        context.term()
    assert not server.is_alive()
    assert answers[0] == (True, {"recording": True}, "")
    assert client.malformed == 1
    assert answers[1] == (False, {}, "request unreadable: test")
