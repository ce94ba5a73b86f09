"""Hands-free commands to the recorder: a control-channel client and the commander that turns a command
name of the rig config (``start_stop``, ``next_subtask``, ...) into control requests.

``ControlClient`` speaks docs/control.md on the recorder's in-process endpoint: each request has its own id
and is resent with that id until answered, and the recorder runs an id once, so a command is never lost
or doubled. ``Commander`` runs commands one at a time, in the order given, on its own thread
(``handsfree-commands``); the inputs (gestures, pedal) only ``submit``.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from dataclasses import dataclass
from typing import Callable

import zmq

from capture_app.bus import control_protocol as protocol
from capture_app.core.clock import NS_PER_S
from capture_app.rig.handsfree_config import HandsfreeConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    """``name`` (a rig-config command) given ``via`` gesture or pedal (docs/control.md), begun at ``onset_ns`` (host
    monotonic ns: a gesture's onset, a key press), ``detail`` saying what exactly (``fist, left hand``)."""

    name: str
    via: str
    onset_ns: int
    detail: str = ""


class ControlClient:
    """A DEALER on the recorder's control endpoint. ``request`` blocks until the answer (protocol.exchange:
    the same id resent every RESEND_S) or GIVE_UP_S; one thread uses it."""

    def __init__(self, context: zmq.Context, endpoint: str):
        self._socket = context.socket(zmq.DEALER)
        self._socket.linger = 0
        self._socket.connect(endpoint)
        self.malformed = 0  # answers that could not be read (dropped; the request is resent)

    def request(self, cmd: str, stop: threading.Event | None = None, **args) -> tuple[bool, dict, str]:
        """(ok, result, error) of one command."""
        ok, result, error = protocol.exchange(self._socket, uuid.uuid4().hex, cmd, args, protocol.GIVE_UP_S,
                                              stop or threading.Event(), self._count_malformed)
        if ok is None:
            return False, {}, f"{cmd}: the recorder did not answer within {protocol.GIVE_UP_S:.0f} s"
        return ok, result, error

    def _count_malformed(self) -> None:
        self.malformed += 1
        log.warning("an answer on the recorder's control endpoint could not be read (%d so far)", self.malformed)

    def close(self) -> None:
        self._socket.close(0)


class Commander:
    """Runs hands-free commands in order through ``client``; says what happened through ``cue(text)``.

    * ``start_stop`` starts a take when none records and stops and saves the one recording (as Space);
    * ``discard`` asks for confirmation: the same command again within ``confirm_s`` of the first (by their
      onsets) discards; any other command in between cancels it (as X X in the monitor);
    * ``next_subtask`` starts the next label of ``[handsfree] subtasks`` (``step N`` past their end) at the
      command's onset; ``end_subtask`` ends the open one at its onset; a stop ends it at the stop's onset.
    """

    def __init__(self, client: ControlClient, config: HandsfreeConfig, cue: Callable[[str], None]):
        self.client = client
        self.config = config
        self.cue = cue
        self.done: list[tuple[Command, bool, str]] = []  # (command, ok, error): what ran, for tests and logs
        self._pending_discard: Command | None = None
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="handsfree-commands", daemon=True)

    def start(self) -> "Commander":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(10)
        self.client.close()

    def submit(self, command: Command) -> None:
        """Queue ``command`` (any thread)."""
        with self._idle:
            self._busy += 1
        self._queue.put(command)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every submitted command has run; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            command = self._queue.get()
            if command is None:
                break
            try:
                ok, error = self._execute(command)
            except Exception as exc:  # a bug must not stop hands-free operation
                log.exception("hands-free: %s failed", command)
                ok, error = False, f"{type(exc).__name__}: {exc}"
            self.done.append((command, ok, error))
            if not ok and error:
                log.warning("hands-free %s (%s via %s) refused: %s", command.name, command.detail, command.via, error)
                self.cue(_spoken_error(error))
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _request(self, cmd: str, command: Command, **args) -> tuple[bool, str]:
        by = (command.detail or command.via)[:200]  # the event says "by thumb_little, left hand via gesture"
        ok, _, error = self.client.request(cmd, self._stop, by=by, via=command.via, onset_ns=int(command.onset_ns),
                                           **args)
        return ok, error

    def _execute(self, command: Command) -> tuple[bool, str]:
        name = command.name
        pending, self._pending_discard = self._pending_discard, None
        if name == "discard":
            if pending is None or command.onset_ns - pending.onset_ns > self.config.confirm_s * NS_PER_S:
                ok, status, error = self.client.request("status", self._stop)
                if ok and not status["takes"]["recording"]:
                    return False, "no take is recording"
                self._pending_discard = command
                self.cue("discard this take? repeat to confirm")
                return True, ""
            return self._request("discard", command)
        if name in ("start_stop", "next_subtask"):
            ok, status, error = self.client.request("status", self._stop)
            if not ok:
                return False, error
            takes = status["takes"]
            if name == "start_stop":
                name = "stop" if takes["recording"] else "start"
            else:
                n = len(takes["segments"])
                label = self.config.subtasks[n] if n < len(self.config.subtasks) else f"step {n + 1}"
                return self._request("mark_start", command, label=label, t_ns=int(command.onset_ns))
        if name == "start":
            return self._request("start", command, task=self.config.task, instruction=self.config.instruction)
        if name == "stop":
            return self._request("stop", command, outcome="saved")
        if name == "abort":
            return self._request("stop", command, outcome="aborted")
        if name == "end_subtask":
            return self._request("mark_end", command, t_ns=int(command.onset_ns))
        if name == "undo":
            return self._request("undo", command)
        return False, f"unknown hands-free command {name!r}"


def _spoken_error(error: str) -> str:
    """A refusal as the operator hears it: the recorder's reason without the command prefix."""
    head, sep, rest = error.partition(": ")
    text = rest if sep and head.split(" ")[0] in protocol.COMMANDS else error
    return text.split(";")[0][:120]
