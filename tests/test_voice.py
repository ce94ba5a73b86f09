"""Voice keyphrases (#26, point 3): espeak-ng says the phrases and ordinary kitchen talk, noise is mixed in,
and the audio goes block by block through the same path as the microphone. The full set and its figures:
bench/voice.py, docs/performance.md ("Voice keyphrases")."""

import os
import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")
pytest.importorskip("scipy")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (.ci/setup installs it)", allow_module_level=True)

from bench.voice import NON_COMMANDS, noisy, run, speech  # noqa: E402
from capture_app.core.errors import ConfigError  # noqa: E402
from capture_app.handsfree.voice import VoiceListener, VoiceRecogniser  # noqa: E402
from capture_app.rig.handsfree_config import DEFAULT_VOICE_PHRASES, HandsfreeConfig  # noqa: E402

PHRASES = tuple(DEFAULT_VOICE_PHRASES)
MIN_RATE = 0.95    # the goal


@pytest.mark.skipif(os.environ.get("CAPTURE_APP_TEST_VOICE_GOAL") != "1",
                    reason="the issue's goal (>= 95 %, no false command) with the enrolled recogniser and its "
                           "second opinion, on each held-out set (docs/performance.md, 'a second opinion that "
                           "was trained'); 5-7 minutes of CPU per set, so opt-in: CAPTURE_APP_TEST_VOICE_GOAL=1")
@pytest.mark.timeout(3600)   # a whole set: about an hour of audio, 5-7 min of CPU (more on a loaded machine)
@pytest.mark.parametrize("held_out", ["sixth", "heldout", "fresh", "third", "fourth", "fifth"])
def test_goal_on_the_held_out_voices(held_out):
    from bench.voice import SETS
    voices, speeds, seed = SETS[held_out]
    r = run(PHRASES, voices, speeds, 20.0, ("white", "babble"), seed=seed, engine="templates")
    assert r["false"] == [], r["false"]
    assert r["rate"] >= MIN_RATE, r["misses"]


def test_clear_phrases_are_commands_and_near_misses_are_not():
    """Fast (one voice, quiet white noise at 30 dB): every phrase heard, no near miss taken."""
    r = run(PHRASES, ("en-us",), (160,), 30.0, ("white",),
            ("stop recording me please", "take the next step", "start the kettle", "stop", "discard the peel"),
            noise_only_s=5)
    assert r["false"] == [], r["false"]
    assert r["recognised"] == r["commands"], r["misses"]


def test_a_phrase_inside_a_sentence_is_not_a_command():
    recogniser = VoiceRecogniser(PHRASES)
    rng = np.random.default_rng(1)
    for sentence in ("stop recording me please", "take the next step", "start the kettle"):
        sig = noisy(speech(sentence, "en-us", 160), 40, rng)
        got = [u for i in range(0, len(sig), 1600) for u in recogniser.feed(sig[i:i + 1600])] + recogniser.flush()
        assert [u.phrase for u in got if u.phrase] == [], got


def test_the_listener_submits_via_voice_with_the_utterance_onset():
    rng = np.random.default_rng(2)
    sig = noisy(speech("discard take", "en-us", 160), 40, rng, pad_s=(1.0, 1.0))
    got, done = [], threading.Event()
    listener = VoiceListener(HandsfreeConfig(voice_on=True), got.append,
                             source=(sig[i:i + 1600] for i in range(0, len(sig), 1600))).start()
    try:
        assert listener.finished.wait(60)
    finally:
        listener.close()
    assert [(c.name, c.via, c.detail) for c in got] == [("discard", "voice", '"discard take"')]
    start = listener.recogniser.utterances[0].start
    assert 0.7 * 16000 < start < 1.0 * 16000          # the utterance begins at the speech, not the block


def test_voice_input_that_stops_is_said_and_noted_for_the_take():
    def microphone_unplugged():
        yield np.zeros(1600, np.int16)
        raise OSError("[Errno 19] No such device")   # what PortAudio's read gives for a removed USB headset

    said, notes = [], []
    listener = VoiceListener(HandsfreeConfig(voice_on=True), lambda command: None, source=microphone_unplugged(),
                             cue=said.append, note=lambda level, text: notes.append((level, text))).start()
    try:
        assert listener.finished.wait(60)
    finally:
        listener.close()
    assert said == ["voice input stopped"]
    assert len(notes) == 1 and notes[0][0] == "error"
    assert "voice input stopped: [Errno 19] No such device" in notes[0][1] and "voice_device" in notes[0][1]


def test_bad_phrases_are_refused_with_the_field_named():
    with pytest.raises(ConfigError, match="voice_phrases"):
        HandsfreeConfig(voice_phrases={"Start Recording!": "start"})
    with pytest.raises(ConfigError, match="voice_phrases"):
        HandsfreeConfig(voice_phrases={"start recording": "launch"})
    with pytest.raises(ConfigError, match="dictionary"):
        VoiceRecogniser(["start zzyzxq"])
