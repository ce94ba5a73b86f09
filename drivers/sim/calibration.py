"""The simulated rig's true calibration, the default calibration of a sim rig."""

from __future__ import annotations

from calibration.model import Calibration, CameraIntrinsics
from capture_app.rig.config import RigConfig
from drivers.sim.motion import true_rig_geometry

EGO_INTRINSICS_720P = CameraIntrinsics(1280, 720, 700.0, 700.0, 640.0, 360.0)
TOP_INTRINSICS_480P = CameraIntrinsics(640, 480, 615.0, 615.0, 320.0, 240.0)


def _camera_size(config: RigConfig, stream: str, default: tuple[int, int]) -> tuple[int, int]:
    for d in config.drivers:
        if d.stream == stream:
            return int(d.options.get("width", default[0])), int(d.options.get("height", default[1]))
    return default


def sim_calibration(config: RigConfig) -> Calibration:
    """The calibration equal to the sim's truth for ``config`` (camera sizes, latency offsets, serials)."""
    g = true_rig_geometry()
    ego_w, ego_h = _camera_size(config, "ego_camera", (1280, 720))
    top_w, top_h = _camera_size(config, "top_camera", (640, 480))
    serials = {}
    for d in config.drivers:
        role = {"head_tracker": "head", "left_wrist_tracker": "left_wrist", "right_wrist_tracker": "right_wrist"}.get(d.stream)
        if role and d.serial:
            serials[role] = d.serial
    return Calibration(
        T_headtracker_cam=g["T_headtracker_cam"],
        T_wristtracker_wrist={"left": g["T_wristtracker_wrist_left"], "right": g["T_wristtracker_wrist_right"]},
        ego_intrinsics=EGO_INTRINSICS_720P.scaled(ego_w, ego_h),
        top_intrinsics=TOP_INTRINSICS_480P.scaled(top_w, top_h),
        T_world_topcam=g["T_world_topcam"],
        latency_offsets_ms={d.stream: float(d.options.get("latency_ms", 0.0)) for d in config.drivers
                            if d.type.startswith("sim_") and d.stream != "ground_truth"},
        tracker_serials=serials,
        calibration_id="sim-truth",
        method="simulated rig ground truth",
    )
