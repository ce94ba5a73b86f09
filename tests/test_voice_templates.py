"""Enrolled voice keyphrases (#26, point 3, the fourth recogniser): the pure math of ``voice_templates``,
the enrolment file, ``capture-app voice-enrol`` and the template recogniser on synthesised speech through
the microphone's path. The full sets and their figures: ``python bench/voice.py``, docs/performance.md
("fourth recogniser")."""

import json
import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from capture_app.core.errors import ConfigError
from capture_app.handsfree import voice_templates as vt
from capture_app.handsfree.voice_enrolment import load_enrolment, save_enrolment

pytest.importorskip("scipy")


# -- pure math ---------------------------------------------------------------------------------------------

def test_subsequence_dtw_finds_the_template_where_it_lies():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(30, 13)) * 3
    a = np.concatenate([rng.normal(size=(20, 13)) * 3, b, rng.normal(size=(25, 13)) * 3])
    distance, first, last = vt.subsequence_dtw(a, b)
    assert distance == pytest.approx(0.0, abs=1e-9)
    assert (first, last) == (20, 49)


def test_subsequence_dtw_follows_a_slower_or_faster_utterance_and_pays_for_every_frame():
    rng = np.random.default_rng(1)
    b = np.cumsum(rng.normal(size=(40, 13)), axis=0)         # a smooth trajectory
    slow = np.repeat(b, 2, axis=0)[:79]                       # said twice as slowly
    fast = b[np.arange(0, 40, 1.5).astype(int)]               # 1.5 times as fast
    for a in (slow, fast):
        distance, first, last = vt.subsequence_dtw(a, b)
        assert first <= 1 and last >= len(a) - 2        # the duplicated first frame may be either
        assert distance < 0.5 * np.mean(np.linalg.norm(np.diff(b, axis=0), axis=1))
    # three times slower is beyond the slope limit of 2: the path cannot cover the utterance
    too_slow = np.repeat(b, 3, axis=0)
    d, first, last = vt.subsequence_dtw(too_slow, b)
    assert last - first + 1 <= 2 * len(b)


def test_subsequence_dtw_of_nothing_fits_nothing():
    assert vt.subsequence_dtw(np.zeros((1, 13)), np.zeros((5, 13))) == (float("inf"), 0, -1)
    assert vt.subsequence_dtw(np.zeros((5, 13)), np.zeros((1, 13))) == (float("inf"), 0, -1)


