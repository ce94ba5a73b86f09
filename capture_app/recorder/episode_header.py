"""What an episode file says about itself: its metadata and the header a new file starts with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import h5py

from capture_app import __version__
from capture_app.core.clock import now_ns, wall_clock_iso
from capture_app.episode.format import FORMAT_NAME, FORMAT_VERSION
from capture_app.recorder.columns import set_attrs


@dataclass
class EpisodeMetadata:
    """What the episode file says about itself (root attributes)."""

    episode_name: str
    instruction: str = ""
    task: str = ""
    operator: str = ""
    rig_name: str = ""
    rig_config_text: str = ""
    calibration_json: str = "{}"
    calibration_id: str = ""
    device_serials: dict[str, str] = field(default_factory=dict)
    expected_rates_hz: dict[str, float] = field(default_factory=dict)
    simulated: bool = False
    sim_seed: int = 0



def write_header(file: h5py.File, m: EpisodeMetadata) -> None:
    """The root attributes of a new episode file (status "recording") and its /calibration (docs/episode-format.md)."""
    a = file.attrs
    a["format"] = FORMAT_NAME
    a["format_version"] = FORMAT_VERSION
    a["status"] = "recording"
    a["software_version"] = __version__
    a["created_wall_time"] = wall_clock_iso()
    a["start_monotonic_ns"] = now_ns()
    set_attrs(a, {"episode_name": m.episode_name, "instruction": m.instruction, "task": m.task,  # made storable
                   "operator": m.operator, "rig_name": m.rig_name, "rig_config": m.rig_config_text})
    a["device_serials"] = json.dumps(m.device_serials)
    a["simulated"] = m.simulated
    a["sim_seed"] = m.sim_seed
    a["expected_rates_hz"] = json.dumps(m.expected_rates_hz)
    calibration = file.create_group("calibration")
    calibration.attrs["json"] = m.calibration_json
    calibration.attrs["calibration_id"] = m.calibration_id
