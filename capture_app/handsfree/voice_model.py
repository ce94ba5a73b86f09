"""A second opinion on the enrolled voice keyphrases: a small trained network that says how likely one
utterance is each phrase, or other talk. Pure math on 16 kHz mono audio (numpy arrays): no I/O but loading
its weights, no threads.

The network was trained by ``bench/train_keywords.py`` on espeak-ng voices of no bench set (named variants
only; every bench set uses bare voices or the numbered ones) and non-command sentences of no bench set, in
quiet, white noise and other people's talk. It knows the default phrases only (``KeywordModel.phrases``, in
its file's class order). The enrolled templates (``voice_templates``) still decide which phrase was said and
how near it is; this network can only refuse their choice (docs/voice-enrolment.md, "How an utterance is
matched", step 5).

Features (``features``): the speaker's own frames (``voice_templates.foreground``), widened by 3 frames before
and after, as natural-log mel-band powers (``voice_templates.mel_power``) less their mean over that stretch
(per band), resampled linearly to ``FRAMES`` frames, then the stretch's log duration (seconds) and the share
of its frames that are the speaker's. The network: standardise, two ReLU layers, softmax over the phrases
and "other".
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from capture_app.handsfree import voice_templates as vt

FRAMES = 40                 # the speaker's stretch resampled to this many frames
WIDEN = 3                   # frames kept before the speaker's first frame and after the last
MODEL_PATH = Path(__file__).with_name("keyword_model.npz")
FORMAT = "capture-app keyword model"


def features(audio: np.ndarray) -> np.ndarray | None:
    """The network's input for one utterance (16 kHz, int16 scale): ``FRAMES`` x ``voice_templates.N_MELS``
    values then 2; None when it holds under 5 frames (50 ms) of the speaker's speech."""
    power = vt.mel_power(audio)
    is_speaker = vt.foreground(vt.frame_energy(audio))
    speaker = np.flatnonzero(is_speaker)
    if len(speaker) < 5:
        return None
    first, end = max(int(speaker[0]) - WIDEN, 0), min(int(speaker[-1]) + WIDEN + 1, len(power))
    log_power = np.log(power[first:end])
    log_power -= log_power.mean(axis=0)
    at = np.linspace(0.0, len(log_power) - 1, FRAMES)
    lo = np.floor(at).astype(int)
    hi = np.minimum(lo + 1, len(log_power) - 1)
    w = (at - lo)[:, None]
    resampled = log_power[lo] * (1.0 - w) + log_power[hi] * w
    return np.concatenate([resampled.ravel(), [np.log((end - first) * vt.HOP / vt.RATE),
                                               is_speaker[first:end].mean()]])


class KeywordModel:
    """The trained networks (``load``): ``probabilities(features)`` over ``phrases`` then "other", the mean of
    the networks' softmax outputs."""

    def __init__(self, phrases: tuple[str, ...], mean: np.ndarray, scale: np.ndarray,
                 networks: list[list[tuple[np.ndarray, np.ndarray]]]):
        self.phrases = phrases
        self.mean, self.scale, self.networks = mean, scale, networks

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax over ``phrases`` + ["other"] for one feature vector (``features``), averaged over the
        networks."""
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        out = np.zeros(len(self.phrases) + 1)
        for layers in self.networks:
            h = z
            for i, (weights, bias) in enumerate(layers):
                h = h @ weights + bias
                if i < len(layers) - 1:
                    h = np.maximum(h, 0.0)
            h = np.exp(h - h.max())
            out += h / h.sum()
        return out / len(self.networks)

    def probability(self, audio: np.ndarray, phrase: str) -> tuple[float, bool]:
        """How likely ``audio`` (one utterance) is ``phrase``, and whether ``phrase`` is the network's most
        likely class; (0, False) when it holds too little speech or the network does not know the phrase."""
        x = features(audio)
        if x is None or phrase not in self.phrases:
            return 0.0, False
        p = self.probabilities(x)
        k = self.phrases.index(phrase)
        return float(p[k]), int(np.argmax(p)) == k


@lru_cache(maxsize=4)
def load(path: str | Path = MODEL_PATH) -> KeywordModel:
    """The networks stored in ``path`` (a ``numpy.savez`` archive, no pickles): ``meta`` (JSON: ``format``,
    ``version`` 1, ``phrases``, ``frames``, ``n_mels``, ``networks``), ``mean``, ``scale`` and, for network k
    and layer i, ``m{k}_w{i}`` and ``m{k}_b{i}``. Raises ValueError naming the file when it is not such a
    model."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT or meta.get("version") != 1 or meta.get("frames") != FRAMES \
                    or meta.get("n_mels") != vt.N_MELS:
                raise ValueError("another format, version or feature layout")
            networks = []
            for k in range(int(meta["networks"])):
                layers = []
                while f"m{k}_w{len(layers)}" in data:
                    i = len(layers)
                    layers.append((data[f"m{k}_w{i}"].astype(np.float64), data[f"m{k}_b{i}"].astype(np.float64)))
                networks.append(layers)
            model = KeywordModel(tuple(meta["phrases"]), data["mean"].astype(np.float64),
                                 data["scale"].astype(np.float64), networks)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a version 1 {FORMAT} for {FRAMES} frames of {vt.N_MELS} mel bands "
                         f"({exc}); reinstall capture-app or run bench/train_keywords.py again") from exc
    if not model.networks or any(not layers for layers in model.networks):
        raise ValueError(f"{path}: holds no network; reinstall capture-app or run bench/train_keywords.py again")
    return model
