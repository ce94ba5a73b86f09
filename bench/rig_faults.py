"""Drift alarms against injected rig faults, on generated simulated data run through the recorder's own drift watch
(capture_app/recorder/drift_watch.py) faster than real time (drivers/sim/offline.py: the same sim devices and
faults, exact stamps, no bus).

Reports, in one run:
- a 2 deg ego camera mount slip and a 3 deg wrist slip at a random instant: time to alarm (from the slip to the
  drift watch raising it, in data time, including its 0.5 s processing cadence) p50/p95/max, and the size error;
- a 20 ms latency change of the ego camera and of a glove: the estimated lag after it;
- false alarms over ``--minutes`` of ordinary simulated work (no fault).
- swapped gloves and swapped wrist-tracker roles: whether the rig check's lines (capture_app/core/rig_checks.py,
  as `capture-app check` runs them) catch them, on the check's scripted motions.

    python bench/rig_faults.py [--trials 5] [--minutes 5] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine  # noqa: E402
from capture_app.recorder.drift_watch import DriftWatch  # noqa: E402
from capture_app.rig.config import load_config  # noqa: E402
from drivers.sim.calibration import sim_calibration  # noqa: E402
from drivers.sim.offline import samples  # noqa: E402

CADENCE_S = 0.5  # the drift watch's thread wakes this often


def run(t0: float, t1: float, options: dict, seed: int, streams=None) -> DriftWatch:
    """The drift watch fed [t0, t1) of generated data, processed every CADENCE_S of data time (no offsets: the
    generated stamps are exact)."""
    calibration = sim_calibration(load_config())
    calibration = dataclasses.replace(calibration, latency_offsets_ms={})
    watch = DriftWatch(calibration)
    next_s = t0 + CADENCE_S
    for sample in samples(t0, t1, options, seed=seed, streams=streams):
        if sample.t_capture_ns / 1e9 >= next_s:
            watch.process()
            for alarm in watch.alarms:
                alarm.setdefault("seen_s", next_s)  # when the cadence would have raised it
            next_s += CADENCE_S
        watch.offer(sample)
    watch.process()
    for alarm in watch.alarms:
        alarm.setdefault("seen_s", t1)
    return watch


def slip_trials(kind: str, trials: int) -> dict:
    tracker, size, streams = (("head_tracker", 2.0, None) if kind == "camera" else
                              ("left_wrist_tracker", 3.0, ("left_glove", "left_wrist_tracker")))
    delays, errors, missed = [], [], 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        at = 8.0 + rng.uniform(0, 4)
        axis = rng.normal(size=3)
        rotvec = (axis / np.linalg.norm(axis) * size).tolist()
        watch = run(0.0, at + 8.0, {tracker: {"mount_slip_deg": rotvec, "mount_slip_at_s": at}}, seed, streams)
        slips = [a for a in watch.alarms if a["kind"] == "mount_slip"]
        if not slips:
            missed += 1
            continue
        first = slips[0]
        delays.append(first["seen_s"] - at)
        errors.append(float(np.linalg.norm(np.array(first["rotvec_deg"]) - rotvec)))
    return {"slip_deg": size, "trials": trials, "missed": missed,
            "time_to_alarm_s": {"p50": float(np.percentile(delays, 50)), "p95": float(np.percentile(delays, 95)),
                                "max": float(np.max(delays))} if delays else None,
            "size_error_deg": {"max": float(np.max(errors)), "mean": float(np.mean(errors))} if errors else None}


def latency_trials(stream: str, trials: int) -> dict:
    estimates = []
    for seed in range(trials):
        watch = run(0.0, 34.0, {stream: {"latency_change_ms": 20.0, "latency_change_at_s": 10.0}}, seed,
                    None if stream == "ego_camera" else ("left_glove", "left_wrist_tracker", "head_tracker"))
        history = [e["lag_ms"] for e in watch.latency.get(stream, []) if e["t_ns"] / 1e9 >= 10.0 + 12.0]
        estimates.append(history[-1] if history else float("nan"))
    return {"stream": stream, "change_ms": 20.0, "estimates_ms": [round(e, 2) for e in estimates],
            "max_error_ms": float(np.nanmax(np.abs(np.array(estimates) - 20.0)))}


def false_alarms(minutes: float) -> dict:
    watch = run(0.0, 60.0 * minutes, {}, seed=7)
    return {"minutes": minutes, "alarms": len(watch.alarms), "texts": [a["text"] for a in watch.alarms]}


def swaps() -> dict:
    """The rig check's tracker-roles and glove-side lines on the scripted check motions, with each swap."""
    from capture_app.core import rig_checks
    from capture_app.core.geometry import pose_to_transform, quat_to_matrix
    from capture_app.core.rotation_series import angular_speed
    from capture_app.rig.config import DriverConfig
    from drivers.registry import create_driver

    grid = np.arange(11.3, 18.7, 0.02)

    def made(stream, kind, t, **options):
        config = DriverConfig(stream, kind, stream, 100, options={"head_motion": "check", "hand_motion": "check", **options})
        return create_driver(config, "inproc://bench").make_samples(t, np.zeros(len(t), bool))

    def lines(glove_opts, tracker_opts):
        gloves = {h: angular_speed(grid, quat_to_matrix(np.array([x.arrays["wrist_quat"] for x in made(
            f"{h}_glove", "sim_glove", grid, **glove_opts.get(h, {}))])))[1] for h in ("left", "right")}
        trackers = {r: angular_speed(grid, pose_to_transform(np.array([x.arrays["pose"] for x in made(
            f"{r}_tracker", "sim_tracker", grid, **tracker_opts.get(r, {}))]))[:, :3, :3])[1]
                    for r in ("head", "left_wrist", "right_wrist")}
        keypoints = np.array([x.arrays["keypoints"] for x in made("left_glove", "sim_glove", grid[::10],
                                                                  **glove_opts.get("left", {}))])
        return {"tracker roles": bool(rig_checks.roles(gloves, trackers).passed),
                "glove left side": bool(rig_checks.glove_handedness("left", keypoints).passed)}

    return {"correct rig (lines pass)": lines({}, {}),
            "gloves swapped (lines pass)": lines({"left": {"hand": "right"}, "right": {"hand": "left"}}, {}),
            "wrist trackers swapped (lines pass)": lines({}, {"left_wrist": {"worn_on": "right_wrist"},
                                                              "right_wrist": {"worn_on": "left_wrist"}})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    result = {"machine": machine(),
              "camera_mount_slip": slip_trials("camera", args.trials),
              "wrist_slip": slip_trials("wrist", args.trials),
              "latency_ego_camera": latency_trials("ego_camera", max(1, args.trials // 2)),
              "latency_left_glove": latency_trials("left_glove", max(1, args.trials // 2)),
              "false_alarms": false_alarms(args.minutes),
              "swaps": swaps()}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
