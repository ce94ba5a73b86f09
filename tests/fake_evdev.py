"""A stand-in for an ``evdev.InputDevice`` where no input device can be created (this machine has no
/dev/uinput, so ``evdev.UInput`` cannot make a real one).

It follows the Linux kernel's input-event contract (Documentation/input/input.rst, "Event interface", and
Documentation/input/event-codes.rst, "EV_KEY"): a key action is an ``EV_KEY`` event whose value is 1 when
the key is pressed, 2 for each autorepeat while it is held and 0 when it is released, each followed by
``EV_SYN``/``SYN_REPORT``; a USB keyboard-class device (pedals and clickers are) also sends
``EV_MSC``/``MSC_SCAN`` before the key event. Events are evdev's own ``InputEvent`` objects with
``evdev.ecodes`` values and wall-clock stamps (the kernel's default clock). Like python-evdev's
``InputDevice`` it has ``fd`` (readable when events wait), a non-blocking ``read()`` that raises
``BlockingIOError`` when none wait, ``grab()``, ``close()`` and ``name``; ``unplug()`` makes the next read
fail with ENODEV as a removed device does.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import deque

from evdev import InputEvent, ecodes


class FakeInputDevice:
    name = "fake USB foot pedal"

    def __init__(self):
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.fd = self._r
        self._events: deque = deque()
        self._lock = threading.Lock()
        self.grabbed = False
        self.closed = False
        self._unplugged = False

    def _emit(self, etype: int, code: int, value: int) -> None:
        t = time.time_ns()
        self._events.append(InputEvent(t // 1_000_000_000, (t // 1000) % 1_000_000, etype, code, value))

    def key(self, name: str, repeats: int = 0) -> None:
        """Press, autorepeat ``repeats`` times, release key ``name`` (e.g. "KEY_PAGEDOWN")."""
        code = ecodes.ecodes[name]
        with self._lock:
            for value in [1] + [2] * repeats + [0]:
                self._emit(ecodes.EV_MSC, ecodes.MSC_SCAN, 0x7004E)
                self._emit(ecodes.EV_KEY, code, value)
                self._emit(ecodes.EV_SYN, ecodes.SYN_REPORT, 0)
        os.write(self._w, b"x")

    def unplug(self) -> None:
        self._unplugged = True
        os.write(self._w, b"x")

    def read(self):
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            pass
        if self._unplugged:
            raise OSError(errno.ENODEV, "No such device")
        with self._lock:
            events, self._events = list(self._events), deque()
        if not events:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return iter(events)

    def grab(self) -> None:
        self.grabbed = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)