def test_features_are_frame_for_frame():
    audio = np.random.default_rng(2).normal(size=16000) * 1000
    power, energy = vt.mel_power(audio), vt.frame_energy(audio)
    assert power.shape == (1 + (16000 - vt.WIN) // vt.HOP, vt.N_MELS) and len(energy) == len(power)
    assert np.all(power > 0) and vt.cepstra(power).shape == (len(power), vt.N_CEPS)


def test_foreground_and_unsteadiness_tell_a_speaker_from_the_room():
    rng = np.random.default_rng(3)
    hiss = 1.0 + 0.05 * rng.random(80)                        # a steady background's frame energies
    energy = np.concatenate([hiss[:40], np.full(30, 1000.0), hiss[40:]])
    speaker = vt.foreground(energy)
    assert speaker.sum() == 30 and speaker[40:70].all()
    assert vt.unsteadiness_db(energy, speaker) < 0.3
    talk = energy.copy()
    talk[:15:3] = talk[95::3] = 30.0                          # other people's talk, away from the speaker
    assert vt.unsteadiness_db(talk, vt.foreground(talk)) > 6.0
    near = energy.copy()
    near[72:78] = 30.0                                        # the speaker's own trailing sounds do not count
    assert vt.unsteadiness_db(near, vt.foreground(near)) < 0.3


def test_sound_counts_quiet_words_over_a_steady_background_that_foreground_does_not():
    hiss = 1.0 + 0.05 * np.random.default_rng(4).random(100)
    energy = np.concatenate([hiss[:40], np.full(20, 15.0), np.full(30, 1000.0), hiss[40:]])   # quiet words, then loud
    assert not vt.foreground(energy)[40:60].any() and vt.foreground(energy)[60:90].all()
    audible = vt.sound(energy)
    assert audible[40:90].all() and not audible[:40].any() and not audible[90:].any()
    # just under SOUND_DB over the background is not sound, just over it is
    level = 1.0 + 1.0 * 10 ** (vt.SOUND_DB / 10)
    assert not vt.sound(np.concatenate([np.ones(50), [level * 0.99]]))[-1]
    assert vt.sound(np.concatenate([np.ones(50), [level * 1.01]]))[-1]


def _chirp(f0, f1, seconds, amplitude, ramp_s=None, rate=vt.RATE):
    """A linear chirp, Hann-shaped, or flat with ``ramp_s`` on and off."""
    t = np.arange(int(seconds * rate)) / rate
    shape = np.hanning(len(t)) if ramp_s is None else np.minimum(1.0, np.minimum(t, seconds - t) / ramp_s)
    return amplitude * shape * np.sin(2 * np.pi * (f0 + (f1 - f0) * t / seconds / 2) * t)


def test_quiet_words_before_a_phrase_in_a_steady_background_make_it_a_longer_sentence():
    """A "phrase" (two chirps) right after 0.12 s of quiet "words", 20 dB under the phrase and ~15 dB over a
    white background: the speaker's-speech check (within 15 dB of the loudest) does not see them, the sound
    check does (0.18 s with the phrase's soft onset, against 0.05 s for the phrase alone), and refuses."""
    rng = np.random.default_rng(6)
    phrase = np.concatenate([_chirp(300, 900, 0.3, 8000), _chirp(1200, 500, 0.35, 8000)])
    template = vt.make_template("next step", phrase + rng.normal(size=len(phrase)) * 3)
    quiet_words = _chirp(600, 1500, 0.12, 800, ramp_s=0.02)  # within AWAY_S of the phrase's loud frames, as
    #                                                           "it is a" before "small step"

    def said(*parts):
        x = np.concatenate([np.zeros(8000), *parts, np.zeros(8000)])
        return x + rng.normal(size=len(x)) * 80

    alone = vt.listen([template], said(phrase))
    assert alone.best == "next step" and vt.decide(alone) == "", alone
    assert alone.sound_before_s <= vt.MAX_SOUND_AROUND_S and alone.sound_after_s <= vt.MAX_SOUND_AROUND_S
    longer = vt.listen([template], said(quiet_words, phrase))
    assert longer.outside_s <= vt.MAX_OUTSIDE_S                       # not the speaker's loud speech ...
    assert longer.sound_before_s > vt.MAX_SOUND_AROUND_S               # ... but sound all the same
    assert "sound before" in vt.decide(longer), longer


def test_an_utterance_too_long_for_a_command_is_refused_without_being_matched(monkeypatch):
    """The segmenter's cuts longer than MAX_UTTERANCE_S (talk) never reach the templates; one of command
    length does."""
    from capture_app.handsfree import voice
    rng = np.random.default_rng(8)
    recogniser = voice.TemplateRecogniser([vt.Template("next step", rng.uniform(1, 100, size=(30, vt.N_MELS)))],
                                          ["next step"])
    matched = []
    monkeypatch.setattr(vt, "listen", lambda templates, audio: matched.append(len(audio)))
    quiet = lambda s: rng.normal(size=int(s * vt.RATE)) * 30                      # noqa: E731
    loud = lambda s: rng.normal(size=int(s * vt.RATE)) * 3000                     # noqa: E731
    stream = np.concatenate([quiet(1.0), loud(5.0), quiet(1.5), loud(1.0), quiet(1.5)])
    heard = [u for i in range(0, len(stream), 1600) for u in recogniser.feed(stream[i:i + 1600])]
    heard += recogniser.flush()
    lengths = [(u.end - u.start) / vt.RATE for u in heard]
    assert len(heard) == 2 and lengths[0] > voice.MAX_UTTERANCE_S, lengths
    assert heard[0].reason == "too short or too long" and heard[0].phrase is None
    assert heard[1].reason == "no speech"                       # what the stubbed matcher's None means
    assert len(matched) == 1 and voice.MIN_UTTERANCE_S * vt.RATE <= matched[0] <= voice.MAX_UTTERANCE_S * vt.RATE


def _heard(**kw):
    base = dict(best="next step", distance=3.0, runner_up=8.0, first=0, last=50, outside_s=0.0, unsteady_db=0.5)
    return vt.Heard(**{**base, **kw})


def test_decide_accepts_a_near_phrase_and_names_each_refusal():
    assert vt.decide(_heard()) == ""
    assert "speech outside" in vt.decide(_heard(outside_s=vt.MAX_OUTSIDE_S + 0.01))
    assert "another phrase" in vt.decide(_heard(distance=3.0, runner_up=3.0 + vt.MIN_MARGIN))
    assert "too far" in vt.decide(_heard(distance=vt.MAX_DISTANCE + 0.01))
    # an unsteady background (talk) allows more distance, 1 per dB beyond UNSTEADY_FROM_DB, up to the allowance
    far = vt.MAX_DISTANCE + 1.5
    assert "too far" in vt.decide(_heard(distance=far, unsteady_db=vt.UNSTEADY_FROM_DB + 1.4))
    assert vt.decide(_heard(distance=far, unsteady_db=vt.UNSTEADY_FROM_DB + 1.6)) == ""
    beyond = vt.MAX_DISTANCE + vt.UNSTEADY_ALLOWANCE + 0.01
    assert "too far" in vt.decide(_heard(distance=beyond, runner_up=beyond + 5, unsteady_db=30.0))
    # sound just before or after the phrase: a longer sentence in a steady background, not in talk (whose
    # sound is everywhere)
    around = vt.MAX_SOUND_AROUND_S + 0.01
    assert "sound before" in vt.decide(_heard(sound_before_s=around))
    assert "sound before" in vt.decide(_heard(sound_after_s=around))
    assert vt.decide(_heard(sound_before_s=vt.MAX_SOUND_AROUND_S, sound_after_s=vt.MAX_SOUND_AROUND_S)) == ""
    assert vt.decide(_heard(sound_before_s=around, distance=3.0, unsteady_db=vt.UNSTEADY_FROM_DB + 0.1)) == ""
    assert vt.decide(None) == "no speech"
    assert "length" in vt.decide(_heard(distance=float("inf"), runner_up=float("inf")))


def test_with_the_keyword_networks_opinion_the_distance_may_be_larger_but_the_network_can_refuse():
    sure, doubtful, other_class = (0.95, True), (vt.OPINION_MIN_PROBABILITY, True), (0.95, False)
    far = vt.MAX_DISTANCE + 0.5                      # too far for the distance alone, near enough with an opinion
    assert far < vt.OPINION_MAX_DISTANCE
    assert "too far" in vt.decide(_heard(distance=far))
    assert vt.decide(_heard(distance=far), sure) == ""
    assert "network doubts it (0.60)" in vt.decide(_heard(distance=far), doubtful)
    assert "another class more likely" in vt.decide(_heard(distance=3.0), other_class)
    # in talk: 1 per dB of unsteadiness beyond UNSTEADY_FROM_DB, up to OPINION_ALLOWANCE
    limit = vt.OPINION_MAX_DISTANCE + vt.OPINION_ALLOWANCE
    assert vt.decide(_heard(distance=limit - 0.01, runner_up=limit + 5, unsteady_db=30.0), sure) == ""
    assert "too far" in vt.decide(_heard(distance=limit + 0.01, runner_up=limit + 5, unsteady_db=30.0), sure)
    # the checks on the sentence around the phrase do not change
    assert "speech outside" in vt.decide(_heard(outside_s=vt.MAX_OUTSIDE_S + 0.01), sure)
    assert "another phrase" in vt.decide(_heard(distance=3.0, runner_up=3.0 + vt.MIN_MARGIN), sure)


def test_a_silent_recording_cannot_be_a_template():
    with pytest.raises(vt.EnrolmentError, match="closer to the microphone"):
        vt.make_template("next step", np.random.default_rng(3).normal(size=16000) * 3)


# -- the enrolment file (docs/voice-enrolment.md) ---------------------------------------------------------------

def _templates(phrases=("start recording", "next step")):
    rng = np.random.default_rng(4)
    return [vt.Template(p, rng.uniform(1, 100, size=(20 + i, vt.N_MELS))) for p in phrases for i in range(2)]


def test_enrolment_file_round_trip(tmp_path):
    templates = _templates()
    path = save_enrolment(tmp_path / "voice.npz", templates)
    back = load_enrolment(path, ["next step"])
    assert [t.phrase for t in back] == [t.phrase for t in templates]
    for a, b in zip(back, templates):
        np.testing.assert_allclose(a.power, b.power, rtol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))


