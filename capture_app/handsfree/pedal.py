"""A USB foot pedal or presenter clicker read with ``evdev`` in the recorder: no window, no focus, no
display, over SSH too.

Such devices are keyboards to Linux: each key gives ``EV_KEY`` events with value 1 (press), 0 (release)
and 2 (autorepeat while held) (the kernel's input-event contract, Documentation/input/input.rst and
event-codes.rst). A press runs the command mapped to its key name in ``[handsfree] pedal_keys`` (evdev
names, e.g. ``KEY_PAGEDOWN``); releases and autorepeats do nothing, so a held pedal is one command, and a
second press of the same key within ``DEBOUNCE_S`` is a bounce (counted, logged). With ``pedal_grab`` the
recorder takes the device for itself (``EVIOCGRAB``), so its keys reach no window. A device that goes away
(unplugged) is looked for again every ``REOPEN_S``; the operator hears it.

The command's onset is the key press: the kernel stamps events on the wall clock, mapped here onto the
recorder's monotonic clock (and never later than their reading).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Callable

from capture_app.core.clock import NS_PER_S, now_ns
from capture_app.core.errors import ConfigError
from capture_app.handsfree.commands import Command
from capture_app.rig.handsfree_config import HandsfreeConfig

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.15
REOPEN_S = 2.0
KEY_PRESS, KEY_RELEASE, KEY_REPEAT = 1, 0, 2


def key_codes(names) -> dict[int, str]:
    """evdev key names -> {code: name}; ConfigError naming an unknown one."""
    from evdev import ecodes
    out = {}
    for name in names:
        code = ecodes.ecodes.get(name)
        if code is None:
            raise ConfigError(f"[handsfree] pedal_keys: {name!r} is not an evdev key name (see `python3 -m evdev.evtest` "
                              f"or linux/input-event-codes.h, e.g. KEY_PAGEDOWN)")
        out[code] = name
    return out


class PedalReader:
    """Reads one evdev device on the ``handsfree-pedal`` thread and submits the mapped commands.

    ``device``: an already open evdev ``InputDevice`` (or an object with its ``fd``, ``read()``, ``grab()``,
    ``close()`` and ``name``) instead of opening ``[handsfree] pedal_device``. The pedal not found, lost and
    found again is said (``cue``, a few words) and noted (``note(level, text)``: into the recording take's
    /events)."""

    def __init__(self, config: HandsfreeConfig, submit: Callable[[Command], None], device=None,
                 cue: Callable[[str], None] | None = None, note: Callable[[str, str], None] | None = None):
        self.config = config
        self.submit = submit
        self.note = note or (lambda level, text: None)
        self.cue = cue or (lambda text: None)
        self.keys = key_codes(config.pedal_keys)
        self.device = device
        self.presses = 0
        self.bounces = 0
        self.missing = False   # not found or lost, and not back yet (said and noted once)
        self._last_press_ns: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="handsfree-pedal", daemon=True)

    def start(self) -> "PedalReader":
        if self.device is not None and self.config.pedal_grab:
            self.device.grab()
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.device is not None:
            try:
                self.device.close()
            except OSError:
                pass

    @property
    def name(self) -> str:
        """How notes name the pedal: its configured path, else the given device's name."""
        return self.config.pedal_device or repr(getattr(self.device, "name", ""))

    def _open(self):
        import evdev
        device = evdev.InputDevice(self.config.pedal_device)
        if self.config.pedal_grab:
            device.grab()
        log.info("hands-free: pedal %s (%s): %s", self.config.pedal_device, device.name,
                 ", ".join(f"{k} -> {c}" for k, c in self.config.pedal_keys.items()))
        return device

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.device is None:
                try:
                    self.device = self._open()
                    if self.missing:
                        self.cue("pedal connected")
                        self.note("info", f"pedal {self.name} connected again")
                    self.missing = False
                except OSError as exc:
                    if not self.missing:
                        text = (f"cannot open pedal {self.name}: {exc}; trying again every "
                                f"{REOPEN_S:.0f} s (is it plugged in? may this user read it? README, 'A pedal or "
                                f"clicker')")
                        log.warning("hands-free: %s", text)
                        self.cue("pedal not found")
                        self.note("warning", text)
                        self.missing = True
                    self._stop.wait(REOPEN_S)
                    continue
            try:
                ready, _, _ = select.select([self.device.fd], [], [], 0.2)
                if ready:
                    for event in self.device.read():
                        self.on_event(event)
            except BlockingIOError:
                continue
            except OSError as exc:  # unplugged: ENODEV
                text = (f"pedal {self.name} lost: {exc}; its keys command nothing until it is plugged in again "
                        f"(looked for every {REOPEN_S:.0f} s)")
                log.warning("hands-free: %s", text)
                self.cue("pedal disconnected")
                self.note("warning", text)
                self.missing = True
                try:
                    self.device.close()
                except OSError:
                    pass
                self.device = None

    def on_event(self, event) -> None:
        """One evdev ``InputEvent``: a press of a mapped key submits its command."""
        from evdev import ecodes
        if event.type != ecodes.EV_KEY or event.value != KEY_PRESS:
            return  # release (0), autorepeat (2), SYN and MSC events
        name = self.keys.get(event.code)
        if name is None:
            log.info("hands-free: pedal key %s is not mapped ([handsfree] pedal_keys)",
                     ecodes.bytype[ecodes.EV_KEY].get(event.code, event.code))
            return
        received = now_ns()
        age_ns = time.time_ns() - (event.sec * NS_PER_S + event.usec * 1000)
        onset = received - min(max(age_ns, 0), NS_PER_S)  # the press on the recorder's clock
        last = self._last_press_ns.get(event.code)
        self._last_press_ns[event.code] = onset
        if last is not None and onset - last < DEBOUNCE_S * NS_PER_S:
            self.bounces += 1
            log.info("hands-free: pedal %s pressed again after %.0f ms: a bounce, ignored (%d so far)", name,
                     (onset - last) / 1e6, self.bounces)
            return
        self.presses += 1
        self.submit(Command(self.config.pedal_keys[name], "pedal", onset, name))
