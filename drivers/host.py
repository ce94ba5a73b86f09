"""Runs drivers in a process of their own, publishing on the bus.

Used by ``capture-app driver`` (one driver, or all of a rig's local drivers) and by
the session, which starts the simulated rig's drivers here so that their Python
work never competes for the GIL with the synchronizer. The host exits when its
parent process dies, so a killed app leaves no orphans.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import zmq

from capture_app.rig.child_process import child_env, cli_command
from capture_app.rig.config import RigConfig
from capture_app.core.errors import CaptureError, ConfigError
from capture_app.episode.image_codec import EncodeError
from capture_app.episode.video_codec import VideoEncoder, VideoSettings, require_av
from drivers.registry import create_driver

log = logging.getLogger(__name__)

SIM_NICENESS = 2


EXACT_TIMING = {"stamp": "exact", "arrival_jitter_ms": 0.0, "burst_ms": 0.0, "duplicate_probability": 0.0,
                "frame_loss_probability": 0.0, "device_clock_resolution_ms": 0.0}


def driver_config_with_seed(driver, seed: int, timing: str = "realistic"):
    """Sim drivers take the rig's [sim] seed unless their options name one; with [sim] timing = "exact"
    their stamps are perfect (no arrival jitter, bursts or repeated frames)."""
    if not driver.type.startswith("sim_"):
        return driver
    import dataclasses
    options = dict(driver.options)
    options.setdefault("seed", seed)
    if timing == "exact":
        options.update(EXACT_TIMING)
    return dataclasses.replace(driver, options=options)


def driver_jpeg_quality(config: RigConfig) -> int | None:
    """The JPEG quality drivers encode their colour frames with, or None when the writer encodes them."""
    return config.writer.jpeg_quality if config.writer.encode_in == "driver" else None


def driver_video_settings(config: RigConfig) -> dict[str, VideoSettings]:
    """Per camera stream stored as video ([writer] video_streams): how its driver encodes it. Raises
    ConfigError, saying how to install it, when PyAV is missing."""
    writer = config.writer
    if not writer.video_streams:
        return {}
    try:
        require_av()
    except EncodeError as exc:
        raise ConfigError(f"{config.source_path}: [writer] video_streams = {list(writer.video_streams)}: {exc}") from None
    rates = {s: d.rate_hz for d in config.drivers for s in d.streams}
    settings = {s: VideoSettings(crf=writer.video_crf, preset=writer.video_preset,
                                 keyframe_interval=writer.video_keyframe_interval, rate_hz=float(rates.get(s, 30.0)),
                                 encoder=writer.video_encoder)
                for s in writer.video_streams}
    if writer.video_encoder != "auto":  # one asked for by name must open now, not fail on the first frame
        try:
            VideoEncoder(64, 64, next(iter(settings.values())))
        except EncodeError as exc:
            raise ConfigError(f"{config.source_path}: [writer] video_encoder = {writer.video_encoder!r}: {exc}") from None
    return settings


def _stop_when_parent_dies(pipe_fd: int, stop: threading.Event) -> None:
    """Set ``stop`` when the parent's end of the pipe ``pipe_fd`` closes (the parent exited or was SIGKILLed):
    the kernel closes it at once, so the drivers stop without waiting for a poll of the parent."""
    def watch():
        try:
            while os.read(pipe_fd, 64):
                pass
        except OSError:
            pass
        log.warning("the recorder that started this driver process is gone; stopping drivers")
        stop.set()
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_drivers(config: RigConfig, names: list[str], endpoint: str, *, bind: bool, parent_pid: int | None = None,
                stop: threading.Event | None = None, duration_s: float | None = None, keys_dir: str | None = None,
                parent_pipe: int | None = None) -> int:
    """Run the named drivers until SIGINT/SIGTERM, ``stop``, ``duration_s`` or the parent's death.

    ``bind`` binds ``endpoint`` (a driver others connect to) instead of connecting to the app.
    With ``bind`` only one driver can run (one socket per endpoint). Returns an exit status.
    """
    if bind and len(names) != 1:
        raise ConfigError(f"--publish binds {endpoint}: run one driver per endpoint (got {names})")
    from capture_app.bus.endpoint_trust import require_private_ipc
    from capture_app.bus.remote import ClockServer, clock_endpoint, load_keys, start_authenticator
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    if parent_pipe is not None:
        _stop_when_parent_dies(parent_pipe, stop)
    if bind and keys_dir is None and endpoint.startswith("tcp://"):
        raise ConfigError(f"{endpoint}: tcp:// reaches every local user, loopback too: give --keys DIR (from "
                          f"`capture-app keys`) so that only the app can connect, or publish on ipc:// in a "
                          f"directory only you can use (docs/protocol.md, Trust model)")
    require_private_ipc(endpoint, f"driver endpoint of {', '.join(names)}")
    context = zmq.Context()
    keys = auth = clock = None
    if bind and keys_dir is not None:
        keys = load_keys(f"{keys_dir}/driver.key_secret", allowed_client_files=(f"{keys_dir}/app.key",))
        auth = start_authenticator(context, keys.allowed_clients)  # the app's key only, never a monitor's
    if bind:
        try:
            clock = ClockServer(clock_endpoint(endpoint), context, keys)
        except zmq.ZMQError as exc:
            if auth is not None:
                auth.stop()
            context.term()
            raise CaptureError(f"cannot bind the clock service at {clock_endpoint(endpoint)} (beside {endpoint}): "
                               f"{exc}; is another driver using it? Choose another endpoint") from None
    drivers = [create_driver(driver_config_with_seed(config.driver(n), config.sim_seed, config.sim_timing), endpoint, bind=bind,
                             context=context, curve=keys, jpeg_quality=driver_jpeg_quality(config),
                             video=driver_video_settings(config), batch_ms=config.bus_batch_ms) for n in names]
    for d in drivers:
        d.start()
    waited = 0.0
    try:
        while not stop.wait(0.25):
            waited += 0.25
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("parent process %d is gone; stopping drivers", parent_pid)
                break
            if duration_s is not None and waited >= duration_s:
                break
            dead = [d for d in drivers if not d.is_alive()]
            if dead or (parent_pid is None and all(d.health().state == "failed" for d in drivers)):
                # by hand: nothing will work, say so; under the app, a failed driver keeps reporting its status
                for d in dead or drivers:
                    print(f"error: driver {d.config.name}: {d.health().last_error or 'stopped'}", file=sys.stderr)
                return 3
    finally:
        for d in drivers:
            d.stop()
        if clock is not None:
            clock.close()
        if auth is not None:
            auth.stop()
        context.term()
    return 0


class DriverHostProcess:
    """A child process running some of a rig's drivers, restarted with back-off if it dies.

    ``on_event(level, text)`` reports starts, exits and restarts (from a watchdog thread); ``on_exit(names)``
    says the process of these drivers is gone (before any restart), so their senders are too.
    """

    RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)

    def __init__(self, config: RigConfig, names: list[str], endpoint: str, workdir, on_event=None, on_exit=None):
        self.config = config
        self.names = names
        self.endpoint = endpoint
        self.config_path = workdir / "rig.toml"  # the same text for every host of a session
        self.config_path.write_text(config.source_text)
        self.on_event = on_event or (lambda level, text: None)
        self.on_exit = on_exit or (lambda names: None)
        self.restarts = 0
        self._process = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._pipe_w: int | None = None

    def _spawn(self) -> None:
        import subprocess
        if self._pipe_w is not None:  # a restart: the old child's pipe
            os.close(self._pipe_w)
        # the child watches the read end: it sees end-of-file the moment this process is gone, however killed
        pipe_r, self._pipe_w = os.pipe()
        command = cli_command("driver", *self.names, "--config", str(self.config_path),
                              "--connect", self.endpoint, "--parent-pid", str(os.getpid()),
                              "--parent-pipe", str(pipe_r))
        if all(self.config.driver(n).type.startswith("sim_") for n in self.names):
            # Simulated devices stamp samples from their schedule, not from when their thread runs,
            # so they can yield the CPU to the app's synchronizer without losing any accuracy.
            command += ["--nice", str(SIM_NICENESS)]
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=child_env(), pass_fds=(pipe_r,))
        finally:
            os.close(pipe_r)

    def start(self) -> "DriverHostProcess":
        self._spawn()
        self._watchdog = threading.Thread(target=self._watch, name="driver-host-watchdog", daemon=True)
        self._watchdog.start()
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _watch(self) -> None:
        failures = 0
        while not self._stop.wait(0.2):
            code = self._process.poll()
            if code is None:
                continue
            if self._stop.is_set():
                return
            self.on_exit(list(self.names))
            delay = self.RESTART_BACKOFF_S[min(failures, len(self.RESTART_BACKOFF_S) - 1)]
            self.on_event("error", f"driver process for {', '.join(self.names)} exited with status {code}; "
                                   f"restarting in {delay:.1f} s")
            if self._stop.wait(delay):
                return
            failures += 1
            self.restarts += 1
            self._spawn()
            self.on_event("info", f"driver process restarted (pid {self._process.pid})")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(2)
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except Exception:
                self._process.kill()
                self._process.wait()
        if self._pipe_w is not None:
            os.close(self._pipe_w)
            self._pipe_w = None
