"""Enrolled voice keyphrases: the operator's own recordings of each phrase are templates, and an utterance
is matched to them by dynamic time warping (DTW). Pure math on 16 kHz mono audio (numpy arrays): no I/O,
no threads.

How one utterance (from the energy segmenter, with its quiet edges) is heard (``listen``):

1. Features: 32 mel bands (100-7000 Hz) of 25 ms frames every 10 ms, as 13 cepstra (c0..c12).
2. Noise is given to the template rather than taken from the utterance: the background's mel power (the
   mean of the utterance's quietest 30 % of frames) is added, in linear power, to each clean template
   scaled to the utterance's speech level. A template then looks like the phrase said in this room.
3. Subsequence DTW with symmetric steps (slopes 1/2 to 2) aligns all of the template with the stretch of
   the utterance that fits it best, paying for every frame of both; the distance is per frame of both.
4. The speaker's own speech is the frames within ``FOREGROUND_DB`` of the loudest (other people's talk
   around them is quieter); more than ``MAX_OUTSIDE_S`` of it outside the matched stretch means the
   phrase was part of a longer sentence ("stop recording me please").
5. In a steady background (a fan, hiss) every sound clearly above it is speech, quiet words too: more than
   ``MAX_SOUND_AROUND_S`` of frames whose energy above the background is ``SOUND_DB`` over the background's,
   before the matched stretch or after it, also means a longer sentence ("it is a small step", whose quiet
   "it is a" step 4 does not count).

``decide`` then accepts the best phrase when it is near enough: a fixed distance in a steady background,
more (up to a limit) the more unsteady the background is, since other people's talk under the phrase
raises the distance of the phrase actually said. The thresholds were chosen on the tuning voices of
``bench/voice.py`` only (docs/performance.md, "fourth recogniser" and the section after it).

Units: ``RATE`` samples per second; ``HOP`` samples per feature frame (10 ms); distances are Euclidean
between cepstral vectors (natural-log mel powers, orthonormal DCT-II), per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 16000
HOP = 160                   # samples, 10 ms
WIN = 400                   # samples, 25 ms (Hamming)
NFFT = 512
N_MELS = 32
LOW_HZ, HIGH_HZ = 100.0, 7000.0
N_CEPS = 13                 # c0..c12
SPAN_DB = 20.0              # a template's words: frames within this of its loudest frame ...
ABOVE_NOISE = 2.0           # ... whose power above the background is at least this many times the background's
FOREGROUND_DB = 15.0        # the speaker's own frames: energy above the background within this of the loudest
NOISE_QUANTILE = 0.3        # the background: the mean of this share of an utterance's quietest frames
# acceptance (chosen on the tuning voices only; docs/performance.md "fourth recogniser"):
MAX_OUTSIDE_S = 0.15        # the speaker's speech outside the matched phrase: more is a longer sentence
MIN_MARGIN = 0.25           # the next best phrase at least this much further (per frame)
MAX_DISTANCE = 4.5          # near enough in a steady background (fan, hiss) ...
UNSTEADY_FROM_DB = 1.0      # ... plus 1 per dB of the background's unsteadiness (others talking) beyond this,
UNSTEADY_ALLOWANCE = 3.25   # ... up to this much more
AWAY_S = 0.2                # background frames: at least this far from any of the speaker's frames
TAIL_S = 0.5                # ... or, when fewer than 10 are, the utterance's last 0.5 s (its quiet hang)
SOUND_DB = 3.0              # sound: a frame whose energy above the background is this far over the background's
MAX_SOUND_AROUND_S = 0.12   # in a steady background, more sound than this before, or after, the matched phrase
#                             means a longer sentence
# with the keyword network's second opinion (voice_model; chosen on bench/voice.py's wide-tune, hard-a and
# hard-b sets only; docs/performance.md, "a second opinion that was trained"):
OPINION_MAX_DISTANCE = 5.5          # near enough in a steady background ...
OPINION_ALLOWANCE = 3.0             # ... plus 1 per dB of unsteadiness beyond UNSTEADY_FROM_DB, up to this much
OPINION_MIN_PROBABILITY = 0.6       # and the network finds the same phrase most likely, with more than this


def _mel_bank() -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(LOW_HZ), mel(HIGH_HZ), N_MELS + 2))
    bins = np.fft.rfftfreq(NFFT, 1.0 / RATE)
    bank = np.zeros((N_MELS, len(bins)))
    for k in range(N_MELS):
        lo, mid, hi = edges[k:k + 3]
        bank[k] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0.0, None)
    return bank


_BANK = _mel_bank()
_WINDOW = np.hamming(WIN)
_DCT = np.cos(np.pi / N_MELS * (np.arange(N_MELS) + 0.5)[None, :] * np.arange(N_CEPS)[:, None]) \
    * np.sqrt(2.0 / N_MELS)
_DCT[0] /= np.sqrt(2.0)


def _frames(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, np.float64).ravel()
    if len(x) < WIN:
        x = np.concatenate([x, np.zeros(WIN - len(x))])
    n = 1 + (len(x) - WIN) // HOP
    return x[np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]]


def mel_power(audio: np.ndarray) -> np.ndarray:
    """Linear mel-band power of each 10 ms frame of ``audio`` (int16 or float samples at ``RATE``, after
    pre-emphasis 0.97): shape (frames, ``N_MELS``)."""
    x = np.asarray(audio, np.float64).ravel()
    x = np.append(x[:1], x[1:] - 0.97 * x[:-1])
    spectrum = np.abs(np.fft.rfft(_frames(x) * _WINDOW, NFFT)) ** 2
    return spectrum @ _BANK.T + 1e-3


def frame_energy(audio: np.ndarray) -> np.ndarray:
    """Mean square of each 10 ms frame's samples, no pre-emphasis (the level a listener hears), frame for
    frame with ``mel_power``."""
    return np.mean(_frames(audio) ** 2, axis=1) + 1e-3


def cepstra(power: np.ndarray) -> np.ndarray:
    """Cepstral vectors (frames, ``N_CEPS``) of linear mel powers (frames, ``N_MELS``)."""
    return np.log(power) @ _DCT.T


def noise_power(power: np.ndarray, quantile: float = NOISE_QUANTILE) -> np.ndarray:
    """The background's mel power: the mean of the quietest ``quantile`` of the frames (an utterance from
    the segmenter carries its quiet hang, so these frames are background)."""
    total = power.sum(axis=1)
    k = max(1, int(len(total) * quantile))
    return power[np.argsort(total)[:k]].mean(axis=0)


def speech_span(power: np.ndarray) -> tuple[int, int]:
    """First and last frame (inclusive) of the words in a recording made in quiet: frames whose power above
    the background is within ``SPAN_DB`` of the loudest and ``ABOVE_NOISE`` times the background's;
    (0, -1) when there are none."""
    noise = noise_power(power).sum()
    excess = power.sum(axis=1) - noise
    loud = np.flatnonzero((excess > excess.max() * 10 ** (-SPAN_DB / 10)) & (excess > ABOVE_NOISE * noise))
    return (int(loud[0]), int(loud[-1])) if len(loud) else (0, -1)


def quietest_mean(energy: np.ndarray) -> float:
    """The mean of the quietest ``NOISE_QUANTILE`` of frame energies (at least one frame)."""
    k = max(1, int(len(energy) * NOISE_QUANTILE))
    return float(np.sort(energy)[:k].mean())


def foreground(energy: np.ndarray) -> np.ndarray:
    """The speaker's own frames (bool per frame of ``frame_energy``): energy above the background
    (``quietest_mean``) within ``FOREGROUND_DB`` of the loudest frame's."""
    excess = energy - quietest_mean(energy)
    return excess > excess.max() * 10 ** (-FOREGROUND_DB / 10)