def test_enrolment_file_faults_say_what_where_and_how(tmp_path):
    path = save_enrolment(tmp_path / "voice.npz", _templates())
    with pytest.raises(ConfigError, match=r"no recordings of \['undo mark'\].*voice-enrol"):
        load_enrolment(path, ["undo mark", "next step"])
    with pytest.raises(ConfigError, match="no such file.*voice-enrol"):
        load_enrolment(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"\x00not a zip")
    with pytest.raises(ConfigError, match="junk.npz.*not a voice enrolment file.*voice-enrol"):
        load_enrolment(tmp_path / "junk.npz")

    def rewrite(name, meta_change=None, power=None):
        with np.load(path) as archive:
            meta, p = json.loads(str(archive["meta"])), archive["power"]
        meta.update(meta_change or {})
        np.savez(tmp_path / name, meta=np.array(json.dumps(meta)), power=p if power is None else power)
        return tmp_path / name

    with pytest.raises(ConfigError, match="version 2, this recorder reads version 1"):
        load_enrolment(rewrite("v2.npz", {"version": 2}))
    with pytest.raises(ConfigError, match="features"):
        load_enrolment(rewrite("rate.npz", {"rate": 8000}))
    with pytest.raises(ConfigError, match="not a voice enrolment file"):
        load_enrolment(rewrite("other.npz", {"format": "something else"}))
    with pytest.raises(ConfigError, match="damaged"):
        load_enrolment(rewrite("short.npz", power=np.ones((5, vt.N_MELS), np.float32)))
    with pytest.raises(ConfigError, match="damaged"):
        load_enrolment(rewrite("nan.npz", power=np.full((82, vt.N_MELS), np.nan, np.float32)))
    with pytest.raises(ConfigError, match="malformed"):
        load_enrolment(rewrite("list.npz", {"templates": [{"phrase": "x"}]}))


