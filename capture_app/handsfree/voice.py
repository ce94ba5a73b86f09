"""Spoken keyphrases as commands (the ``voice`` extra: pocketsphinx, sounddevice), offline, in the recorder.

Two recognisers share the segmenter and the listener: ``TemplateRecogniser`` matches the operator's own
enrolled recordings (``voice_templates``; ``[handsfree] voice_enrolment``; docs/voice-enrolment.md), the
recommended one; ``VoiceRecogniser``, described below, needs no enrolment and hears far less.

Audio is 16 kHz mono int16 (``RATE``), from a microphone (sounddevice) or any iterable of blocks (tests,
``bench/voice.py``): both take the same path. An energy detector (``Segmenter``) cuts the stream into
utterances; each utterance of 0.25-4 s is decoded once (batch cepstral mean, ``full_utt``) by pocketsphinx
with a JSGF grammar of the configured phrases alone, and the phrase it finds is a command only if it
passes three checks (``VoiceRecogniser``): the words cover the loud audio, no word swallowed others
(``MAX_STRETCH``), every word fits the audio (``MIN_WORD_SCORE``). Not keyword spotting: a phrase inside a
longer sentence is not a command.

The fit of a word is its acoustic log likelihood per 10 ms frame relative to the best of ALL the model's
5126 senones in that frame (``compallsen``): a likelihood ratio against an unconstrained competitor, so a
word forced onto other speech scores far below 0 while the phrase actually said stays nearer it. Without
``compallsen`` pocketsphinx only scores the senones the grammar keeps alive and forced words were much
harder to tell from true ones. (A free phone loop as the competitor measured the same as the best senone:
both follow the audio frame by frame.) A phone insertion penalty (``PHONE_PENALTY``, pocketsphinx
``-pip``) chosen on the tuning set lets more true phrases through at the same false-command count.
Below the issue's goal (docs/performance.md, "third recogniser").

The command's onset is the utterance's first sample (the energy detector's start, ``PRE_S`` before the
first loud frame), on the recorder's monotonic clock (each block is stamped when it arrives).
Measured accuracy (synthesised speech, noise): docs/performance.md, "Voice keyphrases".
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from capture_app.core.clock import NS_PER_S, now_ns
from capture_app.core.errors import ConfigError
from capture_app.handsfree import voice_templates
from capture_app.handsfree.commands import Command
from capture_app.rig.handsfree_config import HandsfreeConfig

log = logging.getLogger(__name__)

RATE = 16000                 # Hz, what the acoustic model expects (its feat.params: 16 kHz, 130-6800 Hz)
FRAME = 160                  # samples, 10 ms (one cepstral frame of the decoder)
MAX_UTTERANCE_S = 4.0        # longer is talk, not a command: not decoded
MIN_UTTERANCE_S = 0.25
HANG_S = 0.6                 # this much quiet ends an utterance
PRE_S = 0.05                 # kept before the first loud frame (the onset of a soft consonant)
END_DB = 12.0                # after the utterance's loudest frame, a frame this far under it is quiet (babble)
# acceptance (tuned on the tuning voices only, docs/performance.md "Voice keyphrases"):
MAX_UNCOVERED_S = 0.25       # loud audio before the phrase's first / after its last word: a longer sentence
MIN_WORD_SCORE = -9.2        # per-frame acoustic log score of the phrase's worst word (natural log, vs the best
                             # of all senones in each frame; the tuning set's largest recall with 0 false commands
                             # was at -9.4, this keeps a margin)
PHONE_PENALTY = 0.1          # pocketsphinx -pip, a probability per phone entered (default 1.0): chosen on the tuning
                             # set (0.01, 0.05, 0.1, 0.2, 0.3, 1.0 tried; 0.1 and 0.2 let the most through at 0 false commands)
MAX_STRETCH = 2.0            # one word said this much slower per phone than the other: it swallowed other words
_FILLERS = ("<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]")


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech: ``start`` / ``end`` (samples since the stream began), what the phrase grammar
    heard (``text``), the phrase when it is accepted as a command (else None), how well it fits (``score``:
    pocketsphinx's worst word's per-frame acoustic score, or the templates' DTW distance), the speech outside
    its words
    (``outside_s``) and why it was refused (``reason``, "" when accepted)."""

    start: int
    end: int
    text: str
    phrase: str | None
    score: float = float("-inf")
    outside_s: float = 0.0      # loud audio before the first word or after the last, the longer, s
    stretch: float = 1.0        # the slowest word's frames per phone over the fastest word's
    reason: str = ""


