"""The rig check's top camera latency (``latency top_camera``: the hands sliding on the table in its depth against
the wrist trackers, capture_app/core/top_motion.py) against an injected latency change of the simulated top camera.

Two ways, both printing the estimate against the injected change (0 and +40 ms by default):

- offline (default): the sim's own devices render the check's ``hands_on_table`` step (25-30 s) faster than real
  time (exact stamps, no bus), at the default rig's 640 x 480 and the tests' 160 x 120, over ``--seeds`` seeds
  (the seed moves the fingers' wiggle, the main error of the sim); analysed as ``capture-app check`` does;
- ``--live``: ``capture-app check`` itself on the embedded simulated rig (realistic timing: the top camera
  stamped by its device clock mapped onto the host, arrival jitter, bursts, lost and repeated frames), one ~45 s
  check per change; the verdict's line.

    python bench/top_latency.py [--changes 0 40] [--seeds 5] [--live [--timing exact]] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine  # noqa: E402
from capture_app.core import top_motion  # noqa: E402
from capture_app.core.geometry import pose_to_transform  # noqa: E402
from capture_app.rig.config import DriverConfig, load_config, with_changes  # noqa: E402
from drivers.registry import create_driver  # noqa: E402
from drivers.sim.calibration import TOP_INTRINSICS_480P  # noqa: E402
from drivers.sim.faults import latency_ns  # noqa: E402
from drivers.sim.motion import true_rig_geometry  # noqa: E402

SCRIPT = {"head_motion": "check", "hand_motion": "check"}
WINDOW = (25.5, 29.5)  # the hands_on_table step without its first and last 0.5 s, as the check analyses it


def offline(change_ms: float, seed: int, size: tuple[int, int]) -> dict:
    """The estimate from the sim's rendered depth (30 Hz, ±1 ms jitter) and wrist trackers (250 Hz)."""
    w, h = size
    rng = np.random.default_rng([seed, 7])
    top = create_driver(DriverConfig("top_camera", "sim_top_camera", "top_camera", 30, options={
        **SCRIPT, "seed": seed, "width": w, "height": h, "latency_change_ms": change_ms}), "inproc://bench")
    t_true = np.arange(25 * 30, 30 * 30) / 30 + rng.uniform(-1e-3, 1e-3, 150)
    frames = top.make_samples(t_true, np.zeros(len(t_true), bool))
    stamps = t_true + latency_ns(top.options, t_true) / 1e9
    k = TOP_INTRINSICS_480P.scaled(w, h)
    geometry = true_rig_geometry()
    view = top_motion.TopView(k.fx, k.fy, k.cx, k.cy, w, h, geometry["T_world_topcam"])
    t_pred, predicted = np.arange(24.5 * 250, 30.5 * 250) / 250, []
    for hand in ("left", "right"):
        tracker = create_driver(DriverConfig(f"{hand}_wrist_tracker", "sim_tracker", f"{hand}_wrist_tracker", 250,
                                             options={**SCRIPT, "seed": seed}), "inproc://bench")
        poses = np.array([s.arrays["pose"] for s in tracker.make_samples(t_pred, np.zeros(len(t_pred), bool))])
        predicted.append(view.project(top_motion.wrist_points(pose_to_transform(poses),
                                                              geometry[f"T_wristtracker_wrist_{hand}"])))
    started = time.perf_counter()
    rows = np.flatnonzero((stamps >= WINDOW[0]) & (stamps <= WINDOW[1]))
    depth = [frames[i].arrays["depth"] * 0.001 for i in rows]
    plane = top_motion.table_plane(view, depth[0])
    circles = top_motion.hand_circles([p[(t_pred >= WINDOW[0]) & (t_pred <= WINDOW[1])] for p in predicted])
    seen = np.array([top_motion.hand_centroids(view, d, plane, circles) for d in depth])
    estimate = top_motion.estimate_image_lag([(t_pred, p, stamps[rows], seen[:, i]) for i, p in enumerate(predicted)])
    return {"estimate_ms": None if estimate is None else round(estimate.lag_ms, 2),
            "analysis_s": round(time.perf_counter() - started, 3), "frames": len(rows)}