def test_the_rig_config_names_the_enrolment_relative_to_itself(tmp_path):
    from importlib import resources

    from capture_app.rig.config import DEFAULT_SIM_CONFIG, load_config
    text = resources.files("capture_app.configs").joinpath(DEFAULT_SIM_CONFIG).read_text()
    assert "[handsfree]" not in text
    text += '\n[handsfree]\nvoice_on = true\nvoice_enrolment = "voice.npz"\n'
    (tmp_path / "rig.toml").write_text(text)
    config = load_config(tmp_path / "rig.toml")
    assert config.handsfree.voice_enrolment == str(tmp_path / "voice.npz")


# -- on synthesised speech (espeak-ng), through the microphone's path -------------------------------------------

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (.ci/setup installs it)")


def _feed(recogniser, sig):
    recogniser.reset()
    got = [u for i in range(0, len(sig), 1600) for u in recogniser.feed(sig[i:i + 1600])] + recogniser.flush()
    return [u.phrase for u in got if u.phrase]


@needs_espeak
def test_an_enrolled_voice_is_heard_in_white_noise_and_talk_and_near_misses_are_not():
    """One voice of a held-out set (en-gb-x-rp), at a speed of neither the enrolment nor the tuning, with
    white noise and with four other people talking, both at 20 dB under the speech: every phrase heard in
    white noise, all but at most one with the talk, no near miss or ordinary sentence taken."""
    from bench.voice import babble_track, enrol, noisy, speech
    from capture_app.handsfree.voice import TemplateRecogniser
    from capture_app.rig.handsfree_config import DEFAULT_VOICE_PHRASES
    phrases = tuple(DEFAULT_VOICE_PHRASES)
    voice = "en-gb-x-rp"
    recogniser = TemplateRecogniser(enrol(phrases, voice), phrases)
    rng = np.random.default_rng(5)
    babble = babble_track(("en-us", "en-us+f3", "en-gb-x-gbclan", "en-us+m5"), seconds=20)
    for kind in ("white", "babble"):
        heard = [_feed(recogniser, noisy(speech(phrase, voice, 165), 20, rng, kind, babble)) for phrase in phrases]
        missed = [(p, recogniser.utterances[-1]) for p, h in zip(phrases, heard) if h != [p]]
        assert all(h in ([], [p]) for p, h in zip(phrases, heard)), heard       # never another phrase
        # white noise: every phrase; talk: the bench's held-out rate (94-98 %) allows a miss in 7
        assert len(missed) <= (0 if kind == "white" else 1), (kind, missed)
        for sentence in ("stop recording me please", "take the next step", "start the kettle", "discard the peel",
                         "end of the day", "stop", "next", "recording", "abort the mission", "undo the knot on the bag"):
            assert _feed(recogniser, noisy(speech(sentence, voice, 165), 20, rng, kind, babble)) == [], \
                (kind, sentence, recogniser.utterances[-3:])


