"""Train the keyword network that gives the enrolled voice recogniser its second opinion
(``capture_app/handsfree/voice_model.py``) and write ``capture_app/handsfree/keyword_model.npz``.

Training material, none of it from a bench set (``bench/voice.py``):

* voices: the 8 English espeak-ng voices, each with one of ``VARIANTS``, all *named* variants (every
  bench set uses a bare voice or a numbered variant, m1-m8 / f1-f5);
* each voice says the 7 default phrases and 12 sentences made up by ``sentence`` (no sentence of
  ``bench.voice.NON_COMMANDS`` or ``HARD_SENTENCES``): a phrase's first word then other words ("stop the
  car"), a phrase inside a longer sentence, one or two words, and 3-8 random words; each at a random speed
  (120-215 words/min) and pitch (20-80), in quiet, white noise or four other training voices talking
  (12-32 dB under the speech);
* each stream goes through the recorder's own segmenter; an utterance that holds at least 80 % of a
  phrase's audio is that phrase, every other utterance is "other".

Six batches of this (``BATCHES``: voice half, seed, rounds over the voices, how often babble is drawn), then
an ensemble of ``MODELS`` scikit-learn MLPs (two ReLU layers, early stopping), stored as their layers (the
recorder needs numpy only). About 25 minutes on the 2-core machine of docs/performance.md (13 of them making
the material); espeak-ng's WAVs are cached in ``bench.voice.CACHE``. Needs scikit-learn, only here:
``pip install -e '.[voice-train]'``.

    python bench/train_keywords.py [--out capture_app/handsfree/keyword_model.npz] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.voice as bv  # noqa: E402
from capture_app.handsfree import voice_model  # noqa: E402
from capture_app.handsfree.voice import MAX_UTTERANCE_S, MIN_UTTERANCE_S, RATE, Segmenter  # noqa: E402
from capture_app.rig.handsfree_config import DEFAULT_VOICE_PHRASES  # noqa: E402

PHRASES = tuple(DEFAULT_VOICE_PHRASES)
BASES = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("adam", "Alex", "Alicia", "Andy", "Annie", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed",
            "edward", "Gene", "gustave", "iven", "Jacky", "john", "linda", "max", "Michael", "Mike", "norbert", "paul",
            "quincy", "rob", "robert", "steph", "travis", "victor", "zac", "shelby", "grandma", "grandpa", "klatt",
            "Lee", "Hugo", "Denis")
WORDS = ("the a this that it my your our pan pot bowl cup knife spoon fork plate lid towel oven stove sink tap water "
         "milk salt sugar flour egg eggs onion garlic bread butter oil rice pasta sauce soup tea coffee kettle timer "
         "board bag box jar can drawer shelf table counter fridge door window light heat fan chair dish glass "
         "put take pass hand open close turn wash rinse cut chop slice stir mix pour boil fry bake heat cool wait "
         "look hold move lift drop grab place set clean wipe dry fill empty check find need want like make cook "
         "is are was be will can could should would do did have has go come get give keep let see say tell "
         "now then here there again still just only very really too more less some all any one two three four five "
         "left right up down over under in on off into out from with without for to of at by near next back "
         "first last quick slow small big hot cold warm full good nice done ready late early new old "
         "please okay yes no maybe sure thanks sorry well so and but or if when because while "
         "stop start end step mark take record recording undo abort discard").split()
FIRST_WORD_THEN = {"start": "the engine the car over again reading the oven the timer now it cooking".split(),
                   "stop": "the timer it there that now the car right here talking cooking".split(),
                   "next": "one time week to it door please up".split(), "end": "of it the call now the day game".split(),
                   "abort": "the plan now it that the launch".split(), "undo": "the knot it that the lid".split(),
                   "discard": "it the peel the box that them".split(), "mark": "it the box my words the spot".split()}
BANNED = set(bv.NON_COMMANDS) | set(bv.HARD_SENTENCES) | set(PHRASES)
OTHER = len(PHRASES)                 # the class of everything that is not a phrase
ITEMS_PER_VOICE = 19                 # the 7 phrases and 12 other sentences
# (which half of the voices, seed, rounds over them, noise kinds drawn from)
BATCHES = ((0, 100, 1, ("quiet", "white", "babble")), (1, 200, 1, ("quiet", "white", "babble")),
           (0, 300, 3, ("quiet", "white", "babble")), (1, 400, 3, ("quiet", "white", "babble")),
           (0, 500, 3, ("quiet", "white", "babble", "babble")), (1, 600, 3, ("quiet", "white", "babble", "babble")))
HIDDEN, ALPHA, MODELS = (256, 128), 1e-3, 5


def sentence(rng) -> str:
    """One made-up non-command sentence."""
    r = rng.random()
    if r < 0.30:   # a phrase's first word, then other words
        word = list(FIRST_WORD_THEN)[rng.integers(len(FIRST_WORD_THEN))]
        tail = FIRST_WORD_THEN[word]
        return " ".join([word] + [tail[rng.integers(len(tail))] for _ in range(rng.integers(1, 3))])
    if r < 0.42:   # a phrase inside a longer sentence
        phrase = PHRASES[rng.integers(len(PHRASES))]
        before = [WORDS[rng.integers(len(WORDS))] for _ in range(rng.integers(0, 3))]
        after = [WORDS[rng.integers(len(WORDS))] for _ in range(rng.integers(1 if not before else 0, 3))]
        return " ".join(before + [phrase] + after)
    if r < 0.52:   # one or two words
        return " ".join(WORDS[rng.integers(len(WORDS))] for _ in range(rng.integers(1, 3)))
    return " ".join(WORDS[rng.integers(len(WORDS))] for _ in range(rng.integers(3, 9)))


def utterances(signal: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The recorder's segmenter over one stream: (start sample, audio) of each utterance."""
    segmenter = Segmenter()
    out = []
    for block in bv.blocks(signal):
        out += segmenter.feed(block)
    return out + segmenter.flush()