def true_stamp_lag_ms(path: Path, config) -> float:
    """How late the recorded top camera stamps really are (after the calibration's offset) during the analysed
    window, median over its frames: a simulated device's clock is ``t_true * (1 + drift) + offset`` (drivers/sim/
    devices.py), so each frame's true instant is known. With realistic timing the stamps are that clock mapped
    onto the host from arrivals (``ClockMapper``), so a latency change reaches them only as the mapping follows it;
    with exact timing they move by the change at once."""
    from calibration.model import calibration_from_json
    from capture_app.episode.file import open_episode
    options = next(d.options for d in config.drivers if d.stream == "top_camera")
    offset_ns = float(options.get("device_clock_offset_s", 1000.0)) * 1e9
    drift = float(options.get("device_clock_drift_ppm", 0.0)) * 1e-6
    with open_episode(path) as f:
        calibration = calibration_from_json(str(f["calibration"].attrs["json"]), str(path))
        t0 = int(f.attrs["rig_check_start_ns"])
        group = f["streams/top_camera"]
        stamps = group["t_capture_ns"][:].astype(float) - calibration.latency_offset_ns("top_camera")
        t_true = (group["t_device_ns"][:].astype(float) - offset_ns) / (1.0 + drift)
    inside = (stamps - t0 >= WINDOW[0] * 1e9) & (stamps - t0 <= WINDOW[1] * 1e9)
    return float(np.median(stamps[inside] - t_true[inside]) / 1e6)


def live(change_ms: float, timing: str) -> dict:
    """``capture-app check`` on the embedded simulated rig ([sim] ``timing``) with the top camera's latency changed
    from the check's start (15 s after the rig's)."""
    from capture_app.recorder.rig_check import run_check
    config = with_changes(load_config(), {"top_camera": {"latency_change_ms": change_ms, "latency_change_at_s": 0.0}},
                          sim_timing=timing)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        path, lines = run_check(config, out, say=lambda text: None, lead_s=15.0)
        wall = time.perf_counter() - started
        truth = true_stamp_lag_ms(path, config)
    line = next(x for x in lines if x.name == "latency top_camera")
    ego = next(x for x in lines if x.name == "latency ego_camera")
    return {"estimate_ms": round(line.figures["lag_ms"], 2) if "lag_ms" in line.figures else None,
            "true_stamp_lag_ms": round(truth, 2), "line": line.line(), "ego_line": ego.line(),
            "other_failed": [x.line() for x in lines if not x.passed and x not in (line, ego)], "wall_s": round(wall, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=float, nargs="+", default=[0.0, 40.0], help="injected changes, ms")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--live", action="store_true", help="also run `capture-app check --sim` once per change")
    parser.add_argument("--timing", choices=("realistic", "exact"), default="realistic",
                        help="--live: the sim's stamps (realistic: the embedded rig's; exact: as the tests run it)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"machine": machine(), "offline": {}, "live": {}}
    for size in ((640, 480), (160, 120)) if args.seeds > 0 else ():
        for change in args.changes:
            runs = [offline(change, seed, size) for seed in range(args.seeds)]
            errors = np.array([r["estimate_ms"] - change for r in runs if r["estimate_ms"] is not None])
            result["offline"][f"{size[0]}x{size[1]} {change:+g} ms"] = {
                "estimates_ms": [r["estimate_ms"] for r in runs],
                "max_abs_error_ms": round(float(np.max(np.abs(errors))), 2) if len(errors) else None,
                "mean_error_ms": round(float(np.mean(errors)), 2) if len(errors) else None,
                "analysis_s_median": float(np.median([r["analysis_s"] for r in runs])),
                "frames": runs[0]["frames"]}
    if args.live:
        for change in args.changes:
            result["live"][f"{change:+g} ms ({args.timing})"] = live(change, args.timing)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(result["machine"])
    for name, r in result["offline"].items():
        print(f"offline {name:>18}: estimates {r['estimates_ms']} ms, max |error| {r['max_abs_error_ms']} ms, "
              f"analysis {r['analysis_s_median']:.3f} s for {r['frames']} frames")
    for name, r in result["live"].items():
        print(f"live    {name:>18}: estimate {r['estimate_ms']} ms, the stamps really {r['true_stamp_lag_ms']} ms late "
              f"({r['wall_s']} s)\n    {r['line']}\n    {r['ego_line']}")
        for failed in r["other_failed"]:
            print(f"    {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
