"""Accuracy of the head-camera and top-camera calibration procedures on the simulated rig,
over several recordings with different seeds, against the rig's true geometry.

Each run is the whole procedure as the CLI runs it (record on the simulated calibration rig,
detect the board, pair views with tracker poses, solve, save a version into a temporary
store); the figures are the saved result's distance from the truth.

    python bench/calibration_accuracy.py [--runs 4] [--only head|top]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine  # noqa: E402
from capture_app.tools import calibrate as commands  # noqa: E402
from calibration.store import CalibrationStore  # noqa: E402
from capture_app.rig.config import with_changes  # noqa: E402
from capture_app.core.geometry import rotation_angle  # noqa: E402
from drivers.sim.motion import true_rig_geometry  # noqa: E402


def _args(duration: float, max_views: int = 100) -> argparse.Namespace:
    return argparse.Namespace(operator="bench", episode=None, duration=duration, max_views=max_views,
                              board_tracker="left_wrist_tracker", intrinsics=False, board=None)


def _error(result: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(translation error mm, rotation error deg) of a 4x4 transform."""
    return (float(np.linalg.norm(result[:3, 3] - truth[:3, 3]) * 1000),
            float(np.degrees(rotation_angle(result[:3, :3], truth[:3, :3]))))


def run_once(kind: str, seed: int) -> tuple[float, float, dict]:
    """One procedure on a fresh store; returns (mm, deg, residuals)."""
    truth = true_rig_geometry()
    with tempfile.TemporaryDirectory() as tmp:
        store = CalibrationStore(Path(tmp))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if kind == "head":
                config = with_changes(commands.sim_calibration_rig(), {"*": {"seed": seed}})
                commands.cmd_head_camera(_args(20.0), config, store)
            else:
                config = with_changes(commands.sim_calibration_rig(left_wrist_tracker={"mount": "board"}),
                                      {"*": {"board_motion": "handheld", "seed": seed}})
                commands.cmd_top_camera(_args(10.0), config, store)
        current = store.current()
    if kind == "head":
        return (*_error(current.T_headtracker_cam, truth["T_headtracker_cam"]), current.residuals)
    return (*_error(current.T_world_topcam, truth["T_world_topcam"]), current.residuals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--only", choices=("head", "top"))
    args = parser.parse_args()
    print(machine())
    for kind in ("head", "top"):
        if args.only and kind != args.only:
            continue
        errors = []
        for seed in range(args.runs):
            mm, deg, residuals = run_once(kind, seed)
            errors.append((mm, deg))
            key = "head_camera" if kind == "head" else "top_camera"
            print(f"{kind} camera seed {seed}: {mm:.2f} mm, {deg:.3f} deg from the truth; "
                  f"{residuals[key]['views']} views, rejected {residuals['rejected']}", flush=True)
        mm, deg = np.array(errors).T
        print(f"{kind} camera over {args.runs} runs: median {np.median(mm):.2f} mm / {np.median(deg):.3f} deg, "
              f"max {mm.max():.2f} mm / {deg.max():.3f} deg (test limit 2 mm / 0.2 deg)")


if __name__ == "__main__":
    main()
