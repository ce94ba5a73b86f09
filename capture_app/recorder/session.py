"""A capture session: the recorder's parts composed, and the one object the CLI, the control server and the
tools hold.

The data path it wires, each part in its own module:
``rig_processes`` (the local drivers) -> bus -> ``intake`` (receive, check, map clocks, account) ->
``synchronizer`` (20 Hz ticks) -> ``episodes`` (the writer of the episode recording, if any); ``stream_watch``
logs health changes into the episode. This class owns no thread and no message: it starts and stops the parts
in order and answers the questions the UI and the progress line ask.
"""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import zmq

from calibration.model import Calibration, load_calibration
from capture_app.bus.driver_status import DriverHealth
from capture_app.core.clock import now_ns
from capture_app.core.errors import CalibrationError, CaptureError
from capture_app.recorder.drift_watch import DriftWatch
from capture_app.recorder.episodes import Episodes
from capture_app.recorder.health import StreamMonitor, StreamStatus
from capture_app.recorder.intake import Intake
from capture_app.recorder.rig_processes import RigProcesses
from capture_app.recorder.stream_watch import StreamWatch
from capture_app.recorder.synchronizer import SyncedTick, Synchronizer
from capture_app.recorder.writer import EpisodeWriter
from capture_app.rig.config import RigConfig, sim_epoch_ns, with_changes
from capture_app.rig.priority import enable_recorder_threads, raise_priority

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_S = 0.0005


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
        from capture_app.episode.file import open_episode
        try:
            with open_episode(replays[0]) as f:
                return calibration_from_json(str(f["calibration"].attrs["json"]), f"{replays[0]}:/calibration")
        except (OSError, KeyError, CaptureError) as exc:
            raise CalibrationError(f"cannot read the calibration of replayed episode {replays[0]}: {exc}") from None
    raise CalibrationError(f"{config.source_path}: no [calibration] path for this real rig; set it to the file "
                           f"written by `capture-app calibrate`")


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
        self.synchronizer = Synchronizer(config.sync, self.calibration, on_tick=self._on_tick, rates_hz=rates)
        self.episodes = Episodes(config, self.calibration, self.synchronizer)
        self.intake = Intake(config, self.synchronizer, self.monitor, self._context, self.episodes.current)
        self.episodes.intake = self.intake
        self.rig = RigProcesses(config, self._context, on_event=self._host_event, on_exit=self.intake.exited.append)
        self._latest_tick: SyncedTick | None = None
        self._stream_watch = StreamWatch(self.monitor, self.episodes.current, lambda: self._latest_tick)
        # live drift alarms on a thread of their own, from the samples the intake accepted (drift_watch.py)
        drift = config.drift  # [drift]: thresholds, or off
        self.drift = DriftWatch(self.calibration, on_alarm=self._drift_alarm, threshold_deg=drift.mount_slip_deg,
                                visual_rate_hz=drift.visual_rate_hz, latency_threshold_ms=drift.latency_change_ms)
        if drift.enabled:
            self.intake.add_sample_listener(self.drift.streams, self.drift.offer, blocks=True)
            self.episodes.drift_summary = self.drift.summary
        self.check_prompt: dict | None = None  # the rig check's current prompt (rig_check.py), for the state feed
        # the hands-free inputs' state (capture_app.handsfree.runner sets it while they run), for the state feed
        self.handsfree_status = None

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> "CaptureSession":
        """Bind the bus, start the intake, the synchronizer and the rig's local drivers."""
        self.intake.check_endpoints()  # before anything starts: another local user could bind such an endpoint
        raise_priority()
        enable_recorder_threads(max(0, self.config.sync.realtime_priority - 5))  # below the ticks, above the GUI
        self.intake.start(self.rig.prepare())
        self.rig.start()
        # Everything allocated so far lives as long as the session: keep it out of the cyclic
        # GC's full collections, which otherwise stall every thread (18 ms measured) and make ticks late.
        gc.freeze()
        # A thread waiting for the GIL gets it within this interval (Python's default is 5 ms): the
        # synchronizer waking for its tick must not wait behind the dispatcher's or the writer's burst.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.synchronizer.start()
        self._stream_watch.start()
        if self.config.drift.enabled:
            self.drift.start()
        return self

    def _drift_alarm(self, alarm: dict) -> None:
        """A mount slip or latency drift (drift_watch thread): into the recording episode's /events."""
        self.episodes.log_event("warning", "drift", alarm["text"])

    def _host_event(self, level: str, text: str) -> None:
        log.log(logging.ERROR if level == "error" else logging.INFO, "%s", text)
        self.episodes.log_event(level, "driver-host", text)

    def _on_tick(self, tick: SyncedTick) -> None:
        self._latest_tick = tick
        self.episodes.on_tick(tick)

    def close(self) -> None:
        """Finish any episode, stop drivers and threads, release the bus."""
        if self.recording:
            try:
                self.stop_episode()
            except CaptureError as exc:
                log.error("%s", exc)
        self.episodes.close()
        self._stream_watch.stop()
        self.drift.stop()
        self.rig.stop()
        self.synchronizer.stop()
        self.intake.stop()
        self._context.term()
        self.rig.remove_files()

    def __enter__(self) -> "CaptureSession":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_for_streams(self, timeout_s: float = 5.0) -> list[str]:
        """Wait until every configured stream delivered a sample; return the ones that did not."""
        deadline = now_ns() + int(timeout_s * 1e9)
        while True:
            waiting = [s for s, st in self.monitor.snapshot().items() if st.state == "waiting"]
            if not waiting or now_ns() > deadline or self.intake.wait(0.05):
                break
        if not waiting:  # let rates settle (they count the last second) for up to 1.5 s
            settle = now_ns() + int(1.5e9)
            while now_ns() < settle and any(st.state != "ok" for st in self.monitor.snapshot().values()):
                self.intake.wait(0.05)
        return waiting

    # --- episodes (``Episodes``) ------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.episodes.current() is not None

    @property
    def writer(self) -> EpisodeWriter | None:
        return self.episodes.current()

    @property
    def episode_started_ns(self) -> int:
        return self.episodes.started_ns

    @property
    def last_quality_report(self) -> dict | None:
        return self.episodes.last_quality_report

    def start_episode(self, out_dir: str | Path, *, name: str | None = None, instruction: str = "",
                      task: str = "", operator: str = "") -> EpisodeWriter:
        """Open a new episode file and start writing every sample and tick into it."""
        return self.episodes.start(out_dir, name=name, instruction=instruction, task=task, operator=operator)

    def stop_episode(self, attrs: dict | None = None, finalize: bool = True) -> Path:
        """Finish the episode and return its path (``Episodes.stop``)."""
        return self.episodes.stop(attrs, finalize)

    def discard_episode(self) -> None:
        """Throw the current episode away: no file is left."""
        self.episodes.discard()

    # --- snapshots for the UI and the progress line ------------------------------------------
    @property
    def clock_clients(self) -> dict:
        return self.intake.clock_clients

    @property
    def unexpected_messages(self) -> int:
        return self.intake.unexpected_messages

    @property
    def non_finite_messages(self) -> int:
        return self.intake.non_finite_messages

    def loss_counts(self) -> dict:
        """What the bus and the synchronizer lost or refused so far (besides per-stream rejections):
        malformed and unexpected messages, non-finite values, remote messages before clock sync, and this
        take's invalid synced rows per hand part (after the part's first valid row; those before it apart)."""
        return {**self.intake.loss_counts(), "invalid_rows": dict(self.episodes.invalid_rows),
                "invalid_rows_at_start": dict(self.episodes.invalid_rows_at_start)}

    def rejected_counts(self) -> dict[str, dict[str, int]]:
        """Messages refused so far, per stream and reason."""
        return self.intake.checker.rejected_by_stream()

    def stream_status(self) -> dict[str, StreamStatus]:
        return self.monitor.snapshot()

    def driver_health(self) -> dict[str, DriverHealth]:
        return self.intake.driver_health()

    def missing_stream_reasons(self, streams: list[str], status_wait_s: float = 15.0) -> dict[str, str]:
        """Why each of ``streams`` delivers nothing: its driver's last error, or that nothing arrived. Waits up
        to ``status_wait_s`` for the drivers of those streams to report (a loaded machine starts them late)."""
        deadline = now_ns() + int(status_wait_s * 1e9)
        while True:
            by_stream = {s: h for h in self.driver_health().values() for s in (h.streams or [h.stream])}
            if all(s in by_stream for s in streams) or now_ns() > deadline or self.intake.wait(0.1):
                break
        reasons = {}
        for stream in streams:
            h = by_stream.get(stream)
            unsynchronised = self.intake.clock_unsynchronised_reason(stream)
            rejected = self.rejected_counts().get(stream)
            if h and h.last_error:
                reasons[stream] = h.last_error
            elif unsynchronised:
                reasons[stream] = unsynchronised
            elif rejected:
                reasons[stream] = f"every message was rejected: {rejected} (docs/protocol.md)"
            else:
                reasons[stream] = f"driver {h.name} is {h.state}, no data arrived" if h else \
                    "no data arrived and no driver status"
        return reasons

    @property
    def latest_tick(self) -> SyncedTick | None:
        return self._latest_tick