def sound(energy: np.ndarray) -> np.ndarray:
    """Frames (bool per frame of ``frame_energy``) whose energy above the background (``quietest_mean``) is more
    than ``SOUND_DB`` over the background's own: anything audible over a steady background, however much
    quieter than the loudest frame."""
    background = quietest_mean(energy)
    return energy - background > background * 10 ** (SOUND_DB / 10)


def unsteadiness_db(energy: np.ndarray, speaker: np.ndarray) -> float:
    """How far the background is from steady, dB: over the frames at least ``AWAY_S`` from any of the
    ``speaker``'s frames (else the last ``TAIL_S``), the mean frame energy over the mean of their quietest
    ``NOISE_QUANTILE``. About 0.3-0.6 dB for a fan or hiss, 2.5-30 dB with other people talking."""
    reach = int(AWAY_S * RATE / HOP)
    away = np.convolve(speaker.astype(float), np.ones(2 * reach + 1), mode="same") == 0
    background = energy[away] if away.sum() >= 10 else energy[-int(TAIL_S * RATE / HOP):]
    return float(10 * np.log10(np.mean(background) / quietest_mean(background)))


@dataclass(frozen=True)
class Template:
    """One enrolment recording of ``phrase``: the linear mel power (frames, ``N_MELS``) of its words, recorded
    in quiet."""

    phrase: str
    power: np.ndarray