@needs_espeak
def test_enrol_from_a_live_stream_takes_the_next_utterance_after_each_prompt():
    from bench.voice import speech
    from capture_app.handsfree.enrol_command import enrol_from_blocks
    phrases = ("next step", "undo mark")
    rng = np.random.default_rng(6)
    quiet = lambda s: rng.normal(size=int(s * 16000)) * 3
    parts = [quiet(1.0)]
    for phrase in phrases:
        for speed in (150, 180):
            parts += [speech(phrase, "en-us", speed), quiet(1.2)]
    stream = np.concatenate(parts).astype(np.int16)
    prompts = []
    templates = enrol_from_blocks(phrases, 2, (stream[i:i + 1600] for i in range(0, len(stream), 1600)),
                                  prompts.append)
    assert [t.phrase for t in templates] == ["next step", "next step", "undo mark", "undo mark"]
    assert prompts == ['say "next step" (1 of 2)', 'say "next step" (2 of 2)', 'say "undo mark" (1 of 2)',
                       'say "undo mark" (2 of 2)']
    assert all(40 < len(t.power) < 120 for t in templates)     # the words, not the quiet around them
    with pytest.raises(ConfigError, match="microphone stopped"):
        enrol_from_blocks(phrases, 3, (stream[i:i + 1600] for i in range(0, len(stream), 1600)), prompts.append)


@needs_espeak
def test_voice_enrol_command_then_the_listener_uses_the_enrolment(tmp_path):
    """`capture-app voice-enrol --from-wavs` writes the file; a recorder's VoiceListener configured with it
    submits the command of a phrase heard, via voice (no pocketsphinx involved)."""
    from scipy.io import wavfile

    from bench.voice import noisy, speech
    from capture_app.cli import main
    from capture_app.handsfree.enrol_command import wav_name
    from capture_app.handsfree.voice import TemplateRecogniser, VoiceListener
    from capture_app.rig.handsfree_config import DEFAULT_VOICE_PHRASES, HandsfreeConfig
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for phrase in DEFAULT_VOICE_PHRASES:
        for take, speed in enumerate((145, 160, 175), start=1):
            wavfile.write(wavs / wav_name(phrase, take), 16000, speech(phrase, "en", speed).astype(np.int16))
    out = tmp_path / "voice.npz"
    assert main(["voice-enrol", "--out", str(out), "--from-wavs", str(wavs), "--takes", "3"]) == 0
    assert len(load_enrolment(out, DEFAULT_VOICE_PHRASES)) == 3 * len(DEFAULT_VOICE_PHRASES)
    (wavs / wav_name("undo mark", 2)).unlink()
    assert main(["voice-enrol", "--out", str(tmp_path / "x.npz"), "--from-wavs", str(wavs), "--takes", "3"]) == 2

    sig = noisy(speech("discard take", "en", 190), 25, np.random.default_rng(7), pad_s=(1.0, 1.0))
    got = []
    listener = VoiceListener(HandsfreeConfig(voice_on=True, voice_enrolment=str(out)), got.append,
                             source=(sig[i:i + 1600] for i in range(0, len(sig), 1600))).start()
    try:
        assert listener.finished.wait(60)
    finally:
        listener.close()
    assert isinstance(listener.recogniser, TemplateRecogniser)
    assert [(c.name, c.via, c.detail) for c in got] == [("discard", "voice", '"discard take"')]


