"""The keyword network that gives the enrolled voice recogniser a second opinion (``voice_model``, #26
point 3): its file, its forward pass, and what it makes of voices and sentences it was not trained on. How it
was trained: bench/train_keywords.py; its figures: docs/performance.md ("a second opinion that was trained")."""

import json

import numpy as np
import pytest

from capture_app.handsfree import voice_model
from capture_app.rig.handsfree_config import DEFAULT_VOICE_PHRASES

pytest.importorskip("scipy")


def test_the_shipped_network_knows_the_default_phrases():
    model = voice_model.load()
    assert model.phrases == tuple(DEFAULT_VOICE_PHRASES)
    assert len(model.networks) >= 1 and all(len(layers) == 3 for layers in model.networks)
    x = np.random.default_rng(0).normal(size=model.mean.shape)
    p = model.probabilities(x)
    assert p.shape == (len(model.phrases) + 1,) and p.sum() == pytest.approx(1.0) and (p >= 0).all()


def test_the_forward_pass_is_the_mean_of_each_networks_softmax():
    """Two one-layer-hidden networks with known weights against the same sums done by hand."""
    rng = np.random.default_rng(1)
    mean, scale = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
    nets = [[(rng.normal(size=(3, 4)), rng.normal(size=4)), (rng.normal(size=(4, 2)), rng.normal(size=2))]
            for _ in range(2)]
    model = voice_model.KeywordModel(("a",), mean, scale, nets)
    x = rng.normal(size=3)
    expected = []
    for (w0, b0), (w1, b1) in nets:
        hidden = [max(0.0, sum((x[i] - mean[i]) / scale[i] * w0[i, j] for i in range(3)) + b0[j]) for j in range(4)]
        logits = [sum(hidden[j] * w1[j, k] for j in range(4)) + b1[k] for k in range(2)]
        e = np.exp(np.array(logits) - max(logits))
        expected.append(e / e.sum())
    np.testing.assert_allclose(model.probabilities(x), np.mean(expected, axis=0), rtol=1e-12)


def test_a_damaged_or_foreign_file_is_refused_with_its_name_and_what_to_do(tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"model\.npz: not a version 1 .*bench/train_keywords\.py"):
        voice_model.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array(json.dumps({"format": "something else", "version": 1})))
    with pytest.raises(ValueError, match=r"other\.npz: not a version 1"):
        voice_model.load(other)


def test_a_recogniser_whose_network_cannot_load_lets_the_distance_decide(monkeypatch, caplog):
    from capture_app.handsfree import voice
    from capture_app.handsfree import voice_templates as vt

    def broken(path=None):
        raise ValueError("keyword_model.npz: not a version 1 capture-app keyword model")

    monkeypatch.setattr(voice_model, "load", broken)
    rng = np.random.default_rng(2)
    recogniser = voice.TemplateRecogniser([vt.Template("next step", rng.uniform(1, 100, size=(30, vt.N_MELS)))],
                                          ["next step"])
    assert recogniser.model is None
    assert "no second opinion on voice phrases" in caplog.text and "keyword_model.npz" in caplog.text


def test_it_knows_a_phrase_in_a_voice_it_never_heard_and_doubts_other_talk():
    """espeak-ng voices with numbered variants (never in its training) saying phrases and near misses of the
    bench's kitchen talk (never in its training either), in light noise."""
    import shutil
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (.ci/setup installs it)")
    from bench.voice import noisy, speech
    model = voice_model.load()
    rng = np.random.default_rng(3)
    for voice, phrase in (("en-us+m3", "next step"), ("en-gb-x-rp+f2", "stop recording"), ("en-029", "undo mark")):
        p, most_likely = model.probability(noisy(speech(phrase, voice, 165), 30, rng), phrase)
        assert most_likely and p > 0.9, (voice, phrase, p)
    for voice, said, phrase in (("en-us+m3", "next to the stove", "next step"),
                                ("en-us+f4", "abort the mission", "abort take"),
                                ("en-us", "stop recording me please", "stop recording")):
        p, _ = model.probability(noisy(speech(said, voice, 165), 30, rng), phrase)
        assert p < 0.3, (voice, said, p)


def test_the_rig_config_can_turn_the_second_opinion_off(tmp_path):
    from capture_app.core.errors import ConfigError
    from capture_app.handsfree import voice_templates as vt
    from capture_app.handsfree.voice import make_recogniser
    from capture_app.handsfree.voice_enrolment import save_enrolment
    from capture_app.rig.config import parse_config
    from tests.conftest import small_sim_text

    rng = np.random.default_rng(5)
    enrolment = save_enrolment(tmp_path / "voice.npz",
                               [vt.Template(p, rng.uniform(1, 100, size=(30, vt.N_MELS))) for p in DEFAULT_VOICE_PHRASES])

    def recogniser(line):
        config = parse_config(small_sim_text(f'\n[handsfree]\nvoice_on = true\nvoice_enrolment = "{enrolment}"\n{line}'))
        return make_recogniser(config.handsfree)

    assert recogniser("").model is not None                                  # on by default
    assert recogniser("voice_second_opinion = false\n").model is None
    with pytest.raises(ConfigError, match="voice_second_opinion"):
        recogniser('voice_second_opinion = "maybe"\n')
