"""The rig config's ``[handsfree]`` table: glove gestures, a pedal or clicker and spoken cues
(docs/rig-config.md, "Hands-free operation"). Checked on load; an error names the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from capture_app.core.errors import ConfigError
from capture_app.core.gestures import POSES, GestureTiming

# What a gesture or a pedal key can ask for. start_stop: start when idle, stop and save while
# recording (as Space in the monitor); discard asks for the same command again within confirm_s (as X X).
COMMANDS = ("start_stop", "start", "stop", "abort", "discard", "next_subtask", "end_subtask", "undo")
DEFAULT_GESTURES = {"spread": "start_stop", "thumb_little": "next_subtask", "thumb_ring": "end_subtask",
                    "horns": "undo", "fist": "abort", "shaka": "discard"}
# A presenter clicker sends Page Down / Page Up, B (blank screen) and F5 / Esc; many foot pedals can be set
# to send any key. Names are evdev's (linux/input-event-codes.h).
DEFAULT_PEDAL_KEYS = {"KEY_PAGEDOWN": "next_subtask", "KEY_PAGEUP": "undo", "KEY_B": "start_stop",
                      "KEY_F5": "start_stop", "KEY_ESC": "abort", "KEY_DOT": "end_subtask"}
# Spoken keyphrases ([handsfree] voice_phrases): each a whole utterance; words of pocketsphinx's
# English dictionary, lower case. Two words or more keep them apart from ordinary talk.
DEFAULT_VOICE_PHRASES = {"start recording": "start", "stop recording": "stop", "next step": "next_subtask",
                         "end step": "end_subtask", "abort take": "abort", "undo mark": "undo",
                         "discard take": "discard"}
HANDS = ("left", "right", "both")
CUES = ("auto", "speak", "beep", "off")


def _fail(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"[handsfree]: field {name!r} = {value!r} is invalid; allowed: {allowed}")


def _mapping(name: str, value: Any, keys_ok, what: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(name, value, f"a table {what} -> command")
    for key, command in value.items():
        if not keys_ok(key):
            raise _fail(name, {key: command}, what)
        if command not in COMMANDS:
            raise _fail(name, {key: command}, "commands " + ", ".join(COMMANDS))
    return dict(value)


def _is_phrase(key: Any) -> bool:
    words = key.split(" ") if isinstance(key, str) else []
    return 1 <= len(words) <= 6 and all(w and all(c.isascii() and (c.islower() or c == "'") for c in w)
                                        for w in words)


@dataclass(frozen=True)
class HandsfreeConfig:
    """``[handsfree]``: which inputs command the recorder and how, and the cues it plays."""

    gestures_on: bool = False            # glove gestures command the recorder
    hand: str = "left"                   # the command (non-working) hand: left, right or both
    hold_s: float = 0.8                  # a pose counts once held this long
    cooldown_s: float = 1.5              # no second gesture command within this after one
    confirm_s: float = 5.0               # discard: the same command again within this confirms it
    gestures: dict = field(default_factory=lambda: dict(DEFAULT_GESTURES))  # pose -> command
    subtasks: tuple = ()                 # labels of next_subtask in order ("step N" past the end)
    task: str = ""                       # task and instruction of a take started hands-free
    instruction: str = ""
    pedal_device: str = ""               # evdev device path, e.g. /dev/input/by-id/usb-...-event-kbd ("": none)
    pedal_keys: dict = field(default_factory=lambda: dict(DEFAULT_PEDAL_KEYS))  # evdev key name -> command
    pedal_grab: bool = True              # take the device for the recorder alone (its keys reach no window)
    voice_on: bool = False               # spoken keyphrases command the recorder (the `voice` extra)
    voice_device: str = ""               # sounddevice input device name or index ("": the default input)
    voice_phrases: dict = field(default_factory=lambda: dict(DEFAULT_VOICE_PHRASES))  # phrase -> command
    voice_enrolment: str = ""            # the operator's recordings of the phrases (`capture-app voice-enrol`): matched
                                         # instead of pocketsphinx's model ("": pocketsphinx); relative to the config file
    voice_second_opinion: bool = True    # with an enrolment, the keyword network may refuse a default phrase
                                         # (docs/voice-enrolment.md, step 5); false: the distance alone decides
    cues: str = "auto"                   # auto: when gestures, a pedal or voice are on, espeak-ng if installed, else
                                         # beeps; speak (always; beeps without espeak-ng); beep; off
    disk_warn_mb: float = 2000.0         # "disk nearly full" below this much free space

    def __post_init__(self):
        for name in ("gestures_on", "pedal_grab", "voice_on", "voice_second_opinion"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, getattr(self, name), "true or false")
        if self.hand not in HANDS:
            raise _fail("hand", self.hand, ", ".join(HANDS))
        if self.cues not in CUES:
            raise _fail("cues", self.cues, ", ".join(CUES))
        for name in ("confirm_s", "disk_warn_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise _fail(name, value, "a number > 0")
        try:
            self.timing
        except ValueError as exc:
            raise ConfigError(f"[handsfree]: {exc}") from None
        object.__setattr__(self, "gestures", _mapping("gestures", self.gestures, lambda k: k in POSES,
                                                      "poses " + ", ".join(POSES)))
        object.__setattr__(self, "pedal_keys", _mapping("pedal_keys", self.pedal_keys,
                                                        lambda k: isinstance(k, str) and k.startswith(("KEY_", "BTN_")),
                                                        "evdev key names such as KEY_PAGEDOWN or BTN_LEFT"))
        object.__setattr__(self, "voice_phrases", _mapping("voice_phrases", self.voice_phrases, _is_phrase,
                                                           "phrases of 1-6 lower-case words (a-z, ')"))
        if not isinstance(self.subtasks, (list, tuple)) or not all(isinstance(s, str) and s for s in self.subtasks):
            raise _fail("subtasks", self.subtasks, "a list of non-empty labels")
        object.__setattr__(self, "subtasks", tuple(self.subtasks))
        for name in ("task", "instruction", "pedal_device", "voice_device", "voice_enrolment"):
            if not isinstance(getattr(self, name), str):
                raise _fail(name, getattr(self, name), "text")

    @property
    def timing(self) -> GestureTiming:
        return GestureTiming(hold_s=self.hold_s, cooldown_s=self.cooldown_s)

    @property
    def command_hands(self) -> tuple[str, ...]:
        return ("left", "right") if self.hand == "both" else (self.hand,)


def parse_handsfree(table: Any, where: str, base_dir=None) -> HandsfreeConfig:
    """``[handsfree]`` of a rig config (None: the defaults; nothing hands-free but cues). ``base_dir``: the
    config file's directory, which a relative ``voice_enrolment`` path is taken from."""
    if table is None:
        return HandsfreeConfig()
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    allowed = {f.name for f in dataclasses.fields(HandsfreeConfig)}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    defaults = {"gestures": DEFAULT_GESTURES, "pedal_keys": DEFAULT_PEDAL_KEYS, "voice_phrases": DEFAULT_VOICE_PHRASES}
    # a mapping table given replaces the default one whole (so a pose can be left unmapped)
    config = HandsfreeConfig(**{k: (dict(v) if k in defaults else v) for k, v in table.items()})
    if base_dir is not None and config.voice_enrolment and not os.path.isabs(config.voice_enrolment):
        config = dataclasses.replace(config, voice_enrolment=os.path.join(str(base_dir), config.voice_enrolment))
    return config