@pytest.mark.skipif(os.environ.get("CAPTURE_APP_TEST_VOICE_GOAL") != "1",
                    reason="the whole held-out set (4 voices x 3 speeds x 2 noises, 54 min of non-command audio) "
                           "takes about 6 minutes of CPU: opt-in, CAPTURE_APP_TEST_VOICE_GOAL=1")
@needs_espeak
def test_goal_on_the_held_out_voices_with_enrolment():
    from bench.voice import HELDOUT_SEED, HELDOUT_SPEEDS, HELDOUT_VOICES, run
    from capture_app.rig.handsfree_config import DEFAULT_VOICE_PHRASES
    r = run(tuple(DEFAULT_VOICE_PHRASES), HELDOUT_VOICES, HELDOUT_SPEEDS, 20.0, ("white", "babble"),
            seed=HELDOUT_SEED, engine="templates")
    assert r["false"] == [], r["false"]
    assert r["rate"] >= 0.95, r["misses"]


@needs_espeak
def test_a_take_by_voice_alone_through_the_recorder(tmp_path):
    """A recorder with `voice_enrolment` set: "start recording", "next step", "end step", "stop recording"
    said into its voice input (the microphone's path, fed from a file) make one take whose /events hold each
    command via voice, like a pedal's or a gesture's."""
    import h5py

    from bench.voice import enrol, noisy, speech
    from capture_app.core.clock import now_ns
    from capture_app.handsfree.runner import Handsfree
    from capture_app.recorder.control_server import ControlServer, status_of
    from capture_app.recorder.session import CaptureSession
    from capture_app.recorder.takes import Takes
    from capture_app.rig.config import parse_config
    from capture_app.rig.handsfree_config import DEFAULT_VOICE_PHRASES
    from tests.conftest import small_sim_text

    enrolment = save_enrolment(tmp_path / "voice.npz", enrol(tuple(DEFAULT_VOICE_PHRASES), "en-us"))
    config = parse_config(small_sim_text(f'\n[handsfree]\nsubtasks = ["reach"]\nvoice_on = true\n'
                                         f'voice_enrolment = "{enrolment}"\n'))
    said, handsfree_box = [], []
    rng = np.random.default_rng(8)

    def wait(predicate, timeout_s=60.0):
        deadline = now_ns() + int(timeout_s * 1e9)
        while not predicate() and now_ns() < deadline:
            threading.Event().wait(0.02)
        return predicate()

    def microphone():
        """Each phrase once the command before it is done, as a person waits for the cue."""
        for n, phrase in enumerate(("start recording", "next step", "end step", "stop recording")):
            assert wait(lambda: handsfree_box and len(handsfree_box[0].commander.done) == n)
            if phrase == "end step":     # talk that is no command, during the take
                sig = noisy(speech("put the bowl on the table", "en-us", 165), 30, rng, pad_s=(0.8, 1.2))
                yield from (sig[i:i + 1600] for i in range(0, len(sig), 1600))
            sig = noisy(speech(phrase, "en-us", 165), 30, rng, pad_s=(0.8, 1.2))
            yield from (sig[i:i + 1600] for i in range(0, len(sig), 1600))

    with CaptureSession(config) as session:
        assert session.wait_for_streams(20) == []
        takes = Takes(session, tmp_path / "episodes")
        server = ControlServer(session, takes, f"ipc://{tmp_path / 'control'}").start()
        try:
            handsfree = Handsfree(session, takes, server, cue_sink=said.append, voice_source=microphone())
            handsfree_box.append(handsfree)
            with handsfree:
                assert wait(lambda: len(handsfree.commander.done) == 4), handsfree.voice.recogniser.utterances
                feed = status_of(session, takes)["handsfree"]    # the state feed counts the talk live
                takes.wait_finalized()
                done = list(handsfree.commander.done)
        finally:
            server.close()
    assert [(c.name, ok) for c, ok, _ in done] == [("start", True), ("next_subtask", True), ("end_subtask", True),
                                                  ("stop", True)]
    path = next((tmp_path / "episodes").glob("*.h5"))
    with h5py.File(path, "r") as f:
        voice = [(int(t), m.decode()) for t, s, m in zip(f["events/t_ns"][:], f["events/source"][:],
                                                        f["events/message"][:]) if s == b"voice"]
        stop_ns = int(f.attrs["stop_monotonic_ns"])
        labels = [x.decode() for x in f["annotations/subtasks/label"][:]]
        ends = f["annotations/subtasks/end_ns"][:]
    commands = [m for _, m in voice if " via voice, " in m]
    assert [m.split(" by ")[0] for m in commands] == ["take started", "subtask 'reach' started", "subtask ended",
                                                      "take saved"], voice
    assert all("ms after its onset" in m for m in commands), voice
    refused = [(t, m) for t, m in voice if " via voice, " not in m]   # the talk: counted, kept, at its onset
    assert [m.split(" heard, ")[1].split(" (")[0] for _, m in refused] == ["not taken as a command"], voice
    # at its onset, reckoned from the samples fed (this feed runs faster than real time, so it can lie before
    # the take's start; a microphone's cannot)
    assert refused[0][1].startswith("speech of ") and refused[0][0] < stop_ns, voice
    assert handsfree.voice.refused == 1
    assert (feed["voice"], feed["voice_refused"], feed["missing"]) == ("listening", 1, []), feed
    assert labels == ["reach"] and ends[0] > 0      # opened by "next step", closed by "end step"


