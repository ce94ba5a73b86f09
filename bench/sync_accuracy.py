"""Accuracy of the final 20 Hz synced action (and of the live table) against the simulated
rig's ground truth, and of the naive baseline peers use (the latest sample at each tick,
no latency compensation), in the same run; plus tick lateness while the full rig records.

Rig: the embedded simulated rig with realistic timing (sim_rig.toml: trackers stamped at
the host poll, the ZED at USB arrival with bursts, RealSense and gloves by drifting device
clocks, arrival jitter, lost and repeated frames); trackers 250 Hz, gloves 120 Hz, cameras
30 fps; hand motion 1.6x the default speed (peaks ~1.1 m/s, ~10 m/s^2).
``--variant arrival`` stamps every device on arrival with no clock mapping or dejittering
(what the drivers would give without those techniques); ``--variant exact`` has perfect stamps.

    python bench/sync_accuracy.py [--seconds 30] [--speed 1.6] [--variant realistic|arrival|exact]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine, pct  # noqa: E402
from calibration.model import calibration_from_json  # noqa: E402
from capture_app.episode.file import open_episode
from capture_app.core.action_space import fingertip_state, wrist_state  # noqa: E402
from capture_app.rig.config import load_config, parse_config, sim_epoch_ns, with_changes  # noqa: E402
from capture_app.core.geometry import invert_transform, pose_to_transform, rotation_angle, rotation_from_6d  # noqa: E402
from capture_app.recorder.session import CaptureSession  # noqa: E402
from drivers.sim.motion import MotionModel  # noqa: E402


def truth_action(model: MotionModel, t_ns: np.ndarray, epoch_ns: int) -> np.ndarray:
    """The true 48-D action at host times ``t_ns`` (the simulation's motion time is t - epoch)."""
    t = (t_ns - epoch_ns) / 1e9
    T_cam_world = invert_transform(model.T_world_cam(t))
    return np.concatenate([
        wrist_state(T_cam_world @ model.T_world_wrist(t, "left"), T_cam_world @ model.T_world_wrist(t, "right")),
        fingertip_state(model.keypoints(t, "left"), model.keypoints(t, "right")),
    ], axis=-1)


def errors(action: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per-tick errors: wrist position (m) and rotation (deg) per hand, fingertip position (m) per tip."""
    ok = ~np.isnan(action).any(axis=1)
    a, t = action[ok], truth[ok]
    out = {"wrist_pos": [], "wrist_rot": [], "tip": []}
    for h in range(2):
        w, wt = a[:, 9 * h: 9 * h + 9], t[:, 9 * h: 9 * h + 9]
        out["wrist_pos"].append(np.linalg.norm(w[:, :3] - wt[:, :3], axis=1))
        out["wrist_rot"].append(np.degrees(rotation_angle(rotation_from_6d(w[:, 3:]), rotation_from_6d(wt[:, 3:]))))
        tips, tips_true = a[:, 18 + 15 * h: 33 + 15 * h], t[:, 18 + 15 * h: 33 + 15 * h]
        out["tip"].append(np.linalg.norm((tips - tips_true).reshape(-1, 5, 3), axis=2).ravel())
    return {k: np.concatenate(v) for k, v in out.items()}


def naive_actions(f: h5py.File, calibration, tick_ns: np.ndarray) -> np.ndarray:
    """What 'take the latest value when the loop runs' gives at each tick (no delay, no latency offsets)."""
    def latest(stream, column):
        g = f[f"streams/{stream}"]
        i = np.searchsorted(g["t_receive_ns"][:], tick_ns, side="right") - 1
        return g[column][:][np.maximum(i, 0)], i >= 0
    head, ok_h = latest("head_tracker", "pose")
    T_cam_world = invert_transform(pose_to_transform(head) @ calibration.T_headtracker_cam)
    wrists = []
    for hand in ("left", "right"):
        pose, _ = latest(f"{hand}_wrist_tracker", "pose")
        wrists.append(T_cam_world @ pose_to_transform(pose) @ calibration.T_wristtracker_wrist[hand])
    kl, _ = latest("left_glove", "keypoints")
    kr, _ = latest("right_glove", "keypoints")
    action = np.concatenate([wrist_state(*wrists), fingertip_state(kl, kr)], axis=-1)
    action[~ok_h] = np.nan
    return action


def report(name: str, e: dict[str, np.ndarray]) -> dict[str, float]:
    p99 = {"wrist_pos_mm": pct(e["wrist_pos"], 99) * 1e3, "wrist_rot_deg": pct(e["wrist_rot"], 99),
           "tip_mm": pct(e["tip"], 99) * 1e3}
    print(f"  {name:<34} wrist position p50 {pct(e['wrist_pos'], 50) * 1e3:7.3f} p99 {p99['wrist_pos_mm']:7.3f} mm | "
          f"wrist rotation p50 {pct(e['wrist_rot'], 50):6.3f} p99 {p99['wrist_rot_deg']:6.3f} deg | "
          f"fingertips p50 {pct(e['tip'], 50) * 1e3:6.3f} p99 {p99['tip_mm']:7.3f} mm")
    return p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--speed", type=float, default=1.6)
    parser.add_argument("--variant", choices=("realistic", "arrival", "exact"), default="realistic")
    parser.add_argument("--batch-ms", type=float, default=None, help="[bus] batch_ms (default: the rig's)")
    args = parser.parse_args()
    config = with_changes(load_config(), {"*": {"speed": args.speed}})
    if args.batch_ms is not None:
        config = with_changes(config, bus_batch_ms=args.batch_ms)
    if args.variant == "exact":
        config = with_changes(config, sim_timing="exact")
    elif args.variant == "arrival":
        config = with_changes(config, {d.name: {"stamp": "arrival", "dejitter": False} for d in config.drivers
                                       if d.type.startswith("sim_") and d.stream != "ground_truth"})
    print(f"variant: {args.variant}")
    print(f"machine: {machine()}")
    out = Path(tempfile.mkdtemp(prefix="bench-accuracy-"))
    with CaptureSession(config) as session:
        assert session.wait_for_streams(10) == []
        session.start_episode(out, name="accuracy")
        time.sleep(args.seconds)
        path = session.stop_episode()
    with open_episode(path) as f:
        synced, live = f["synced"], f["synced_live"]
        t_tick, t_eval = synced["t_tick_ns"][:], synced["t_eval_ns"][:]
        action, valid = synced["action"][:], synced["action_valid"][:]
        live_action, live_eval = live["action"][:], live["t_eval_ns"][:]
        live_valid = live["action_valid"][:]
        lateness = live["lateness_ns"][:] / 1e6
        calibration = calibration_from_json(f["calibration"].attrs["json"])
        naive = naive_actions(f, calibration, t_tick)
        gaps = {name: int(g.attrs["seq_gaps"]) for name, g in f["streams"].items()}
        epoch = sim_epoch_ns(parse_config(str(f.attrs["rig_config"])))
    model = MotionModel(config.sim_seed, args.speed)
    # peak hand speed, for context
    t = (np.arange(t_eval[0], t_eval[-1], 1_000_000) - epoch) / 1e9
    speed = np.linalg.norm(np.diff(model.T_world_wrist(t, "left")[:, :3, 3], axis=0), axis=1) / 1e-3
    print(f"{len(t_tick)} ticks over {args.seconds:.0f} s, {valid.all(axis=1).mean():.1%} fully valid; "
          f"hand speed p99 {pct(speed, 99):.2f} m/s; seq gaps {sum(gaps.values())}")
    print(f"live table: {live_valid.all(axis=1).mean():.1%} fully valid")
    report("live table (this project)", errors(live_action, truth_action(model, live_eval, epoch)))
    ours = report("final table (this project)", errors(action, truth_action(model, t_eval, epoch)))
    base = report("naive latest-sample baseline", errors(naive, truth_action(model, t_tick, epoch)))
    ratios = {k: base[k] / ours[k] for k in ours}
    print("  baseline / ours at p99: " + ", ".join(f"{k} {v:.0f}x" for k, v in ratios.items()))
    period = 1000 / config.sync.rate_hz
    print(f"tick lateness: median {np.median(lateness):.2f} ms, p99 {pct(lateness, 99):.2f} ms, "
          f"max {lateness.max():.2f} ms, late by a whole period: {(lateness >= period).sum()}")
    floors = {"wrist_pos_mm": 2.0, "wrist_rot_deg": 0.5, "tip_mm": 2.0}
    passed = all(ours[k] <= floors[k] and ratios[k] >= 5 for k in floors) and pct(lateness, 99) <= 5.0
    print(json.dumps({"ours_p99": ours, "baseline_p99": base, "lateness_p99_ms": pct(lateness, 99)}))
    print("PASS" if passed else "FAIL (floors: wrist 2 mm / 0.5 deg, tips 2 mm, baseline >= 5x worse, p99 lateness 5 ms)")
    path.unlink()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
