"""The hands-free parts of one recorder, started and stopped together (``capture-app serve``)."""

from __future__ import annotations

import logging
from typing import Callable

from capture_app.handsfree.commands import Commander, ControlClient
from capture_app.handsfree.cues import CueSpeaker, CueWatcher

log = logging.getLogger(__name__)


class Handsfree:
    """Gestures and pedal as the rig config says; cues when one of them is on (``[handsfree] cues = "auto"``)
    or always (``"speak"`` / ``"beep"``), never with ``"off"``.

    ``session``, ``takes`` and ``server`` are the recorder's ``CaptureSession``, ``Takes`` and
    ``ControlServer`` (started); ``cue_sink`` replaces playing cues (tests); ``pedal_device`` an evdev device
    object to read instead of opening ``[handsfree] pedal_device`` (tests)."""

    def __init__(self, session, takes, server, cue_sink: Callable[[str], None] | None = None, pedal_device=None,
                 voice_source=None):
        self.config = session.config.handsfree
        self.session, self.takes, self.server = session, takes, server
        commanding = (self.config.gestures_on or bool(self.config.pedal_device) or pedal_device is not None
                      or self.config.voice_on)
        # "auto": the recorder speaks when hands-free inputs command it; otherwise the monitor's --speak does
        self.cue_mode = "off" if self.config.cues == "auto" and not commanding else self.config.cues
        self.speaker = CueSpeaker(self.cue_mode, cue_sink)
        self.commander = Commander(ControlClient(server.context, server.local_endpoint), self.config,
                                   self.speaker.say)
        self.watcher = CueWatcher(takes, session, self.speaker.say, self.config.disk_warn_mb,
                                  missing=self.missing_inputs)
        self.gestures = None
        self.pedal = None
        self.voice = None
        self._pedal_device = pedal_device
        self._voice_source = voice_source  # an iterable of 16 kHz int16 blocks instead of the microphone (tests)

    def start(self) -> "Handsfree":
        self.commander.start()
        if self.cue_mode != "off":
            self.watcher.start()
        if self.config.gestures_on:
            from capture_app.handsfree.gesture_listener import GestureListener
            self.gestures = GestureListener(self.config, self.commander.submit).start()
            self.session.intake.add_sample_listener(self.gestures.streams, self.gestures.feed)
            log.info("hands-free: gestures of the %s hand command the recorder: %s", self.config.hand,
                     ", ".join(f"{p} -> {c}" for p, c in self.config.gestures.items()))
        if self.config.pedal_device or self._pedal_device is not None:
            from capture_app.handsfree.pedal import PedalReader
            self.pedal = PedalReader(self.config, self.commander.submit, device=self._pedal_device,
                                     cue=self.speaker.say, note=self._note).start()
        if self.config.voice_on:
            from capture_app.handsfree.voice import VoiceListener
            self.voice = VoiceListener(self.config, self.commander.submit, source=self._voice_source,
                                       cue=self.speaker.say, note=self._note, refused=self._note_refused).start()
        self.session.handsfree_status = self.status
        return self

    def status(self) -> dict:
        """The state feed's ``handsfree`` (docs/control.md): each input on (None when off), what is missing,
        and the speech the voice input heard and did not take."""
        return {"gestures": "on" if self.gestures is not None else None,
                "pedal": None if self.pedal is None else ("missing" if self.pedal.missing else "ok"),
                "voice": None if self.voice is None else ("stopped" if self.voice.stopped else "listening"),
                "voice_refused": self.voice.refused if self.voice is not None else 0,
                "missing": self.missing_inputs()}

    def missing_inputs(self) -> list[str]:
        """The hands-free inputs configured but not working now ("pedal", "voice input"), said when a take
        starts so the operator knows before relying on them."""
        missing = []
        if self.pedal is not None and self.pedal.missing:
            missing.append("pedal")
        if self.voice is not None and self.voice.stopped:
            missing.append("voice input")
        return missing

    def _note(self, level: str, text: str) -> None:
        """A hands-free input lost or found (pedal, microphone): into the take's /events (between takes, into
        the next take's), so a take whose commands stopped working says why."""
        self.session.episodes.log_event(level, "handsfree", text)

    def _note_refused(self, onset_ns: int, text: str) -> None:
        """Speech heard and not taken as a command: an /events info row (source ``voice``) at its onset in
        the recording take, none between takes."""
        writer = self.session.episodes.current()
        if writer is not None:
            writer.log_event("info", "voice", text, t_ns=onset_ns)

    def close(self) -> None:
        self.session.handsfree_status = None
        for part in (self.voice, self.pedal, self.gestures):
            if part is not None:
                part.close()
        self.commander.close()
        if self.cue_mode != "off":
            self.watcher.close()
        self.speaker.close()

    def __enter__(self) -> "Handsfree":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
