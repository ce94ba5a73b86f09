"""Recording for the calibration procedures: the simulated calibration rig, a calibration episode with
live guidance, and a new calibration version saved to the store (``capture-app calibrate``)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from calibration.board import BoardConfig, BoardDetector
from calibration.handeye import CalibrationFailed, rotation_spread
from calibration.model import Calibration, CameraIntrinsics
from calibration.store import CalibrationStore, changes, describe, new_version_id, now_iso
from capture_app.rig.config import RigConfig, load_config, with_changes


TRACKER_NOISE = {"position_noise_mm": 0.3, "rotation_noise_deg": 0.05}
SIM_TRACKERS = ("head_tracker", "left_wrist_tracker", "right_wrist_tracker")


def sim_calibration_rig(board_on: tuple[str, ...] = ("ego_camera", "top_camera"), **tracker_options) -> RigConfig:
    """The simulated rig set up for calibration: board on the table, head surveying it, noisy trackers."""
    options = {"*": {"head_motion": "survey"}}
    options.update({camera: {"board": True} for camera in board_on})
    options.update({t: {**TRACKER_NOISE, **tracker_options.get(t, {})} for t in SIM_TRACKERS})
    return with_changes(load_config(), options)


def base_calibration(store: CalibrationStore, config: RigConfig) -> Calibration:
    """The calibration a new version starts from: the store's current, else the rig's default."""
    current = store.current()
    if current is not None:
        return current
    from capture_app.recorder.session import default_calibration
    return default_calibration(config)


def record_calibration_episode(config: RigConfig, seconds: float, out_dir: Path, guide=None) -> Path:
    """Record ``seconds`` of the rig; ``guide(session)`` is called about once a second to print guidance.
    Cameras are recorded as JPEG even where the rig stores them as video ([writer] video_streams): the live
    guide detects the board in every frame it is shown and the corners are found in the sharper image."""
    from capture_app.recorder.session import CaptureSession
    if config.writer.video_streams:
        config = with_changes(config, writer=dataclasses.replace(config.writer, video_streams=()))
    with CaptureSession(config) as session:
        missing = session.wait_for_streams(8)
        if missing:
            raise CalibrationFailed(f"streams not delivering: {session.missing_stream_reasons(missing)}")
        session.start_episode(out_dir, name=f"calibration-{new_version_id('rec')}")
        start_ns = session.episode_started_ns
        # Record `seconds` of data, not of wall time: a machine that falls behind delivers the same motion later
        end = time.monotonic() + seconds
        give_up = time.monotonic() + 3 * seconds
        while time.monotonic() < end or (time.monotonic() < give_up and not covered(session, start_ns, seconds)):
            time.sleep(min(1.0, max(0.05, end - time.monotonic())))
            if guide is not None:
                guide(session)
        return session.stop_episode()


def covered(session, start_ns: int, seconds: float) -> bool:
    """Whether every stream has delivered samples captured ``seconds`` after ``start_ns``."""
    status = session.stream_status()
    return all(st.last_capture_ns is not None and st.last_capture_ns - start_ns >= seconds * 1e9
               for st in status.values())


class HeadCameraGuide:
    """Live guidance while the engineer moves the head around the board: views seen, rotation coverage."""

    def __init__(self, board: BoardConfig, intrinsics: CameraIntrinsics, out=None):
        self.detector = BoardDetector(board)
        self.intrinsics = intrinsics
        self.rotations: list[np.ndarray] = []
        self.out = out if out is not None else sys.stderr  # looked up now: a redirected stderr is honoured

    def __call__(self, session) -> None:
        from capture_app.monitor.overlay import image_from
        tick = session.latest_tick
        if tick is None or tick.T_world_headtracker is None or tick.frames.get("ego_camera") is None:
            return
        image = image_from(tick.frames["ego_camera"])
        k = self.intrinsics if image.shape[1] == self.intrinsics.width else self.intrinsics.scaled(image.shape[1], image.shape[0])
        if self.detector.detect(image, k) is not None:
            self.rotations.append(tick.T_world_headtracker[:3, :3])
        spread = rotation_spread(self.rotations) if len(self.rotations) >= 3 else np.zeros(3)
        hint = "" if spread[1] > 15 else " - turn, nod and tilt the head; come closer and go farther"
        print(f"board seen in {len(self.rotations)} checks; rotation coverage {spread[0]:.0f}/{spread[1]:.0f}/"
              f"{spread[2]:.0f} deg{hint}", file=self.out, flush=True)


def procedure_episode(args, config: RigConfig, store: CalibrationStore, guide=None) -> Path:
    if args.episode:
        return Path(args.episode)
    out = store.directory / "episodes"
    out.mkdir(parents=True, exist_ok=True)
    print(f"recording {args.duration:.0f} s of calibration data...", file=sys.stderr)
    return record_calibration_episode(config, args.duration, out, guide)


def new_version(old: Calibration, kind: str, method: str, args, residuals: dict | None = None, **fields) -> Calibration:
    """``old`` with the solved ``fields`` replaced, stamped as a new version of ``kind``."""
    return dataclasses.replace(old, calibration_id=new_version_id(kind), created=now_iso(), method=method,
                               operator=args.operator, residuals=residuals or {}, **fields)


def save_version(store: CalibrationStore, old: Calibration, new: Calibration) -> int:
    path = store.save(new)
    print(describe(new))
    print("changes: " + "; ".join(changes(old, new)))
    print(f"saved {path} (now current: {store.current_path})")
    return 0
