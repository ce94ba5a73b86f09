"""The drivers' ``_status/<driver>`` messages (docs/protocol.md, "Driver health"): which endpoint may send each
driver's, the newest health record of every driver and its changes as ``/events``, and what each driver says it
published, from which a stop counts the samples that never arrived (``undelivered``).

Used by the intake's dispatcher thread (``owned``, ``on_status``) and read from others (under ``_lock``).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from capture_app.bus.checks import MessageCheck
from capture_app.bus.driver_status import DriverHealth
from capture_app.bus.message import STATUS_PREFIX, Message
from capture_app.bus.published import published_by_status
from capture_app.core.clock import now_ns
from capture_app.rig.config import RigConfig

log = logging.getLogger(__name__)


class DriverStatuses:
    """The drivers' statuses: refusals counted (``refused``: from an endpoint that does not own the driver;
    ``bad``: a field of the wrong type or range), health records by driver name, ``published`` stream ->
    (sender, seq) the newest each driver said it published."""

    def __init__(self, config: RigConfig, checker: MessageCheck, writer_of: Callable[[], object | None]):
        self.config = config
        self.checker = checker
        self._writer_of = writer_of
        self.refused = 0
        self.bad = 0
        self._last_event_ns: dict[str, int] = {}
        self._health: dict[str, DriverHealth] = {}
        self._lock = threading.Lock()
        self.published: dict[str, tuple[int, int]] = {}
        self._stopping_ns: int | None = None  # while a take stops: the stop instant

    def owned(self, message: Message, allowed_drivers) -> bool:
        """A ``_status/<driver>`` is taken only from the endpoint the rig config gives that driver; others are
        counted (``refused``) and an event at most once a second."""
        name = message.stream[len(STATUS_PREFIX):]
        if name in allowed_drivers:
            return True
        self.refused += 1
        t = message.t_receive_ns
        if t - self._last_event_ns.get("_status", 0) >= 1_000_000_000:
            self._last_event_ns["_status"] = t
            text = (f"refused a status for driver {name!r} from an endpoint that does not own it "
                    f"({self.refused} so far; docs/protocol.md, Trust model)")
            log.warning("%s", text)
            writer = self._writer_of()
            if writer is not None:
                writer.log_event("error", "bus", text, t_ns=t)
        return False

    def on_status(self, message: Message) -> None:
        """A status from its own endpoint: its health record replaces the driver's last one (its changes into
        ``/events``), its sender is alive or gone for the checks, and what it says it published counts for
        ``undelivered`` unless it arrived after a stop began. A malformed one is refused whole and counted."""
        name = message.stream[len(STATUS_PREFIX):]
        try:
            health = DriverHealth.from_dict(message.meta)
        except ValueError as exc:  # refused whole: counted, shown live, an event at most once a second
            self.bad += 1
            t = now_ns()
            writer = self._writer_of()
            if writer is not None and t - self._last_event_ns.get("_status", 0) >= 1_000_000_000:
                self._last_event_ns["_status"] = t
                writer.log_event("error", "bus", f"refused a status message on {message.stream!r}: {exc} "
                                                 f"({self.bad} refused so far; docs/protocol.md)")
            return
        driver = self.config.driver(name)
        self.checker.note_status(driver.streams, message.sender, str(health.state), message.t_receive_ns)
        with self._lock:
            previous = self._health.get(name)
            self._health[name] = health
            if self._stopping_ns is None or message.t_receive_ns <= self._stopping_ns:
                self.published.update(published_by_status(health))
        writer = self._writer_of()
        if previous is None or writer is None:
            return
        if health.state != previous.state:
            level = "info" if health.state == "running" else "warning"
            writer.log_event(level, name, f"driver {name}: {previous.state} -> {health.state}")
        if health.errors > previous.errors:
            writer.log_event("error", name, f"driver {name}: {health.last_error}")
        if health.device and health.device != previous.device:
            writer.set_stream_attrs(health.stream, {"device": health.device})

    def begin_take(self) -> None:
        """A take starts: no stop is pending."""
        with self._lock:
            self._stopping_ns = None  # (a stop that failed half-way leaves it set)

    def begin_stop(self) -> int:
        """A take stops now: statuses received later do not count for ``undelivered``; the stop instant (ns)."""
        with self._lock:
            self._stopping_ns = now_ns()
            return self._stopping_ns

    def take_published(self) -> dict[str, tuple[int, int]]:
        """What the drivers said they published up to the stop (stream -> (sender, seq)); ends the stop."""
        with self._lock:
            self._stopping_ns = None
            return dict(self.published)

    def driver_health(self) -> dict[str, DriverHealth]:
        """The newest status of every driver that reported, by driver name."""
        with self._lock:
            return dict(self._health)
