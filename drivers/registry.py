"""Maps a rig config's driver ``type`` string to its driver class.

Real-SDK modules are imported only when their type is used, so a machine without
an SDK can still run the simulated rig. Test doubles register with ``register``.
"""

from __future__ import annotations

import importlib

from capture_app.rig.config import DriverConfig
from capture_app.core.errors import ConfigError

# type -> "module:Class", imported on first use
_BUILTIN: dict[str, str] = {
    "sim_glove": "drivers.sim.devices:SimGlove",
    "sim_tracker": "drivers.sim.devices:SimTracker",
    "sim_ego_camera": "drivers.sim.devices:SimEgoCamera",
    "sim_top_camera": "drivers.sim.devices:SimTopCamera",
    "sim_ground_truth": "drivers.sim.devices:SimGroundTruth",
    "replay": "drivers.replay:ReplayDriver",
    "realsense": "drivers.realsense:RealSenseCamera",
    "openvr_tracker": "drivers.vive:OpenVRTracker",
    "zed": "drivers.zed:ZedCamera",
    "manus": "drivers.manus.driver:ManusGloves",
}
_REGISTERED: dict[str, type] = {}


def register(type_name: str):
    """Class decorator (or call) adding a driver class under ``type_name``."""
    def add(cls):
        _REGISTERED[type_name] = cls
        return cls
    return add


def known_types() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def driver_class(type_name: str) -> type:
    """The class for ``type_name``; ConfigError listing the known types otherwise."""
    if type_name in _REGISTERED:
        return _REGISTERED[type_name]
    if type_name not in _BUILTIN:
        raise ConfigError(f"unknown driver type {type_name!r}; known types: {', '.join(known_types())}")
    module_name, class_name = _BUILTIN[type_name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    _REGISTERED[type_name] = cls
    return cls


def create_driver(config: DriverConfig, bus_endpoint: str, **kwargs):
    """Instantiate the driver for ``config`` publishing to ``bus_endpoint``."""
    return driver_class(config.type)(config, bus_endpoint, **kwargs)
