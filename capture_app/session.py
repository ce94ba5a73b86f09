"""A capture session: the rig's drivers, the bus dispatcher, the synchronizer and episodes.

Threads (all named): ``driver-<name>`` per in-process driver, ``bus-dispatcher``
(receives, stamps, feeds the synchronizer and the writer), ``synchronizer`` (ticks)
and ``episode-writer`` while recording. The GUI and the CLI only call the methods
here and read snapshots; they never wait on a device.
"""

from __future__ import annotations

import datetime as _dt
import gc
import logging
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from calibration.model import Calibration, load_calibration
from capture_app.bus import STATUS_PREFIX, BusSubscriber, Message
from capture_app.child_process import child_env
from capture_app.clock import now_ns
from capture_app.config import RigConfig, sim_epoch_ns, with_changes
from capture_app.episode_file import open_episode
from capture_app.errors import CalibrationError, CaptureError, ConfigError
from capture_app.health import StreamMonitor, StreamStatus
from capture_app.run_dirs import make_run_dir
from capture_app.priority import enable_recorder_threads, prioritise_recorder_thread, raise_priority
from capture_app.stream_schema import MessageCheck, fill_optional
from capture_app.stream_watch import StreamWatch
from capture_app.synchronizer import VALIDITY_NAMES, SyncedTick, Synchronizer
from capture_app.writer import EpisodeMetadata, EpisodeWriter
from capture_app.driver_host import (DriverHostProcess, driver_config_with_seed, driver_jpeg_quality,
                                     driver_video_settings)
from drivers.base import DriverHealth
from drivers.registry import create_driver, driver_class

log = logging.getLogger(__name__)

STOP_DRAIN_S = 3.0
STOP_DRAIN_MAX_S = 30.0
STOP_LIVE_WINDOW_S = 1.0  # a stream that published this recently before a stop is waited for
FINALIZE_TIMEOUT_S = 600
GIL_SWITCH_INTERVAL_S = 0.0005
# After a wake-up the dispatcher lets messages gather this long before draining them together: one wake-up
# per ~4 ms instead of one per message (~1,200/s on the full rig) saves ~2.5 ms of CPU per tick; receive
# stamps are then up to this much after a message reached the socket (docs/episode-format.md).
DISPATCH_GATHER_S = 0.004
DISPATCH_TURN = 64  # messages taken from one endpoint before the next endpoint's turn
# messages handled in one hold of the synchronizer's lock: a tick waits at most for these (~0.5 ms)
DISPATCH_LOCKED = 16


def default_calibration(config: RigConfig) -> Calibration:
    """The calibration a rig uses: its configured file, or the sim's truth for a simulated rig."""
    if config.calibration_path:
        return load_calibration(config.calibration_path)
    if config.is_simulated:
        from drivers.sim.calibration import sim_calibration
        return sim_calibration(config)
    replays = [d.options.get("episode") for d in config.drivers if d.type == "replay" and d.options.get("episode")]
    if replays:  # replaying an episode: use the calibration it was recorded with
        from calibration.model import calibration_from_json
        try:
            with open_episode(replays[0]) as f:
                return calibration_from_json(str(f["calibration"].attrs["json"]), f"{replays[0]}:/calibration")
        except (OSError, KeyError, CaptureError) as exc:
            raise CalibrationError(f"cannot read the calibration of replayed episode {replays[0]}: {exc}") from None
    raise CalibrationError(f"{config.source_path}: no [calibration] path for this real rig; set it to the file "
                           f"written by `capture-app calibrate`")


def finalize_in_child_process(path: Path) -> dict | None:
    """Write the final table and quality report of a finished episode (``capture_app.final_table``) in a
    child process, so its Python work never holds this process's GIL; the report, or None if it failed
    (the episode then keeps its live table, and says why in the log)."""
    import json
    import subprocess
    import sys

    try:
        result = subprocess.run([sys.executable, "-m", "capture_app.final_table", str(path)], capture_output=True,
                                text=True, timeout=FINALIZE_TIMEOUT_S, stdin=subprocess.DEVNULL, env=child_env())
    except subprocess.TimeoutExpired:
        log.error("finalizing %s took over %d s; it keeps its live table (`capture-app resync` makes the final one)",
                  path, FINALIZE_TIMEOUT_S)
        return None
    if result.returncode != 0:
        log.error("%s", result.stderr.strip() or f"finalizing {path} failed (exit {result.returncode})")
        return None
    with open_episode(path) as f:
        return json.loads(f.attrs["quality"])


