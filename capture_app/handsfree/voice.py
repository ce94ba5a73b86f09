"""Spoken keyphrases as commands (the ``voice`` extra: pocketsphinx, sounddevice), offline, in the recorder.

Audio is 16 kHz mono int16 (``RATE``), from a microphone (sounddevice) or any iterable of blocks (tests,
``bench/voice.py``): both take the same path. An energy detector (``Segmenter``) cuts the stream into
utterances; each whole utterance is decoded once (batch cepstral mean, ``full_utt``) by pocketsphinx with a
JSGF grammar whose alternatives are the configured phrases *and* a loop of ordinary words (the garbage
path). A phrase counts only when the best path is exactly that phrase: "start the kettle" is best said by
the garbage words and is not a command. Not keyword spotting: a phrase inside a longer sentence is not a
command. Utterances longer than ``MAX_UTTERANCE_S`` are not decoded at all.

The command's onset is the utterance's first sample (the energy detector's start, ``PRE_S`` before the
first loud frame), on the recorder's monotonic clock (each block is stamped when it arrives).
Measured accuracy (synthesised speech, noise): docs/performance.md, "Voice keyphrases".
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from capture_app.core.clock import NS_PER_S, now_ns
from capture_app.core.errors import ConfigError
from capture_app.handsfree.commands import Command
from capture_app.rig.handsfree_config import HandsfreeConfig

log = logging.getLogger(__name__)

RATE = 16000                 # Hz, what the acoustic model expects
FRAME = 160                  # samples, 10 ms
MAX_UTTERANCE_S = 4.0        # longer is talk, not a command: not decoded
MIN_UTTERANCE_S = 0.25
MAX_UNCOVERED_S = 0.25       # loud audio after the phrase's last word: more than this is a longer sentence
HANG_S = 0.6                 # this much quiet ends an utterance
PRE_S = 0.05                 # kept before the first loud frame (the onset of a soft consonant)
# the garbage path: common words, and each phrase's own words alone, so that a sentence that merely
# contains a command word ("stop it there", "next to the stove") has a better path than a phrase
FILLER_WORDS = """a the and to it is i you that this for with me my we there here now not no so do go get
put let can what up off out over back on in of kettle stove bowl pot knife water table time day""".split()


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech: ``start`` / ``end`` (samples since the stream began), what the grammar heard
    (``text``) and the phrase when the whole utterance is one (else None)."""

    start: int
    end: int
    text: str
    phrase: str | None


def grammar(phrases: Iterable[str]) -> str:
    """The JSGF grammar: one phrase, or one or more ordinary words."""
    phrases = sorted(set(phrases))
    words = sorted(set(FILLER_WORDS) | {w for p in phrases for w in p.split()})
    return ("#JSGF V1.0;\ngrammar voice;\npublic <utterance> = <phrase> | <garbage>;\n"
            f"<phrase> = {' | '.join(phrases)};\n<garbage> = <word>+;\n<word> = {' | '.join(words)};\n")


class Segmenter:
    """Energy voice-activity detection on 10 ms frames: the noise floor follows the quietest frames; a
    frame is loud above ``ratio`` times the floor; ``HANG_S`` of quiet ends an utterance."""

    def __init__(self, ratio: float = 8.0):
        self.ratio = ratio
        self.floor = None
        self.n = 0                   # samples seen
        self._buf: list[np.ndarray] = []
        self._pre: list[np.ndarray] = []
        self._start = None
        self._quiet = 0
        self._tail = np.zeros(0, np.int16)
        self.last_loud = 0           # end of the current utterance's last loud frame, samples into it

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
                    self._buf, self._pre, self._quiet = list(self._pre), [], 0
            else:
                self._buf.append(frame)
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


class VoiceRecogniser:
    """Segments a 16 kHz int16 stream and decodes each utterance against ``phrases``; no threads."""

    def __init__(self, phrases: Iterable[str], ratio: float = 8.0):
        from pocketsphinx import Decoder
        self.phrases = frozenset(phrases)
        self.decoder = Decoder(lm=None, loglevel="FATAL", wip=1e-3)
        missing = sorted({w for p in self.phrases for w in p.split()
                          if not self.decoder.lookup_word(w)})
        if missing:
            raise ConfigError(f"[handsfree] voice_phrases: {missing} not in pocketsphinx's English dictionary "
                              f"(cmudict-en-us.dict); use other words")
        self.decoder.add_jsgf_string("voice", grammar(self.phrases))
        self.decoder.activate_search("voice")
        self.segmenter = Segmenter(ratio)
        self.utterances: list[Utterance] = []   # everything heard, in order (tests, logs)

    def feed(self, block: np.ndarray) -> list[Utterance]:
        return [self._decode(s, a) for s, a in self.segmenter.feed(block)]

    def flush(self) -> list[Utterance]:
        return [self._decode(s, a) for s, a in self.segmenter.flush()]

    def _decode(self, start: int, audio: np.ndarray) -> Utterance:
        text = ""
        if MIN_UTTERANCE_S * RATE <= len(audio) <= MAX_UTTERANCE_S * RATE:
            self.decoder.start_utt()
            self.decoder.process_raw(audio.tobytes(), full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            text = hyp.hypstr if hyp is not None else ""
            words = [seg for seg in self.decoder.seg() if not seg.word.startswith(("<", "[", "+"))]
            # speech the phrase's words do not cover (absorbed as silence: "stop recording | me please")
            if text in self.phrases and words and (
                    self.segmenter.last_loud / FRAME - words[-1].end_frame > MAX_UNCOVERED_S * RATE / FRAME):
                text = f"{text} (+ {self.segmenter.last_loud / RATE - words[-1].end_frame / 100:.2f} s more speech)"
        utterance = Utterance(start, start + len(audio), text, text if text in self.phrases else None)
        self.utterances.append(utterance)
        return utterance


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
    voice_device``."""

    def __init__(self, config: HandsfreeConfig, submit: Callable[[Command], None], source=None,
                 cue: Callable[[str], None] | None = None):
        self.config = config
        self.submit = submit
        self.cue = cue or (lambda text: None)
        self.recogniser = VoiceRecogniser(config.voice_phrases)
        self.source = source
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="handsfree-voice", daemon=True)
        self.finished = threading.Event()    # the source ran out

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
            log.warning("hands-free: voice input stopped: %s (README, 'Voice keyphrases')", exc)
            self.cue("voice input stopped")
        finally:
            self.finished.set()

    def _heard(self, utterance: Utterance, received_ns: int) -> None:
        if utterance.phrase is None:
            if utterance.text:
                log.debug("hands-free: heard %r, not a phrase", utterance.text)
            return
        # the onset on the recorder's clock: the block holding the stream's sample n arrived at received_ns
        onset = received_ns - int((self.recogniser.segmenter.n - utterance.start) * NS_PER_S / RATE)
        self.submit(Command(self.config.voice_phrases[utterance.phrase], "voice", onset, f'"{utterance.phrase}"'))