class EnrolmentError(ValueError):
    """A recording that cannot be a template (no speech in it, too short)."""


def make_template(phrase: str, audio: np.ndarray) -> Template:
    """A template of ``phrase`` from one recording of it (16 kHz, made in quiet; the quiet around the words is
    cut off). Raises ``EnrolmentError`` when the recording holds less than 0.1 s of speech."""
    power = mel_power(audio)
    first, last = speech_span(power)
    if last - first + 1 < 10:
        raise EnrolmentError(f"{phrase!r}: the recording holds {max(last - first + 1, 0) * HOP / RATE:.2f} s of "
                             f"speech above its background; say the phrase closer to the microphone, in quiet")
    return Template(phrase, power[first:last + 1].copy())


def _shift(x: np.ndarray, k: int, fill) -> np.ndarray:
    """``x`` moved ``k`` places to the right along its last axis, ``fill`` coming in."""
    return np.concatenate([np.full(x.shape[:-1] + (k,), fill, x.dtype), x[..., :-k]], axis=-1)


def subsequence_dtw(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """The best alignment of all of ``b`` (template frames) to a stretch of ``a`` (utterance frames) that
    starts and ends anywhere in ``a``: symmetric DTW with local slopes between 1/2 and 2 (Sakoe and Chiba's
    P = 1 steps), so every frame of both is paid for. Returns (the path's distance per frame of both, the
    stretch's first frame, its last frame); (inf, 0, -1) when nothing fits."""
    n, m = len(a), len(b)
    if m < 2 or n < 2:
        return float("inf"), 0, -1
    cost = np.sqrt(((b[:, None, :] - a[None, :, :]) ** 2).sum(axis=2))     # (m, n)
    inf = np.inf
    before, total = None, 2 * cost[0]          # accumulated cost in template rows j-2 and j-1
    start_before, start = None, np.arange(n)   # where in ``a`` each path began
    for j in range(1, m):
        options = [_shift(total, 1, inf) + 2 * cost[j],                                  # step (1, 1)
                   _shift(total, 2, inf) + 2 * _shift(cost[j], 1, inf) + cost[j]]        # step (1, 2)
        starts = [_shift(start, 1, -1), _shift(start, 2, -1)]
        if before is not None:
            options.append(_shift(before, 1, inf) + 2 * cost[j - 1] + cost[j])        # step (2, 1)
            starts.append(_shift(start_before, 1, -1))
        options, starts = np.stack(options), np.stack(starts)
        pick = np.argmin(options, axis=0)
        before, start_before = total, start
        total, start = options[pick, np.arange(n)], starts[pick, np.arange(n)]
    length = np.arange(n) - start + 1
    per_frame = np.where(np.isfinite(total) & (start >= 0), total / (length + m), inf)
    if not np.isfinite(per_frame).any():
        return float("inf"), 0, -1
    last = int(np.argmin(per_frame))
    return float(per_frame[last]), int(start[last]), last


@dataclass(frozen=True)
class Heard:
    """What the templates make of one utterance: the ``best`` phrase and its ``distance`` (per frame), the
    nearest other phrase's (``runner_up``, inf with one phrase), where the best phrase matched (frames
    ``first``..``last``), the speaker's own speech outside that stretch (``outside_s``, seconds), how
    unsteady the background was (``unsteady_db``, ``unsteadiness_db``) and how much ``sound`` lay before and
    after the stretch (``sound_before_s``, ``sound_after_s``, seconds)."""

    best: str
    distance: float
    runner_up: float
    first: int
    last: int
    outside_s: float
    unsteady_db: float
    sound_before_s: float = 0.0
    sound_after_s: float = 0.0


def listen(templates: list[Template], audio: np.ndarray) -> Heard | None:
    """The phrase the ``templates`` are nearest to in ``audio`` (one utterance with its quiet edges, 16 kHz),
    or None when it holds too little speech (under 50 ms of the speaker's frames) or there are no templates."""
    if not templates:
        return None
    power = mel_power(audio)
    energy = frame_energy(audio)
    speaker = foreground(energy)
    if speaker.sum() < 5:
        return None
    noise = noise_power(power)
    speech_level = max(float(np.mean(power[speaker].sum(axis=1))) - float(noise.sum()), 1e-3)
    observed = cepstra(power)
    best: dict[str, tuple[float, int, int]] = {}
    for template in templates:
        gain = speech_level / float(np.mean(template.power.sum(axis=1)))
        found = subsequence_dtw(observed, cepstra(template.power * gain + noise))
        if template.phrase not in best or found[0] < best[template.phrase][0]:
            best[template.phrase] = found
    ranked = sorted(best.items(), key=lambda kv: kv[1][0])
    phrase, (distance, first, last) = ranked[0]
    runner_up = ranked[1][1][0] if len(ranked) > 1 else float("inf")
    if last < first:
        outside, before, after = int(speaker.sum()), 0, 0
    else:
        audible = sound(energy)
        outside = int(speaker[:first].sum() + speaker[last + 1:].sum())
        before, after = int(audible[:first].sum()), int(audible[last + 1:].sum())
    return Heard(phrase, distance, runner_up, first, last, outside * HOP / RATE, unsteadiness_db(energy, speaker),
                 before * HOP / RATE, after * HOP / RATE)


def decide(heard: Heard | None, opinion: tuple[float, bool] | None = None) -> str:
    """Why ``heard`` is not a command, or "" when it is. ``opinion``: the keyword network's (``voice_model``)
    probability of ``heard.best`` and whether it is the network's most likely class; with it the distance
    may be larger (``OPINION_*``), since the network refuses what the distance alone let through."""
    if heard is None:
        return "no speech"
    if not np.isfinite(heard.distance):
        return "no phrase fits its length"
    if heard.outside_s > MAX_OUTSIDE_S:
        return f"{heard.outside_s:.2f} s of speech outside the phrase"
    if heard.unsteady_db < UNSTEADY_FROM_DB and max(heard.sound_before_s, heard.sound_after_s) > MAX_SOUND_AROUND_S:
        return (f"{heard.sound_before_s:.2f} s of sound before and {heard.sound_after_s:.2f} s after the phrase "
                f"in a steady background")
    if heard.runner_up - heard.distance <= MIN_MARGIN:
        return f"as near to another phrase ({heard.distance:.2f} against {heard.runner_up:.2f})"
    unsteady = max(heard.unsteady_db - UNSTEADY_FROM_DB, 0.0)
    if opinion is None:
        limit = MAX_DISTANCE + min(unsteady, UNSTEADY_ALLOWANCE)
    else:
        limit = OPINION_MAX_DISTANCE + min(unsteady, OPINION_ALLOWANCE)
    if heard.distance >= limit:
        return f"too far from the phrase ({heard.distance:.2f} >= {limit:.2f} per frame)"
    if opinion is not None:
        probability, most_likely = opinion
        if not most_likely or probability <= OPINION_MIN_PROBABILITY:
            return (f"the keyword network doubts it ({probability:.2f}"
                    f"{'' if most_likely else ', another class more likely'})")
    return ""