def episode_name(task: str = "") -> str:
    """A sortable default name: ``YYYYmmdd-HHMMSS[_task]``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", task).strip("-")[:40]
    return f"{stamp}_{slug}" if slug else stamp


class CaptureSession:
    """Runs a rig and records episodes from it."""

    def __init__(self, config: RigConfig, calibration: Calibration | None = None):
        if config.is_simulated and not sim_epoch_ns(config):
            # one motion epoch for every simulated device: the same seed gives the same motion every run
            epoch = now_ns()
            config = with_changes(config, {d.name: {"epoch_ns": epoch} for d in config.drivers if d.type.startswith("sim_")})
        self.config = config
        self.calibration = calibration or default_calibration(config)
        self._context = zmq.Context()  # private: inproc endpoints of two sessions never collide
        rates = {s: float(d.rate_hz) for d in config.drivers for s in d.streams}
        self.expected_rates = rates
        self.monitor = StreamMonitor(rates, int(config.sync.delay_ms * 1e6))
        self.checker = MessageCheck(rates)
        self._allowed_streams: dict[int, frozenset] = {}  # id(subscriber) -> the streams it may carry
        self._last_rejection_event_ns: dict[str, int] = {}
        self._rejected_at_start: dict = {}
        self._malformed_at_start = 0
        self._stream_watch = StreamWatch(self.monitor, lambda: self._writer, lambda: self._latest_tick)
        self.invalid_rows: dict[str, int] = {name: 0 for name in VALIDITY_NAMES}  # this take's, per hand part
        self.synchronizer = Synchronizer(config.sync, self.calibration, on_tick=self._on_tick, rates_hz=rates)
        self.drivers = []
        self._remote_endpoints = [d.endpoint for d in config.drivers if d.endpoint]
        self._health: dict[str, DriverHealth] = {}
        self._health_lock = threading.Lock()
        self._writer: EpisodeWriter | None = None
        self._latest_tick: SyncedTick | None = None
        self._stop = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._subscriber: BusSubscriber | None = None
        self._tracking_state: dict[str, str] = {}
        self.episode_started_ns = 0
        self.last_quality_report: dict | None = None  # of the last episode finished
        self.unexpected_messages = 0
        self.non_finite_messages = 0
        self.bad_status_messages = 0  # driver status messages refused (a field of the wrong type or range)
        self._last_publish_ns: dict[str, int] = {}
        self._idle_since_ns = 0
        self._keys = None
        self._subscribers: list[BusSubscriber] = []
        self.clock_clients: dict = {}
        self._clock_of_stream: dict = {}
        self.unsynchronised_messages = 0
        self._hosts: list[DriverHostProcess] = []
        self._tmpdir: Path | None = None
        self._ipc_endpoint = ""

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> "CaptureSession":
        """Bind the bus, start the dispatcher, the synchronizer and the rig's local drivers.

        Local drivers (no ``endpoint`` in the config) run in a child process publishing
        over ``ipc://`` (``[rig] drivers_in = "process"``, the default) or as threads here.
        """
        raise_priority()
        enable_recorder_threads(max(0, self.config.sync.realtime_priority - 5))  # below the ticks, above the GUI
        video = driver_video_settings(self.config)  # before anything starts: a missing PyAV is a ConfigError
        bind = [self.config.bus_endpoint]
        local = [d.name for d in self.config.drivers if not d.endpoint]
        isolated = [n for n in local if driver_class(self.config.driver(n).type).isolated]
        shared = [n for n in local if n not in isolated]
        in_process = isolated + (shared if self.config.drivers_in == "process" else [])
        if in_process:
            self._tmpdir = make_run_dir()  # and removes those of killed recorders
            self._ipc_endpoint = f"ipc://{self._tmpdir / 'bus.sock'}"
            bind.append(self._ipc_endpoint)
        self._start_remote()
        # One subscriber per endpoint, so that each stream is accepted only from where the rig config puts it
        self._subscriber = BusSubscriber(bind=bind, context=self._context)
        self._subscribers = [self._subscriber]
        self._allowed_streams[id(self._subscriber)] = frozenset(
            s for d in self.config.drivers if not d.endpoint for s in d.streams)
        for d in self.config.drivers:
            if d.endpoint:
                curve = self._keys if d.endpoint.startswith("tcp://") and self._keys else None
                subscriber = BusSubscriber(connect=[d.endpoint], context=self._context, curve=curve)
                self._subscribers.append(subscriber)
                self._allowed_streams[id(subscriber)] = frozenset(d.streams)
        self._dispatcher = threading.Thread(target=self._dispatch, name="bus-dispatcher", daemon=True)
        self._dispatcher.start()
        groups = [[n] for n in isolated] + ([shared] if shared and self.config.drivers_in == "process" else [])
        for group in groups:
            self._hosts.append(DriverHostProcess(self.config, group, self._ipc_endpoint, self._tmpdir,
                                                 on_event=self._host_event).start())
        if self.config.drivers_in == "threads":
            for name in shared:
                driver = create_driver(driver_config_with_seed(self.config.driver(name), self.config.sim_seed,
                                                               self.config.sim_timing),
                                       self.config.bus_endpoint, context=self._context,
                                       jpeg_quality=driver_jpeg_quality(self.config), video=video,
                                       batch_ms=self.config.bus_batch_ms)
                self.drivers.append(driver.start())
        # Everything allocated so far lives as long as the session: keep it out of the cyclic
        # GC's full collections, which otherwise stall every thread (18 ms measured) and make ticks late.
        gc.freeze()
        # A thread waiting for the GIL gets it within this interval (Python's default is 5 ms): the
        # synchronizer waking for its tick must not wait behind the dispatcher's or the writer's burst.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.synchronizer.start()
        self._stream_watch.start()
        return self

    def _start_remote(self) -> None:
        """Keys and clock synchronisation for drivers that run elsewhere (rig config ``endpoint``)."""
        from capture_app.remote import ClockClient, clock_endpoint, is_loopback, load_keys
        remote = [d for d in self.config.drivers if d.endpoint]
        if self.config.bus_keys_dir:
            keys_dir = self.config.bus_keys_dir
            self._keys = load_keys(f"{keys_dir}/app.key_secret", f"{keys_dir}/driver.key")
        for d in remote:
            if d.endpoint.startswith("tcp://") and not is_loopback(d.endpoint) and self._keys is None:
                raise ConfigError(f"driver {d.name!r} at {d.endpoint} is on another host: set [bus] keys to the "
                                  f"directory from `capture-app keys`")
            if not d.needs_clock_sync:  # same host (ipc://, loopback): same monotonic clock, stamps kept as sent
                continue
            curve = self._keys if d.endpoint.startswith("tcp://") else None
            client = ClockClient(d.name, clock_endpoint(d.endpoint), self._context, curve)
            self.clock_clients[d.name] = client
            for stream in d.streams:
                self._clock_of_stream[stream] = client

    def _host_event(self, level: str, text: str) -> None:
        log.log(logging.ERROR if level == "error" else logging.INFO, "%s", text)
        writer = self._writer
        if writer is not None:
            writer.log_event(level, "driver-host", text)

    def close(self) -> None:
        """Finish any episode, stop drivers and threads, release the bus."""
        if self._writer is not None:
            try:
                self.stop_episode()
            except CaptureError as exc:
                log.error("%s", exc)
        self._stream_watch.stop()
        for driver in self.drivers:
            driver.stop()
        for host in self._hosts:
            host.stop()
        self.synchronizer.stop()
        self._stop.set()
        if self._dispatcher is not None:
            self._dispatcher.join(10)
            if self._dispatcher.is_alive():
                log.error("bus dispatcher did not stop within 10 s; closing the bus anyway")
        for client in self.clock_clients.values():
            client.close()
        for subscriber in self._subscribers:
            subscriber.close()
        self._context.term()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> "CaptureSession":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_for_streams(self, timeout_s: float = 5.0) -> list[str]:
        """Wait until every configured stream delivered a sample; return the ones that did not."""
        deadline = now_ns() + int(timeout_s * 1e9)
        while True:
            waiting = [s for s, st in self.monitor.snapshot().items() if st.state == "waiting"]
            if not waiting or now_ns() > deadline or self._stop.wait(0.05):
                break
        if not waiting:  # let rates settle (they count the last second) for up to 1.5 s
            settle = now_ns() + int(1.5e9)
            while now_ns() < settle and any(st.state != "ok" for st in self.monitor.snapshot().values()):
                self._stop.wait(0.05)
        return waiting

    # --- the dispatcher thread -----------------------------------------------------------
    def _dispatch(self) -> None:
        prioritise_recorder_thread()
        sync = self.synchronizer
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
                    busy = False
                    for subscriber in self._subscribers:
                        if self._dispatch_turn(subscriber, sync) >= DISPATCH_TURN:
                            busy = True
            self._idle_since_ns = now_ns()  # nothing was waiting at this instant

    def _dispatch_turn(self, subscriber: BusSubscriber, sync: Synchronizer) -> int:
        """Handle up to DISPATCH_TURN waiting messages of one endpoint, DISPATCH_LOCKED at a time; returns how
        many were taken."""
        taken = 0
        while taken < DISPATCH_TURN and not self._stop.is_set():
            batch = self._dispatch_batch(subscriber, sync)
            taken += batch
            if batch < DISPATCH_LOCKED:  # nothing more waiting
                break
        return taken

    def _dispatch_batch(self, subscriber: BusSubscriber, sync: Synchronizer) -> int:
        """Take up to DISPATCH_LOCKED waiting messages of one endpoint; returns how many were taken (0: none
        waiting). Their receive stamps, the synchronizer's buffers and one writer queue entry for the accepted
        samples change in one hold of the synchronizer's lock, so a tick sees a sample in its buffer only once
        the writer has it queued (a synced row's stream_index is resolved from it)."""
        taken = 0
        handled = []  # accepted samples and status messages, for the bookkeeping outside the lock
        with sync.lock:
            samples = []
            while taken < DISPATCH_LOCKED:
                try:
                    message = subscriber.recv_waiting()
                    if message is False:  # nothing waiting
                        break
                    if message is None:  # malformed (counted)
                        self._note_malformed(subscriber)
                    elif message.is_status:
                        handled.append(message)
                    elif self._accept(message, subscriber):
                        sync.ingest(message)
                        samples.append(message)
                        handled.append(message)
                except Exception:  # a bug in one message must not stop the bus
                    log.exception("bus dispatcher: message dropped")
                taken += 1
            writer = self._writer
            if writer is not None and samples:
                writer.submit_many(samples)
        for message in handled:
            try:
                if message.is_status:
                    self._on_status(message)
                else:
                    self._last_publish_ns[message.stream] = message.t_publish_ns
                    self.monitor.observe(message)
                    self._note_tracking(message)
            except Exception:
                log.exception("bus dispatcher: message dropped")
        return taken

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
        return True

    def _reject(self, message: Message, reason: str, counted: bool = False) -> None:
        """A message refused whole: counted per stream and reason, shown live, and in the episode's events
        at most once a second per stream (with the counts so far)."""
        if not counted:
            self.checker.rejected[(message.stream, reason)] += 1
        self.monitor.note_rejected(message.stream, reason, message.t_receive_ns)
        writer = self._writer
        last = self._last_rejection_event_ns.get(message.stream, 0)
        if writer is not None and message.t_receive_ns - last >= 1_000_000_000:
            self._last_rejection_event_ns[message.stream] = message.t_receive_ns
            counts = self.checker.rejected_by_stream().get(message.stream, {})
            writer.log_event("error", message.stream, f"rejected {message.stream} seq {message.seq}: {reason} "
                                                      f"(rejected so far: {counts})", t_ns=message.t_receive_ns)

    def _note_malformed(self, subscriber: BusSubscriber) -> None:
        writer = self._writer
        t = now_ns()
        if writer is not None and t - self._last_rejection_event_ns.get("_bus", 0) >= 1_000_000_000:
            self._last_rejection_event_ns["_bus"] = t
            writer.log_event("error", "bus", f"malformed messages dropped so far: {dict(subscriber.malformed)} "
                                             f"(docs/protocol.md: what a receiver refuses)", t_ns=t)

    def loss_counts(self) -> dict:
        """What the bus and the synchronizer lost or refused so far (besides per-stream rejections):
        malformed and unexpected messages, non-finite values, remote messages before clock sync, and this
        take's invalid synced rows per hand part."""
        return {"bus_malformed": self._malformed_total(),
                "bus_unexpected": self.unexpected_messages, "non_finite": self.non_finite_messages,
                "bad_status": self.bad_status_messages,
                "unsynchronised": self.unsynchronised_messages, "invalid_rows": dict(self.invalid_rows)}

    def rejected_counts(self) -> dict[str, dict[str, int]]:
        """Messages refused so far, per stream and reason."""
        return self.checker.rejected_by_stream()

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

    def _count_unexpected(self, message: Message) -> None:
        self.unexpected_messages += 1
        if self.unexpected_messages in (1, 100, 10_000):
            log.warning("dropped %d message(s) on stream %r, which this rig does not configure (last from sender %x)",
                        self.unexpected_messages, message.stream, message.sender)

    def _flag_non_finite(self, message: Message) -> None:
        """A pose or keypoints with NaN/inf: store it as received, but never use it as valid."""
        message.tracking = "lost"
        self.non_finite_messages += 1
        writer = self._writer
        if writer is not None and self.non_finite_messages % 1000 == 1:
            writer.log_event("error", message.stream, f"non-finite values in {message.stream} seq {message.seq}: "
                                                      f"treated as tracking lost ({self.non_finite_messages} so far)",
                             t_ns=message.t_receive_ns)

    def _on_status(self, message: Message) -> None:
        name = message.stream[len(STATUS_PREFIX):]
        try:
            health = DriverHealth.from_dict(message.meta)
        except ValueError as exc:  # refused whole: counted, shown live, an event at most once a second
            self.bad_status_messages += 1
            t = now_ns()
            writer = self._writer
            if writer is not None and t - self._last_rejection_event_ns.get("_status", 0) >= 1_000_000_000:
                self._last_rejection_event_ns["_status"] = t
                writer.log_event("error", "bus", f"refused a status message on {message.stream!r}: {exc} "
                                                 f"({self.bad_status_messages} refused so far; docs/protocol.md)")
            return
        with self._health_lock:
            previous = self._health.get(name)
            self._health[name] = health
        writer = self._writer
        if previous is None or writer is None:
            return
        if health.state != previous.state:
            level = "info" if health.state == "running" else "warning"
            writer.log_event(level, name, f"driver {name}: {previous.state} -> {health.state}")
        if health.errors > previous.errors:
            writer.log_event("error", name, f"driver {name}: {health.last_error}")
        if health.device and health.device != previous.device:
            writer.set_stream_attrs(health.stream, {"device": health.device})

    def _note_tracking(self, message: Message) -> None:
        previous = self._tracking_state.get(message.stream, "ok")
        if message.tracking != previous:
            self._tracking_state[message.stream] = message.tracking
            writer = self._writer
            if writer is not None:
                writer.log_event("warning" if message.tracking == "lost" else "info", message.stream,
                                 f"tracking {previous} -> {message.tracking}", t_ns=message.t_capture_ns)

    def _on_tick(self, tick: SyncedTick) -> None:
        self._latest_tick = tick
        writer = self._writer
        if writer is not None and tick.t_tick_ns >= self.episode_started_ns:
            writer.submit_row("synced", tick)  # the writer thread builds the row
            if not tick.action_valid.all():
                for name, valid in zip(VALIDITY_NAMES, tick.action_valid):
                    if not valid:
                        self.invalid_rows[name] += 1

    # --- episodes --------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._writer is not None

    @property
    def writer(self) -> EpisodeWriter | None:
        return self._writer

    def start_episode(self, out_dir: str | Path, *, name: str | None = None, instruction: str = "",
                      task: str = "", operator: str = "") -> EpisodeWriter:
        """Open a new episode file and start writing every sample and tick into it."""
        if self._writer is not None:
            raise CaptureError("an episode is already recording; stop or discard it first")
        if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}", name):
            raise CaptureError(f"episode name {name!r}: use letters, digits, '-', '_' and '.' (no '/'), "
                               f"starting with a letter or digit")
        with self._health_lock:
            devices = {h.stream: h.device for h in self._health.values() if h.device}
        serials = {d.stream: d.serial for d in self.config.drivers if d.serial}
        serials.update({s: str(dev.get("serial")) for s, dev in devices.items() if dev.get("serial")})
        metadata = EpisodeMetadata(
            episode_name=name or episode_name(task), instruction=instruction, task=task, operator=operator,
            rig_name=self.config.name, rig_config_text=self.config.source_text,
            calibration_json=self.calibration.to_json(), calibration_id=self.calibration.calibration_id,
            device_serials=serials, expected_rates_hz=self.expected_rates, simulated=self.config.is_simulated,
            sim_seed=self.config.sim_seed)
        writer = EpisodeWriter(out_dir, metadata, self.config.writer).start()
        for stream, device in devices.items():
            writer.set_stream_attrs(stream, {"device": device})
        self._rejected_at_start = dict(self.checker.rejected)
        self.invalid_rows = {name: 0 for name in VALIDITY_NAMES}
        self._malformed_at_start = self._malformed_total()
        with self.synchronizer.lock:
            self.episode_started_ns = now_ns()
            self.synchronizer.receive_floor_ns = self.episode_started_ns + 1
            self._writer = writer
        writer.set_attrs("synced", self.synchronizer.describe())
        writer.log_event("info", "session", "episode started")
        return writer

    def _detach_writer(self) -> EpisodeWriter:
        with self.synchronizer.lock:
            writer, self._writer = self._writer, None
            self.synchronizer.receive_floor_ns = 0
        if writer is None:
            raise CaptureError("no episode is recording")
        return writer

    def _drain_bus(self, timeout_s: float = STOP_DRAIN_S) -> None:
        """Before detaching the writer, let the dispatcher catch up to the stop instant: until every live
        stream (one that published in the STOP_LIVE_WINDOW_S before the stop) has delivered a message
        published after it. A starved driver process may publish late, so an empty bus is not enough
        before ``timeout_s``; after it, the wait ends once nothing is waiting, and goes on while the
        dispatcher still makes progress through a backlog (up to STOP_DRAIN_MAX_S); what is still queued
        then is not in the episode, and the episode says so."""
        t_stop = now_ns()
        deadline = t_stop + int(timeout_s * 1e9)
        hard_deadline = t_stop + int(STOP_DRAIN_MAX_S * 1e9)
        live = [s for s, t in self._last_publish_ns.items() if t >= t_stop - int(STOP_LIVE_WINDOW_S * 1e9)]
        received = self._received_count()
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
                    if self._writer is not None:
                        self._writer.log_event("warning", "session", text)
                    return
                progress, received = self._received_count() - received, self._received_count()
                if not progress:
                    break
                deadline = now_ns() + int(0.5e9)  # still catching up: give it another half second
        text = (f"stopped with the bus still busy after {(now_ns() - t_stop) / 1e9:.1f} s: messages still queued "
                f"then (published before the stop) are not in this episode")
        log.warning("%s", text)
        if self._writer is not None:
            self._writer.log_event("error", "session", text)

    def _malformed_total(self) -> int:
        """Malformed messages dropped so far on every endpoint."""
        return sum(subscriber.malformed.total() for subscriber in self._subscribers)

    def _received_count(self) -> int:
        return sum(subscriber.received + subscriber.malformed.total() for subscriber in self._subscribers)

    def stop_episode(self, attrs: dict | None = None, finalize: bool = True) -> Path:
        """Finish the episode (drain, close, rename) and return its path. Blocks until written and, with
        ``finalize``, until its final table and quality report are (``last_quality_report``)."""
        self._drain_bus()
        for name, client in self.clock_clients.items():  # the clock measurements, beside the raw stamps
            for m in list(client.estimator.measurements):
                if m.t_local_ns >= self.episode_started_ns and self._writer is not None:
                    self._writer.submit_row(f"clock_sync/{name}", {"t_local_ns": np.int64(m.t_local_ns),
                                                                   "offset_ns": np.int64(m.offset_ns),
                                                                   "rtt_ns": np.int64(m.rtt_ns)})
        self._store_rejections()
        writer = self._detach_writer()
        summary = {"synchronizer": {"rate_hz": self.config.sync.rate_hz, "delay_ms": self.config.sync.delay_ms},
                   "bus_malformed": self._malformed_total() - self._malformed_at_start,
                   "bus_unexpected": self.unexpected_messages}
        path = writer.finish({**summary, **(attrs or {})})
        if finalize:
            self.last_quality_report = finalize_in_child_process(path)
        return path

    def _store_rejections(self) -> None:
        """Per stream, the messages refused during this episode by reason (attribute ``rejected``)."""
        writer = self._writer
        if writer is None:
            return
        during: dict[str, dict[str, int]] = {}
        for (stream, reason), n in self.checker.rejected.items():
            n -= self._rejected_at_start.get((stream, reason), 0)
            if n:
                during.setdefault(stream, {})[reason] = n
        for stream in self.expected_rates:
            writer.set_stream_attrs(stream, {"rejected": during.get(stream, {})})

    def discard_episode(self) -> None:
        """Throw the current episode away: no file is left."""
        self._detach_writer().discard()

    # --- snapshots for the UI and the progress line ------------------------------------------
    def stream_status(self) -> dict[str, StreamStatus]:
        return self.monitor.snapshot()

    def driver_health(self) -> dict[str, DriverHealth]:
        with self._health_lock:
            return dict(self._health)

    def missing_stream_reasons(self, streams: list[str], status_wait_s: float = 15.0) -> dict[str, str]:
        """Why each of ``streams`` delivers nothing: its driver's last error, or that nothing arrived. Waits up
        to ``status_wait_s`` for the drivers of those streams to report (a loaded machine starts them late)."""
        deadline = now_ns() + int(status_wait_s * 1e9)
        while True:
            by_stream = {s: h for h in self.driver_health().values() for s in (h.streams or [h.stream])}
            if all(s in by_stream for s in streams) or now_ns() > deadline or self._stop.wait(0.1):
                break
        reasons = {}
        for stream in streams:
            h = by_stream.get(stream)
            clock = self._clock_of_stream.get(stream)
            rejected = self.checker.rejected_by_stream().get(stream)
            if h and h.last_error:
                reasons[stream] = h.last_error
            elif clock is not None and clock.estimator.offset_at(now_ns()) is None:
                reasons[stream] = (f"its driver's clock service at {clock.endpoint} has not answered, so its stamps "
                                   f"cannot be put on this host's clock ({self.unsynchronised_messages} messages held "
                                   f"back); is `capture-app driver --publish` running there?")
            elif rejected:
                reasons[stream] = f"every message was rejected: {rejected} (docs/protocol.md)"
            else:
                reasons[stream] = f"driver {h.name} is {h.state}, no data arrived" if h else \
                    "no data arrived and no driver status"
        return reasons

    @property
    def latest_tick(self) -> SyncedTick | None:
        return self._latest_tick