def batch(part: int, seed: int, rounds: int, kinds: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One batch's (features, labels)."""
    rng = np.random.default_rng(seed)
    voices = [f"{b}+{v}" for b in BASES for v in VARIANTS][part::2]
    babble_sentences = [s for s in (sentence(rng) for _ in range(200)) if s not in BANNED]
    talkers = [voices[i] for i in rng.choice(len(voices), 4, replace=False)]
    babble = bv.babble_track(talkers, seconds=120.0, sentences=babble_sentences)
    features, labels = [], []
    for _ in range(rounds):
        for voice in voices:
            items = [(p, PHRASES.index(p)) for p in PHRASES]
            while len(items) < ITEMS_PER_VOICE:
                s = sentence(rng)
                if s not in BANNED:
                    items.append((s, OTHER))
            for text, label in items:
                speed, pitch = int(rng.integers(120, 216)), int(rng.integers(20, 81))
                x = bv.speech(text, voice, speed, pitch)
                kind = kinds[rng.integers(len(kinds))]
                snr = 45.0 if kind == "quiet" else float(rng.uniform(12, 32))
                lead_s = float(rng.uniform(0.4, 1.0))
                signal = bv.noisy(x, snr, rng, "white" if kind == "quiet" else kind, babble, pad_s=(lead_s, 1.0))
                speech_from, speech_to = int(lead_s * RATE), int(lead_s * RATE) + len(x)
                for start, audio in utterances(signal):
                    if not MIN_UTTERANCE_S * RATE <= len(audio) <= MAX_UTTERANCE_S * RATE:
                        continue
                    f = voice_model.features(np.asarray(audio, np.int16))
                    if f is None:
                        continue
                    held = max(0, min(speech_to, start + len(audio)) - max(speech_from, start))
                    features.append(f)
                    labels.append(label if label != OTHER and held >= 0.8 * len(x) else OTHER)
    return np.array(features, np.float32), np.array(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(voice_model.MODEL_PATH))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    t0 = time.time()
    with ProcessPoolExecutor(args.jobs) as pool:
        parts = list(pool.map(batch, *zip(*BATCHES)))
    x = np.concatenate([p[0] for p in parts]).astype(np.float64)
    y = np.concatenate([p[1] for p in parts])
    print(f"{len(y)} utterances, per class {np.bincount(y).tolist()}, made in {time.time() - t0:.0f} s", flush=True)
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    arrays = {"mean": scaler.mean_.astype(np.float32), "scale": scaler.scale_.astype(np.float32)}
    for k in range(MODELS):
        m = MLPClassifier(hidden_layer_sizes=HIDDEN, alpha=ALPHA, max_iter=200, early_stopping=True,
                          random_state=k).fit(z, y)
        print(f"network {k}: {m.n_iter_} passes, {time.time() - t0:.0f} s", flush=True)
        for i, (w, b) in enumerate(zip(m.coefs_, m.intercepts_)):
            arrays[f"m{k}_w{i}"], arrays[f"m{k}_b{i}"] = w.astype(np.float32), b.astype(np.float32)
    meta = {"format": voice_model.FORMAT, "version": 1, "phrases": list(PHRASES), "frames": voice_model.FRAMES,
            "n_mels": voice_model.vt.N_MELS, "networks": MODELS, "trained_on": len(y),
            "made_by": "bench/train_keywords.py"}
    np.savez_compressed(args.out, meta=np.array(json.dumps(meta)), **arrays)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