def grammar(phrases: Iterable[str]) -> str:
    """The JSGF grammar: exactly one of the phrases (silence around it is implicit)."""
    return f"#JSGF V1.0;\ngrammar voice;\npublic <phrase> = {' | '.join(sorted(set(phrases)))};\n"


class Segmenter:
    """Energy voice-activity detection on 10 ms frames. The noise floor follows the quietest frames; an
    utterance starts at a frame ``ratio`` times above the floor; within it a frame is loud when it is also
    within ``END_DB`` of the utterance's loudest frame so far (background talk under the speaker is quiet);
    ``HANG_S`` of quiet ends it."""

    def __init__(self, ratio: float = 8.0):
        self.ratio = ratio
        self.floor = None
        self.n = 0                   # samples seen
        self._buf: list[np.ndarray] = []
        self._pre: list[np.ndarray] = []
        self._start = None
        self._quiet = 0
        self._peak = 0.0
        self._tail = np.zeros(0, np.int16)
        self.first_loud = 0          # start / end of the current (last) utterance's loud frames, samples into it
        self.last_loud = 0

    def feed(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(start sample, audio) of each utterance that ended in ``block``."""
        out = []
        data = np.concatenate([self._tail, np.asarray(block, np.int16).ravel()])
        k = len(data) // FRAME * FRAME
        self._tail = data[k:]
        for frame in data[:k].reshape(-1, FRAME):
            energy = float(np.mean(frame.astype(np.float64) ** 2)) + 1.0
            self.floor = energy if self.floor is None else (
                min(energy, self.floor * 1.002) if self._start is None else self.floor)
            loud = energy > self.ratio * self.floor
            if self._start is None:
                self._pre = (self._pre + [frame])[-int(PRE_S * RATE / FRAME):]
                if loud:
                    self._start = self.n - len(self._pre[:-1]) * FRAME
                    self._buf, self._pre, self._quiet, self._peak = list(self._pre), [], 0, energy
                    self.first_loud = self.last_loud = len(self._buf) * FRAME
            else:
                self._buf.append(frame)
                self._peak = max(self._peak, energy)
                loud = loud and energy > self._peak * 10 ** (-END_DB / 10)
                self._quiet = 0 if loud else self._quiet + 1
                if loud:
                    self.last_loud = len(self._buf) * FRAME   # samples into the utterance
                if self._quiet * FRAME >= HANG_S * RATE:
                    out.append((self._start, np.concatenate(self._buf)))
                    self._start, self._buf = None, []
            self.n += FRAME
        return out

    def flush(self) -> list[tuple[int, np.ndarray]]:
        out = [(self._start, np.concatenate(self._buf))] if self._start is not None and self._buf else []
        self._start, self._buf = None, []
        return out


def _loud_span(audio: np.ndarray) -> tuple[int, int]:
    """First and last 10 ms frame of ``audio`` within ``END_DB`` of its loudest: where the words are,
    whatever background talk or noise the segmenter let in around them."""
    frames = audio[: len(audio) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    energy = np.mean(frames ** 2, axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (-END_DB / 10))
    return int(loud[0]), int(loud[-1])


def _ln(p: float) -> float:
    return math.log(p) if p > 0 else float("-inf")


class SegmentedRecogniser:
    """What both recognisers share: the energy segmenter cuts a 16 kHz int16 stream into utterances; each of
    ``MIN_UTTERANCE_S``-``MAX_UTTERANCE_S`` is heard by ``_hear`` (start sample, audio) -> ``Utterance``, the
    others are refused as too short or too long; everything heard is kept in ``utterances``."""

    def __init__(self, ratio: float = 8.0):
        self.ratio = ratio
        self.segmenter = Segmenter(ratio)
        self.utterances: list[Utterance] = []   # everything heard, in order (tests, logs)

    def feed(self, block: np.ndarray) -> list[Utterance]:
        return [self._heard(s, a) for s, a in self.segmenter.feed(block)]

    def flush(self) -> list[Utterance]:
        return [self._heard(s, a) for s, a in self.segmenter.flush()]

    def reset(self) -> None:
        """A new stream (a new noise floor; what the recogniser learnt is kept)."""
        self.segmenter = Segmenter(self.ratio)

    def _heard(self, start: int, audio: np.ndarray) -> Utterance:
        if MIN_UTTERANCE_S * RATE <= len(audio) <= MAX_UTTERANCE_S * RATE:
            utterance = self._hear(start, audio)
        else:
            utterance = Utterance(start, start + len(audio), "", None, reason="too short or too long")
        self.utterances.append(utterance)
        return utterance

    def _hear(self, start: int, audio: np.ndarray) -> Utterance:
        raise NotImplementedError


class VoiceRecogniser(SegmentedRecogniser):
    """Segments a 16 kHz int16 stream and decodes each utterance against ``phrases``; no threads.

    Each utterance is decoded once (batch cepstral mean, ``full_utt``) with a grammar of the phrases alone,
    so it always comes out as some phrase (or as nothing when no phrase's path reaches the end). It is a
    command only when (1) the phrase's words cover the loud audio (no more than ``MAX_UNCOVERED_S`` of it
    before the first word or after the last: "stop recording me please", "take the next step"), and (2)
    every word of it fits the audio: its per-frame acoustic log score (pocketsphinx normalises each frame
    against the best of all its senones, ``compallsen``, so this is near 0 for a perfect match) is at least
    ``min_word_score``.
    A phrase said inside other talk, or other words forced into a phrase, fail one of them."""

    def __init__(self, phrases: Iterable[str], ratio: float = 8.0, min_word_score: float = MIN_WORD_SCORE,
                 max_uncovered_s: float = MAX_UNCOVERED_S):
        from pocketsphinx import Decoder
        self.phrases = frozenset(phrases)
        self.min_word_score = min_word_score
        self.max_uncovered_s = max_uncovered_s
        # compallsen: every senone is scored each frame, so a word's score is relative to the best of them all
        self.decoder = Decoder(lm=None, loglevel="FATAL", compallsen=True, pip=PHONE_PENALTY)
        if int(self.decoder.config["samprate"]) != RATE:
            raise ConfigError(f"pocketsphinx's model expects {self.decoder.config['samprate']} Hz, not {RATE}")
        missing = sorted({w for p in self.phrases for w in p.split()
                          if not self.decoder.lookup_word(w)})
        if missing:
            raise ConfigError(f"[handsfree] voice_phrases: {missing} not in pocketsphinx's English dictionary "
                              f"(cmudict-en-us.dict); use other words")
        self.decoder.add_jsgf_string("voice", grammar(self.phrases))
        self.decoder.activate_search("voice")
        super().__init__(ratio)

    def _hear(self, start: int, audio: np.ndarray) -> Utterance:
        score, stretch = float("-inf"), 1.0
        self.decoder.start_utt()
        self.decoder.process_raw(audio.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        words = [seg for seg in (self.decoder.seg() or []) if seg.word not in _FILLERS]
        if words:
            score = min(_ln(w.ascore) / (w.end_frame - w.start_frame + 1) for w in words)
            pace = [(w.end_frame - w.start_frame + 1) / len((self.decoder.lookup_word(w.word) or "x").split())
                    for w in words]
            stretch = max(pace) / min(pace)
        first, last = _loud_span(audio)
        before = (words[0].start_frame - first) * FRAME / RATE if words else 0.0
        after = (last - words[-1].end_frame) * FRAME / RATE if words else 0.0
        outside = max(before, after)
        if text not in self.phrases:
            reason = "no phrase"
        elif outside > self.max_uncovered_s:
            reason = f"{outside:.2f} s of speech outside the phrase"
        elif stretch > MAX_STRETCH:
            reason = f"a word stretched {stretch:.1f} x the other's pace (it covers other words)"
        elif score < self.min_word_score:
            reason = f"a word fits badly ({score:.2f} < {self.min_word_score:.2f} per frame)"
        else:
            reason = ""
        return Utterance(start, start + len(audio), text, None if reason else text, score, outside, stretch, reason)


class TemplateRecogniser(SegmentedRecogniser):
    """Segments a 16 kHz int16 stream like ``VoiceRecogniser`` and matches each utterance of 0.25-4 s to the
    operator's enrolled recordings (``voice_templates``: DTW against the templates with the room's noise
    added, then ``voice_templates.decide``); no pocketsphinx, no threads. An ``Utterance``'s ``score`` here is
    the DTW distance of the nearest phrase (per frame, lower is nearer)."""

    def __init__(self, templates, phrases: Iterable[str], ratio: float = 8.0, second_opinion: bool = True):
        self.phrases = frozenset(phrases)
        self.templates = [t for t in templates if t.phrase in self.phrases]
        missing = sorted(self.phrases - {t.phrase for t in self.templates})
        if missing:
            raise ConfigError(f"[handsfree] voice_enrolment: no recordings of {missing}; enrol them with "
                              f"`capture-app voice-enrol`")
        super().__init__(ratio)
        self.model = None   # the keyword network's second opinion, for the phrases it knows (voice_model)
        if second_opinion:
            from capture_app.handsfree import voice_model
            try:
                self.model = voice_model.load()
            except ValueError as exc:
                log.warning("hands-free: no second opinion on voice phrases, the distance alone decides: %s", exc)

    def _opinion(self, heard, audio: np.ndarray) -> tuple[float, bool] | None:
        if self.model is None or heard is None or heard.best not in self.model.phrases:
            return None
        return self.model.probability(audio, heard.best)

    def _hear(self, start: int, audio: np.ndarray) -> Utterance:
        heard = voice_templates.listen(self.templates, audio)
        reason = voice_templates.decide(heard, self._opinion(heard, audio))
        if heard is None:
            return Utterance(start, start + len(audio), "", None, reason=reason)
        return Utterance(start, start + len(audio), heard.best, None if reason else heard.best, heard.distance,
                         heard.outside_s, reason=reason)


def make_recogniser(config: HandsfreeConfig):
    """The recogniser ``[handsfree]`` asks for: the operator's enrolled templates when ``voice_enrolment``
    names a file, else pocketsphinx's English model."""
    if config.voice_enrolment:
        from capture_app.handsfree.voice_enrolment import load_enrolment
        return TemplateRecogniser(load_enrolment(config.voice_enrolment, config.voice_phrases), config.voice_phrases,
                                  second_opinion=config.voice_second_opinion)
    return VoiceRecogniser(config.voice_phrases)


