"""The rig's local drivers, run for the recorder: in child processes publishing over ``ipc://``, or as threads.

Local drivers are those without an ``endpoint`` in the rig config. ``[rig] drivers_in = "process"`` (the
default) runs them in one child process (plus one per driver whose class is ``isolated``) that publishes on
an ``ipc://`` socket in a private temporary directory; ``"threads"`` runs them as threads of the recorder
publishing on the rig's bus endpoint. Drivers elsewhere are reached by the intake, not started here.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable

import zmq

from capture_app.rig.config import RigConfig
from capture_app.rig.run_dirs import make_run_dir
from drivers.host import DriverHostProcess, driver_config_with_seed, driver_jpeg_quality, driver_video_settings
from drivers.registry import create_driver, driver_class

log = logging.getLogger(__name__)


class RigProcesses:
    """Starts and stops the rig's local drivers; ``bus_endpoints`` are where the intake must bind."""

    def __init__(self, config: RigConfig, context: zmq.Context, on_event: Callable[[str, str], None],
                 on_exit: Callable[[list[str]], None]):
        self.config = config
        self._context = context
        self._on_event = on_event  # (level, text) of a driver host: its exits and restarts
        self._on_exit = on_exit  # (driver names) of a process that exited
        self.drivers = []  # in-thread drivers
        self.hosts: list[DriverHostProcess] = []
        self._tmpdir: Path | None = None
        self._ipc_endpoint = ""
        self._video = None
        local = [d.name for d in config.drivers if not d.endpoint]
        self._isolated = [n for n in local if driver_class(config.driver(n).type).isolated]
        self._shared = [n for n in local if n not in self._isolated]

    def prepare(self) -> list[str]:
        """Check what the drivers need (a missing PyAV is a ConfigError before anything starts) and return the
        endpoints this host's drivers will publish on: the rig's bus endpoint, and a private ipc one."""
        self._video = driver_video_settings(self.config)
        if self._isolated or (self._shared and self.config.drivers_in == "process"):
            self._tmpdir = make_run_dir()  # and removes those of killed recorders
            self._ipc_endpoint = f"ipc://{self._tmpdir / 'bus.sock'}"
        return [self.config.bus_endpoint] + ([self._ipc_endpoint] if self._ipc_endpoint else [])

    @property
    def ipc_endpoint(self) -> str:
        """The private ipc endpoint the local driver processes publish on ("" if none; after ``prepare``)."""
        return self._ipc_endpoint

    def start(self) -> "RigProcesses":
        """Start the driver processes and threads (after ``prepare``, once the intake has bound its endpoints)."""
        groups = [[n] for n in self._isolated]
        if self._shared and self.config.drivers_in == "process":
            groups.append(self._shared)
        for group in groups:
            self.hosts.append(DriverHostProcess(self.config, group, self._ipc_endpoint, self._tmpdir,
                                                on_event=self._on_event, on_exit=self._on_exit).start())
        if self.config.drivers_in == "threads":
            for name in self._shared:
                driver = create_driver(driver_config_with_seed(self.config.driver(name), self.config.sim_seed,
                                                               self.config.sim_timing),
                                       self.config.bus_endpoint, context=self._context,
                                       jpeg_quality=driver_jpeg_quality(self.config), video=self._video,
                                       batch_ms=self.config.bus_batch_ms)
                self.drivers.append(driver.start())
        return self

    def stop(self) -> None:
        """Stop every driver thread and process."""
        for driver in self.drivers:
            driver.stop()
        for host in self.hosts:
            host.stop()

    def remove_files(self) -> None:
        """Remove the private ipc directory (after the intake closed its sockets)."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