def test_wavs_of_any_common_sample_format_and_rate_read_on_the_int16_scale(tmp_path):
    from scipy.io import wavfile

    from capture_app.handsfree.enrol_command import read_wav
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)                          # half of full scale
    expected_rms = 0.5 * 32767 / np.sqrt(2)
    forms = {"int16": (tone * 32767).astype(np.int16), "float32": tone.astype(np.float32),
             "uint8": (tone * 127 + 128).astype(np.uint8), "int32": (tone * 2 ** 31).astype(np.int32),
             "stereo": np.stack([(tone * 32767).astype(np.int16)] * 2, axis=1)}
    for name, data in forms.items():
        wavfile.write(tmp_path / f"{name}.wav", 16000, data)
        x = read_wav(tmp_path / f"{name}.wav")
        assert len(x) == 16000 and np.sqrt(np.mean(x ** 2)) == pytest.approx(expected_rms, rel=0.02), name
    wavfile.write(tmp_path / "44k.wav", 44100, (0.5 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100) * 32767)
                  .astype(np.int16))
    x = read_wav(tmp_path / "44k.wav")
    assert len(x) == 16000 and np.sqrt(np.mean(x[100:-100] ** 2)) == pytest.approx(expected_rms, rel=0.02)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....")
    with pytest.raises(ConfigError, match="bad.wav: not a readable WAV file"):
        read_wav(tmp_path / "bad.wav")


def test_voice_enrol_says_what_is_wrong_before_anyone_records(tmp_path, monkeypatch, capsys):
    """A bad --out is refused before the first prompt; a missing sounddevice, an unplugged microphone and
    Ctrl-C end the command with a clear line and write no file."""
    from capture_app.cli import main
    from capture_app.handsfree import enrol_command

    def must_not_record(device, stop):
        raise AssertionError("the microphone was opened before --out was checked")

    monkeypatch.setattr(enrol_command, "microphone_blocks", must_not_record)
    assert main(["voice-enrol", "--out", str(tmp_path / "missing-dir" / "voice.npz")]) == 2
    assert "missing-dir does not exist or is not writable" in capsys.readouterr().err

    def failing(exc):
        def blocks(device, stop):
            raise exc
            yield  # a generator, as the real one
        return blocks

    class PortAudioError(Exception):   # what sounddevice raises for a missing or busy input device
        pass

    for exc, expected in ((ImportError("No module named 'sounddevice'"), "sounddevice is not installed.*--from-wavs"),
                          (PortAudioError("Error querying device 7"), "microphone '7' cannot be read.*--device")):
        monkeypatch.setattr(enrol_command, "microphone_blocks", failing(exc))
        args = ["voice-enrol", "--out", str(tmp_path / "voice.npz")] + (["--device", "7"] if "querying" in str(exc) else [])
        assert main(args) == 2
        assert re.search(expected, capsys.readouterr().err)
    monkeypatch.setattr(enrol_command, "microphone_blocks", failing(KeyboardInterrupt()))
    assert main(["voice-enrol", "--out", str(tmp_path / "voice.npz")]) == 130
    assert "not written" in capsys.readouterr().err
    assert not list(tmp_path.glob("voice.npz*"))
