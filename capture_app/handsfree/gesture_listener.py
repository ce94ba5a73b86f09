"""Glove gestures as commands, in the recorder, off the synchronizer's thread.

The intake's dispatcher hands every accepted glove sample of the command hand(s) to ``feed`` (a queue put,
nothing else on the bus's path); the ``handsfree-gestures`` thread runs ``capture_app.core.gestures`` on
them by capture time and submits the mapped command (``[handsfree] gestures``) with the gesture's onset.
The samples themselves stay in the episode like any other (the pose while commanding is data too).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

import numpy as np

from capture_app.core.gestures import GestureRecogniser
from capture_app.handsfree.commands import Command
from capture_app.rig.handsfree_config import HandsfreeConfig

log = logging.getLogger(__name__)

QUEUE_SAMPLES = 2400  # 10 s of two gloves at 120 Hz


class GestureListener:
    """Recognises gestures on the command hand(s) and submits their commands."""

    def __init__(self, config: HandsfreeConfig, submit: Callable[[Command], None]):
        self.config = config
        self.submit = submit
        poses = tuple(config.gestures)
        self.recognisers = {f"{hand}_glove": GestureRecogniser(hand, poses, config.timing)
                            for hand in config.command_hands}
        self.gestures: list = []          # every Gesture recognised, in order (tests, logs)
        self.dropped = 0                  # samples not looked at because the queue was full (logged)
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_SAMPLES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="handsfree-gestures", daemon=True)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self.recognisers)

    def start(self) -> "GestureListener":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def feed(self, message) -> None:
        """One accepted glove sample (a bus ``Message``): queued for the gesture thread."""
        try:
            self._queue.put_nowait((message.stream, message.t_capture_ns, message.arrays["keypoints"],
                                    message.arrays.get("wrist_quat"), message.tracking != "lost"))
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 100, 10_000):
                log.warning("hands-free: the gesture thread is behind; %d glove samples not looked at (gestures "
                            "may be missed, the episode has every sample)", self.dropped)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream, t_ns, keypoints, quat, tracking_ok = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            recogniser = self.recognisers.get(stream)
            if recogniser is None:
                continue
            try:
                if quat is not None and not np.isfinite(quat).all():
                    quat = None
                gesture = recogniser.update(t_ns, keypoints, quat, tracking_ok)
            except Exception:  # one bad sample must not end hands-free operation
                log.exception("hands-free: a glove sample could not be read for gestures")
                continue
            if gesture is not None:
                self.gestures.append(gesture)
                command = self.config.gestures[gesture.pose]
                log.info("hands-free: gesture %s (%s hand) -> %s", gesture.pose, gesture.hand, command)
                self.submit(Command(command, "gesture", gesture.onset_ns, f"{gesture.pose}, {gesture.hand} hand"))
