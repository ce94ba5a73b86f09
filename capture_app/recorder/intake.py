"""The intake: every bus message from its socket to the synchronizer and the writer's queue.

One thread, ``bus-dispatcher``. For each message, top to bottom:

1. receive it (``BusSubscriber.recv_waiting``; a malformed one is counted there and logged here);
2. a driver status goes to the driver health records (and their changes into ``/events``);
3. a sample is checked: its stream is configured, it came from the endpoint that owns that stream, its
   remote clock is mapped (drivers on other hosts), and it fits its schema and is plausible
   (``capture_app.bus.checks``); a refusal is counted per stream and reason, shown live and logged;
4. an accepted sample has non-finite poses flagged (stored, never valid) and absent optional buffers filled;
5. it enters the synchronizer's buffers and, in the same hold of the synchronizer's lock, the writer's queue;
6. outside the lock: the stream monitor sees it and tracking changes become events.

Nothing here starts devices or episodes: the rig's processes are ``rig_processes``, episodes ``episodes``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Callable

import numpy as np
import zmq

from capture_app.bus.checks import MessageCheck, fill_optional, fill_optional_block
from capture_app.bus.driver_status import DriverHealth
from capture_app.bus.message import Message, SampleBlock
from capture_app.bus.sockets import BusSubscriber
from capture_app.core.clock import now_ns
from capture_app.core.errors import CaptureError
from capture_app.recorder.bus_endpoints import check_endpoints, open_subscribers, remote_clocks, remote_keys
from capture_app.recorder.driver_statuses import DriverStatuses
from capture_app.recorder.video_gate import VideoGate
from capture_app.recorder.health import StreamMonitor
from capture_app.recorder.synchronizer import Synchronizer
from capture_app.rig.config import RigConfig
from capture_app.rig.priority import prioritise_recorder_thread

log = logging.getLogger(__name__)

STOP_DRAIN_S = 3.0
STOP_DRAIN_MAX_S = 30.0
STOP_LIVE_WINDOW_S = 1.0  # a stream that published this recently before a stop is waited for
# After a wake-up the dispatcher lets messages gather this long before draining them together: one wake-up
# per ~4 ms instead of one per message (~1,200/s on the full rig) saves ~2.5 ms of CPU per tick; receive
# stamps are then up to this much after a message reached the socket (docs/episode-format.md).
DISPATCH_GATHER_S = 0.004
DISPATCH_TURN = 64  # messages taken from one endpoint before the next endpoint's turn
# messages handled in one hold of the synchronizer's lock: a tick waits at most for these (~0.5 ms)
DISPATCH_LOCKED = 16


class Intake:
    """Receives, checks, maps clocks and accounts for every bus message; hands accepted samples on.

    ``writer_of`` returns the episode writer currently recording, or None; it is read under the
    synchronizer's lock, where the episodes swap it.
    """

    def __init__(self, config: RigConfig, synchronizer: Synchronizer, monitor: StreamMonitor,
                 context: zmq.Context, writer_of: Callable[[], object | None]):
        self.config = config
        self.synchronizer = synchronizer
        self.monitor = monitor
        self._context = context
        self._writer_of = writer_of
        self.expected_rates = {s: float(d.rate_hz) for d in config.drivers for s in d.streams}
        self.checker = MessageCheck(self.expected_rates)
        self.unexpected_messages = 0
        self.non_finite_messages = 0
        self.unsynchronised_messages = 0
        self.clock_clients: dict = {}
        self._clock_of_stream: dict = {}
        self._subscribers: list[BusSubscriber] = []
        self._allowed_streams: dict[int, frozenset] = {}  # id(subscriber) -> the streams it may carry
        self._allowed_drivers: dict[int, frozenset] = {}  # id(subscriber) -> the drivers whose status it may carry
        self.exited: deque = deque()  # driver names whose process exited (the rig's watchdog appends, we take)
        self._last_rejection_event_ns: dict[str, int] = {}
        self._last_publish_ns: dict[str, int] = {}
        self._idle_since_ns = 0
        self._tracking_state: dict[str, str] = {}
        self.statuses = DriverStatuses(config, self.checker, writer_of)  # the drivers' _status messages
        self.video_gate = VideoGate()  # the H.264 frames the episode stores, for the live synchronizer
        self._listeners: dict[str, tuple] = {}  # stream -> callbacks given each accepted sample (add_sample_listener)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, local_endpoints: list[str]) -> "Intake":
        """Bind the local bus endpoints, connect to the drivers elsewhere (keys and clocks: ``bus_endpoints``) and
        start the dispatcher thread (after ``check_endpoints``)."""
        keys = remote_keys(self.config)
        self.clock_clients, self._clock_of_stream = remote_clocks(self.config, self._context, keys)
        for subscriber, streams, drivers in open_subscribers(self.config, self._context, local_endpoints, keys):
            self._subscribers.append(subscriber)
            self._allowed_streams[id(subscriber)] = streams
            self._allowed_drivers[id(subscriber)] = drivers
        self._thread = threading.Thread(target=self._dispatch, name="bus-dispatcher", daemon=True)
        self._thread.start()
        return self

    def check_endpoints(self) -> None:
        """Refuse, before anything starts, a bus endpoint another local user could bind or reach
        (docs/protocol.md, "Trust model")."""
        check_endpoints(self.config)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) if the intake is stopping."""
        return self._stop.wait(seconds)

    @property
    def dispatcher_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop the dispatcher thread and close every socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():
                log.error("bus dispatcher did not stop within 10 s; closing the bus anyway")
        for client in self.clock_clients.values():
            client.close()
        for subscriber in self._subscribers:
            subscriber.close()

    # --- the dispatcher thread -------------------------------------------------------------
    def _dispatch(self) -> None:
        prioritise_recorder_thread()
        poller = zmq.Poller()
        for subscriber in self._subscribers:
            poller.register(subscriber.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if poller.poll(50):
                time.sleep(DISPATCH_GATHER_S)  # cheaper than an Event wait; a stop is seen within it
                # Drain what is waiting without a poll per message, taking turns of at most DISPATCH_TURN messages
                # per endpoint so a flooding endpoint cannot starve the others; never past a stop.
                busy = True
                while busy and not self._stop.is_set():
                    busy, pass_started_ns = False, now_ns()
                    for subscriber in self._subscribers:
                        if self._dispatch_turn(subscriber) >= DISPATCH_TURN:
                            busy = True
                if not busy:  # every endpoint was found empty after pass_started_ns: silence there is real
                    self.checker.note_idle(pass_started_ns)
            else:
                self.checker.note_idle(now_ns() - 1)
            while self.exited:  # a driver process died: its senders are gone (a restart may take their streams)
                self.checker.note_gone([s for n in self.exited.popleft() for s in self.config.driver(n).streams])
            self._idle_since_ns = now_ns()  # nothing was waiting at this instant

    def _dispatch_turn(self, subscriber: BusSubscriber) -> int:
        """Handle up to DISPATCH_TURN waiting messages of one endpoint, DISPATCH_LOCKED at a time; returns how
        many were taken."""
        taken = 0
        while taken < DISPATCH_TURN and not self._stop.is_set():
            batch = self._dispatch_batch(subscriber)
            taken += batch
            if batch < DISPATCH_LOCKED:  # nothing more waiting
                break
        return taken

    def _dispatch_batch(self, subscriber: BusSubscriber) -> int:
        """Take up to DISPATCH_LOCKED waiting samples of one endpoint; returns how many were taken (0: none
        waiting). Their receive stamps, the synchronizer's buffers and one writer queue entry for the accepted
        samples change in one hold of the synchronizer's lock, so a tick sees a sample in its buffer only once
        the writer has it queued (a synced row's stream_index is resolved from it). A batch message is taken
        whole (one receive stamp): as one block when it is clean (``_accept_block``), else sample by sample."""
        sync = self.synchronizer
        taken = 0
        handled = []  # accepted samples, blocks and status messages, for the bookkeeping outside the lock
        with sync.lock:
            samples = []
            writer = self._writer_of()
            while taken < DISPATCH_LOCKED:
                try:
                    item = subscriber.recv_waiting_block()
                    if item is False:  # nothing waiting
                        break
                    if isinstance(item, SampleBlock):
                        taken += item.n
                        if self._accept_block(item, subscriber):
                            sync.ingest_block(item)
                            samples.append(item)
                            handled.append(item)
                            continue
                        messages = item.messages()
                    else:
                        taken += 1
                        messages = [item]
                    for message in messages:
                        self._take_one(message, subscriber, writer, samples, handled)
                except Exception:  # a bug in one message must not stop the bus
                    log.exception("bus dispatcher: message dropped")
            if writer is not None and samples:
                writer.submit_many(samples)
        for item in handled:
            try:
                if item.is_status:
                    self.statuses.on_status(item)
                else:
                    self._after_accepted(item)
            except Exception:
                log.exception("bus dispatcher: message dropped")
        return taken

    def _take_one(self, message: Message | None, subscriber: BusSubscriber, writer, samples: list,
                  handled: list) -> None:
        """One sample or status under the synchronizer's lock (a malformed message is None, counted)."""
        if message is None:
            self._note_malformed(subscriber)
        elif message.is_status:
            if self.statuses.owned(message, self._allowed_drivers.get(id(subscriber), ())):
                handled.append(message)
        elif self._accept(message, subscriber):
            if writer is None or self.video_gate.admits(message):  # only frames the episode stores
                self.synchronizer.ingest(message)
            samples.append(message)
            handled.append(message)

    def _after_accepted(self, item: Message | SampleBlock) -> None:
        """Outside the lock: the stream monitor, tracking changes as events, the sample listeners."""
        self._last_publish_ns[item.stream] = item.t_publish_ns
        if isinstance(item, SampleBlock):
            self.monitor.observe_block(item)
            state = self._tracking_state.get(item.stream, "ok")
            if item.tracking.count(state) != item.n:  # a change within the batch: each one an event
                for i, tracking in enumerate(item.tracking):
                    if tracking != self._tracking_state.get(item.stream, "ok"):
                        self._note_tracking(item.message(i))
            for listener, takes_blocks in self._listeners.get(item.stream, ()):
                if takes_blocks:
                    listener(item)
                else:
                    for message in item.messages():
                        listener(message)
            return
        self.monitor.observe(item)
        self._note_tracking(item)
        for listener, _ in self._listeners.get(item.stream, ()):
            listener(item)

    def _accept_block(self, block: SampleBlock, subscriber: BusSubscriber) -> bool:
        """A whole batch accepted in array operations when each of its samples would pass ``_accept`` unchanged
        (a configured stream from its owner, on this host's clock, every pose finite, ``accept_block``).
        False, with nothing counted or changed, for any other batch: its samples then go one by one."""
        stream = block.stream
        if stream not in self.expected_rates or stream not in self._allowed_streams.get(id(subscriber), ()):
            return False
        if self._clock_of_stream.get(stream) is not None:
            return False
        for name in ("pose", "keypoints"):  # a finite sum means every value is finite (NaN and inf propagate);
            values = block.arrays.get(name)  # one that overflows goes sample by sample, where each is checked
            if values is not None and not math.isfinite(values.sum()):
                return False
        if not self.checker.accept_block(block):
            return False
        fill_optional_block(self.checker.kinds[stream], block)
        return True

    # --- one sample ------------------------------------------------------------------------
    def _accept(self, message: Message, subscriber: BusSubscriber) -> bool:
        """Check one sample: its stream, the endpoint that sent it, its clock and its schema; a refused one is
        counted and shown. Flags non-finite values and fills absent optional buffers of an accepted one."""
        if message.stream not in self.expected_rates:
            self._count_unexpected(message)
            return False
        if message.stream not in self._allowed_streams.get(id(subscriber), ()):
            self._reject(message, "not-owner")  # published from an endpoint that does not own it
            return False
        clock = self._clock_of_stream.get(message.stream)
        if clock is not None and not self._to_local_clock(message, clock):
            return False
        reason = self.checker.check(message)
        if reason is not None:
            self._reject(message, reason, counted=True)
            return False
        if not all(np.isfinite(a).all() for n, a in message.arrays.items() if n in ("pose", "keypoints")):
            self._flag_non_finite(message)
        fill_optional(self.checker.kinds[message.stream], message)
        for change in self.checker.take_sender_changes():
            self._log_sender_change(*change)
        return True

    def _log_sender_change(self, stream: str, old: int, new: int, why: str, t_ns: int) -> None:
        """A stream's sender changed (docs/protocol.md, "Trust model"): in the log and the episode's events."""
        text = (f"{stream}: sender {new:x} replaces {old:x} ({why}); change {self.checker.sender_changes[stream]} "
                f"of this session")
        log.warning("%s", text)
        writer = self._writer_of()
        if writer is not None:
            writer.log_event("warning", stream, text, t_ns=t_ns)

    def _to_local_clock(self, message: Message, clock) -> bool:
        """Put a remote host's stamps on this host's clock; False (dropped, counted) before the first sync."""
        offset = clock.estimator.offset_at(message.t_receive_ns)
        if offset is None:
            self.unsynchronised_messages += 1
            return False
        message.clock_offset_ns = offset
        message.t_capture_ns -= offset
        message.t_publish_ns -= offset
        return True

    def _reject(self, message: Message, reason: str, counted: bool = False) -> None:
        """A message refused whole: counted per stream and reason, shown live, and in the episode's events
        at most once a second per stream (with the counts so far)."""
        if not counted:
            self.checker.rejected[(message.stream, reason)] += 1
        self.monitor.note_rejected(message.stream, reason, message.t_receive_ns)
        writer = self._writer_of()
        last = self._last_rejection_event_ns.get(message.stream, 0)
        if writer is not None and message.t_receive_ns - last >= 1_000_000_000:
            self._last_rejection_event_ns[message.stream] = message.t_receive_ns
            counts = self.checker.rejected_by_stream().get(message.stream, {})
            writer.log_event("error", message.stream, f"rejected {message.stream} seq {message.seq}: {reason} "
                                                      f"(rejected so far: {counts})", t_ns=message.t_receive_ns)

    def _note_malformed(self, subscriber: BusSubscriber) -> None:
        writer = self._writer_of()
        t = now_ns()
        if writer is not None and t - self._last_rejection_event_ns.get("_bus", 0) >= 1_000_000_000:
            self._last_rejection_event_ns["_bus"] = t
            writer.log_event("error", "bus", f"malformed messages dropped so far: {dict(subscriber.malformed)} "
                                             f"(docs/protocol.md: what a receiver refuses)", t_ns=t)

    def _count_unexpected(self, message: Message) -> None:
        self.unexpected_messages += 1
        if self.unexpected_messages in (1, 100, 10_000):
            log.warning("dropped %d message(s) on stream %r, which this rig does not configure (last from sender %x)",
                        self.unexpected_messages, message.stream, message.sender)

    def _flag_non_finite(self, message: Message) -> None:
        """A pose or keypoints with NaN/inf: store it as received, but never use it as valid."""
        message.tracking = "lost"
        self.non_finite_messages += 1
        writer = self._writer_of()
        if writer is not None and self.non_finite_messages % 1000 == 1:
            writer.log_event("error", message.stream, f"non-finite values in {message.stream} seq {message.seq}: "
                                                      f"treated as tracking lost ({self.non_finite_messages} so far)",
                             t_ns=message.t_receive_ns)

    # --- after the lock: status and tracking events ------------------------------------------
    def _note_tracking(self, message: Message) -> None:
        previous = self._tracking_state.get(message.stream, "ok")
        if message.tracking != previous:
            self._tracking_state[message.stream] = message.tracking
            writer = self._writer_of()
            if writer is not None:
                writer.log_event("warning" if message.tracking == "lost" else "info", message.stream,
                                 f"tracking {previous} -> {message.tracking}", t_ns=message.t_capture_ns)

    # --- what the rest of the recorder asks -------------------------------------------------
    def add_sample_listener(self, streams, callback: Callable[[Message | SampleBlock], None],
                            blocks: bool = False) -> None:
        """Give ``callback`` every accepted sample of ``streams``, on the dispatcher thread after the
        synchronizer's lock is released (e.g. the glove gestures of ``capture_app.handsfree``). It must only
        hand the message on (a queue put): it runs in the bus's path. With ``blocks`` a batch accepted whole
        comes as one ``SampleBlock`` (cheaper), else always sample by sample. May be called while the
        intake runs."""
        for stream in streams:
            self._listeners[stream] = (*self._listeners.get(stream, ()), (callback, blocks))

    def check_video_streams(self) -> None:
        """Refuse to start a take when a stream the rig stores as video ([writer] video_streams) arrives as
        raw or JPEG colour (a driver elsewhere that does not encode H.264): it would be stored as JPEG."""
        for stream in self.config.writer.video_streams:
            encoding = self.checker.encoding_of(stream, "color")
            if encoding not in (None, "h264"):
                driver = next((d for d in self.config.drivers if stream in d.streams), None)
                where = f"driver {driver.name} at {driver.endpoint}" if driver and driver.endpoint else "its driver"
                raise CaptureError(
                    f"[writer] video_streams lists {stream}, but {where} publishes {encoding} colour frames, not H.264: "
                    f"this recorder does not encode video. Run that driver with this rig config (`capture-app driver "
                    f"--config ...` encodes H.264 as docs/protocol.md 'h264 colour' says), or remove {stream} from "
                    f"[writer] video_streams to store it as JPEG")

    def begin_take(self) -> None:
        """A take starts (under the synchronizer's lock): the video gate starts over, no stop is pending."""
        self.video_gate.reset()
        self.statuses.begin_take()

    def begin_stop(self) -> int:
        """A take stops now (``DriverStatuses.begin_stop``); the stop instant (ns)."""
        return self.statuses.begin_stop()

    def take_published(self) -> dict[str, tuple[int, int]]:
        """What the drivers said they published up to the stop (``DriverStatuses.take_published``)."""
        return self.statuses.take_published()

    def driver_health(self) -> dict[str, DriverHealth]:
        """The newest status of every driver that reported, by driver name."""
        return self.statuses.driver_health()

    @property
    def status_refused(self) -> int:
        return self.statuses.refused

    @property
    def bad_status_messages(self) -> int:
        return self.statuses.bad

    def malformed_total(self) -> int:
        """Malformed messages dropped so far on every endpoint."""
        return sum(subscriber.malformed.total() for subscriber in self._subscribers)

    def received_count(self) -> int:
        """Messages taken off every socket so far, malformed ones included."""
        return sum(subscriber.received + subscriber.malformed.total() for subscriber in self._subscribers)

    def loss_counts(self) -> dict:
        """What the bus lost or refused so far besides per-stream rejections: malformed and unexpected
        messages, non-finite values, and remote messages before clock sync."""
        return {"bus_malformed": self.malformed_total(), "bus_unexpected": self.unexpected_messages,
                "non_finite": self.non_finite_messages, "unsynchronised": self.unsynchronised_messages,
                "status_refused": self.status_refused, "bad_status": self.bad_status_messages, "sender_changes": dict(self.checker.sender_changes)}

    def clock_unsynchronised_reason(self, stream: str) -> str | None:
        """Why a remote stream's samples are held back (its clock service has not answered), else None."""
        clock = self._clock_of_stream.get(stream)
        if clock is None or clock.estimator.offset_at(now_ns()) is not None:
            return None
        return (f"its driver's clock service at {clock.endpoint} has not answered, so its stamps cannot be put "
                f"on this host's clock ({self.unsynchronised_messages} messages held back); is `capture-app "
                f"driver --publish` running there?")

    def drain_to_now(self, log_event: Callable[[str, str], None], timeout_s: float = STOP_DRAIN_S) -> None:
        """Let the dispatcher catch up to this instant (a stop): until every live stream (one that published in
        the STOP_LIVE_WINDOW_S before now) has delivered a message published after it. A starved driver process
        may publish late, so an empty bus is not enough before ``timeout_s``; after it, the wait ends once
        nothing is waiting, and goes on while the dispatcher still makes progress through a backlog (up to
        STOP_DRAIN_MAX_S); what is still queued then is not in the episode, and ``log_event(level, text)`` says
        so."""
        t_stop = now_ns()
        deadline = t_stop + int(timeout_s * 1e9)
        hard_deadline = t_stop + int(STOP_DRAIN_MAX_S * 1e9)
        live = [s for s, t in self._last_publish_ns.items() if t >= t_stop - int(STOP_LIVE_WINDOW_S * 1e9)]
        received = self.received_count()
        while now_ns() < hard_deadline:
            if all(self._last_publish_ns[s] >= t_stop for s in live):
                return
            self._stop.wait(0.05)
            if now_ns() >= deadline:
                if self._idle_since_ns > deadline - int(0.5e9):
                    late = sorted(s for s in live if self._last_publish_ns[s] < t_stop)
                    text = (f"stopped without waiting longer for {', '.join(late)}: nothing published after the "
                            f"stop within {timeout_s:.1f} s, so its last samples before the stop may be missing")
                    log.warning("%s", text)
                    log_event("warning", text)
                    return
                progress, received = self.received_count() - received, self.received_count()
                if not progress:
                    break
                deadline = now_ns() + int(0.5e9)  # still catching up: give it another half second
        text = (f"stopped with the bus still busy after {(now_ns() - t_stop) / 1e9:.1f} s: messages still queued "
                f"then (published before the stop) are not in this episode")
        log.warning("%s", text)
        log_event("error", text)
