"""``capture-app voice-enrol``: record the operator saying each voice phrase a few times, in quiet, and write
the enrolment file the recorder matches speech against (``[handsfree] voice_enrolment``,
docs/voice-enrolment.md)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from capture_app.core.errors import ConfigError
from capture_app.handsfree import voice_templates as vt
from capture_app.handsfree.voice import MAX_UTTERANCE_S, RATE, Segmenter, microphone_blocks
from capture_app.handsfree.voice_enrolment import load_enrolment, save_enrolment

WAIT_S = 8.0          # no utterance within this after a prompt: the prompt is repeated


def wav_name(phrase: str, take: int) -> str:
    """The file ``--from-wavs`` reads for ``phrase``'s ``take`` (1-based): ``start_recording_1.wav``."""
    return f"{phrase.replace(' ', '_')}_{take}.wav"


def read_wav(path: Path) -> np.ndarray:
    """A WAV file as mono float samples at 16 kHz (other rates resampled, channels averaged)."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly
    try:
        rate, data = wavfile.read(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable WAV file ({exc}); record it again") from None
    kind = data.dtype
    data = np.asarray(data, np.float64)
    data = data.mean(axis=1) if data.ndim == 2 else data
    if np.issubdtype(kind, np.floating):                   # float WAVs are on the -1..1 scale
        data = data * 32767.0
    elif kind == np.uint8:                                 # 8-bit WAVs are unsigned around 128
        data = (data - 128.0) * 256.0
    elif kind == np.int32:                                 # 24- and 32-bit WAVs come as int32
        data = data / 65536.0
    return resample_poly(data, RATE, rate) if rate != RATE else data


def enrol_from_wavs(directory: Path, phrases: Iterable[str], takes: int) -> list[vt.Template]:
    """Templates from ``directory``/``wav_name(phrase, k)`` for k = 1..``takes`` of every phrase."""
    templates = []
    for phrase in phrases:
        for take in range(1, takes + 1):
            path = Path(directory) / wav_name(phrase, take)
            if not path.exists():
                raise ConfigError(f"--from-wavs {directory}: {path.name} is missing (one file per phrase and take: "
                                  f"{wav_name(phrase, 1)} .. {wav_name(phrase, takes)})")
            try:
                templates.append(vt.make_template(phrase, read_wav(path)))
            except vt.EnrolmentError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    return templates


def enrol_from_blocks(phrases: Iterable[str], takes: int, blocks: Iterator[np.ndarray],
                      prompt: Callable[[str], None]) -> list[vt.Template]:
    """Templates from a live 16 kHz int16 stream: for each phrase and take, ``prompt`` asks for it and the
    next utterance the energy segmenter cuts is taken (asked again when none comes within ``WAIT_S`` or
    the recording holds too little speech). Raises ``ConfigError`` when the stream ends first."""
    templates = []
    segmenter = Segmenter()
    for phrase in phrases:
        for take in range(1, takes + 1):
            prompt(f'say "{phrase}" ({take} of {takes})')
            waited = 0
            while True:
                block = next(blocks, None)
                if block is None:
                    raise ConfigError(f"the microphone stopped before {phrase!r} take {take} was heard")
                waited += len(block)
                got = [audio for _, audio in segmenter.feed(block) if len(audio) <= MAX_UTTERANCE_S * RATE]
                if got:
                    try:
                        templates.append(vt.make_template(phrase, got[-1]))
                        break
                    except vt.EnrolmentError as exc:
                        prompt(f"{exc}; again:")
                if waited > WAIT_S * RATE:
                    prompt(f'nothing heard; say "{phrase}" ({take} of {takes})')
                    waited = 0
    return templates


def microphone_failure(exc: BaseException, device: str) -> ConfigError:
    """What to tell the operator when the microphone cannot be opened or read (no sounddevice, no PortAudio,
    no such input)."""
    which = f"microphone {device!r}" if device else "the default microphone"
    if isinstance(exc, ImportError):
        return ConfigError(f"{which}: sounddevice is not installed ({exc}); pip install 'capture-app[voice]', "
                           f"or record WAVs with another tool and pass --from-wavs DIR")
    return ConfigError(f"{which} cannot be read ({type(exc).__name__}: {exc}); plug it in, pick another with "
                       f"--device (`python -m sounddevice` lists the inputs), or pass --from-wavs DIR")


def run(args) -> int:
    from capture_app.rig.config import load_config
    config = load_config(args.config).handsfree
    phrases = list(config.voice_phrases)
    if not 1 <= args.takes <= 10:
        raise ConfigError(f"--takes {args.takes}: give 1 to 10 (4 is what docs/performance.md measured)")
    out_dir = Path(args.out).resolve().parent
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK):
        # checked before the operator records anything, so no recording is lost to a bad --out
        raise ConfigError(f"--out {args.out}: the directory {out_dir} does not exist or is not writable; "
                          f"create it or choose another")
    if args.from_wavs:
        templates = enrol_from_wavs(Path(args.from_wavs), phrases, args.takes)
    else:
        device = args.device or config.voice_device
        stop = threading.Event()
        print("voice enrolment: in a quiet room, with the headset microphone you will use, say each phrase "
              "when asked (Ctrl-C stops; nothing is written until every phrase is recorded)", flush=True)
        try:
            templates = enrol_from_blocks(phrases, args.takes, iter(microphone_blocks(device, stop)),
                                          lambda text: print(text, flush=True))
        except KeyboardInterrupt:
            print(f"stopped: {args.out} not written", file=sys.stderr)
            return 130
        except ConfigError:
            raise
        except Exception as exc:  # ImportError, PortAudio's errors: no microphone to record from
            raise microphone_failure(exc, device) from None
        finally:
            stop.set()
    out = save_enrolment(args.out, templates)
    load_enrolment(out, phrases)    # it reads back, whole
    print(f"{out}: {len(templates)} recordings of {len(phrases)} phrases; set [handsfree] voice_enrolment = "
          f"{str(out)!r} and voice_on = true", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    """Add ``voice-enrol`` to the CLI's subparsers."""
    enrol = sub.add_parser("voice-enrol", help="record your voice phrases for hands-free voice commands "
                                               "(docs/voice-enrolment.md)")
    enrol.add_argument("--out", required=True, help="the enrolment file to write (.npz)")
    enrol.add_argument("--config", help="rig config TOML whose [handsfree] voice_phrases to enrol (default: the "
                                        "default phrases)")
    enrol.add_argument("--takes", type=int, default=4, help="recordings of each phrase (1-10, default 4)")
    enrol.add_argument("--device", default="", help="microphone: sounddevice name or index (default: the rig "
                                                    "config's voice_device, else the default input)")
    enrol.add_argument("--from-wavs", help="read DIR/<phrase_with_underscores>_<take>.wav instead of the microphone")
    enrol.set_defaults(func=run)