def microphone_blocks(device: str, stop: threading.Event, block_s: float = 0.1):
    """16 kHz mono int16 blocks from a sounddevice input (``device``: name or index, "" the default)."""
    import queue

    import sounddevice
    blocks: queue.Queue = queue.Queue()
    dev = int(device) if device.isdigit() else (device or None)
    with sounddevice.InputStream(samplerate=RATE, channels=1, dtype="int16", device=dev,
                                 blocksize=int(block_s * RATE), callback=lambda d, f, t, s: blocks.put(d.copy())):
        while not stop.is_set():
            try:
                yield blocks.get(timeout=0.5)
            except queue.Empty:
                continue


class VoiceListener:
    """Submits the command of each phrase heard, ``via`` voice, on the ``handsfree-voice`` thread.

    ``source``: an iterable of 16 kHz mono int16 blocks instead of the microphone ``[handsfree]
    voice_device``. Voice input that stops (no microphone, PortAudio missing, a device unplugged) is said
    (``cue``) and noted (``note(level, text)``: into the recording take's /events). Each utterance heard and
    not taken as a command is counted (``refused``) and given to ``refused(onset_ns, text)`` (into the
    recording take's /events), so a phrase said and not heard can be found and marked in review."""

    def __init__(self, config: HandsfreeConfig, submit: Callable[[Command], None], source=None,
                 cue: Callable[[str], None] | None = None, note: Callable[[str, str], None] | None = None,
                 refused: Callable[[int, str], None] | None = None):
        self.config = config
        self.submit = submit
        self.cue = cue or (lambda text: None)
        self.note = note or (lambda level, text: None)
        self.on_refused = refused or (lambda onset_ns, text: None)
        self.refused = 0                     # utterances heard and not taken as a command
        self.recogniser = make_recogniser(config)
        self.source = source
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="handsfree-voice", daemon=True)
        self.finished = threading.Event()    # the source ran out
        self.stopped = False                 # voice input failed (no microphone, unplugged)

    def start(self) -> "VoiceListener":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            source = self.source if self.source is not None else microphone_blocks(self.config.voice_device,
                                                                                    self._stop)
            for block in source:
                if self._stop.is_set():
                    break
                received = now_ns()
                for utterance in self.recogniser.feed(block):
                    self._heard(utterance, received)
            for utterance in self.recogniser.flush():
                self._heard(utterance, now_ns())
        except Exception as exc:  # no microphone, PortAudio missing: said, not fatal to the recorder
            text = (f"voice input stopped: {exc}; spoken commands are not heard until the recorder restarts "
                    f"(check [handsfree] voice_device; README, 'Voice keyphrases')")
            log.warning("hands-free: %s", text)
            self.stopped = True
            self.cue("voice input stopped")
            self.note("error", text)
        finally:
            self.finished.set()

    def _heard(self, utterance: Utterance, received_ns: int) -> None:
        # the onset on the recorder's clock: the block holding the stream's sample n arrived at received_ns
        onset = received_ns - int((self.recogniser.segmenter.n - utterance.start) * NS_PER_S / RATE)
        if utterance.phrase is None:
            self.refused += 1
            nearest = f', nearest phrase "{utterance.text}"' if utterance.text else ""
            text = (f"speech of {(utterance.end - utterance.start) / RATE:.1f} s heard, not taken as a command "
                    f"({utterance.reason or 'not a phrase'}{nearest})")
            log.info("hands-free: %s", text)
            self.on_refused(onset, text)
            return
        self.submit(Command(self.config.voice_phrases[utterance.phrase], "voice", onset, f'"{utterance.phrase}"'))
