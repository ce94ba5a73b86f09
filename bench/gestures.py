"""The glove-gesture recogniser on scripted sessions, faster than real time (no rig, no drivers): the
simulated operator's manipulation motion (drivers/sim/motion.py) with scripted command poses and
manipulation look-alikes (drivers/sim/gestures.py), glove noise added, fed sample by sample to
``capture_app.core.gestures.GestureRecogniser`` as the recorder's gesture thread does.

* detection latency: from the end of the hold (the instant the pose is fully formed + hold_s) to the
  sample that fires; its p50 / p95 / max;
* missed gestures: scripted command poses that did not fire, or fired as another pose;
* false commands per hour of ordinary manipulation: an hour (``--hours``) of both hands working, with a
  look-alike (pinch, thumb near the little finger, flat hand, a tight grasp while turning, a 0.3 s touch)
  every ~20 s on each hand, and nothing else; every firing is a false command.

    python bench/gestures.py [--hours 1] [--gestures 300] [--noise-mm 2] [--hold-s 0.8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine, pct  # noqa: E402
from capture_app.core.gestures import GestureRecogniser, GestureTiming  # noqa: E402
from drivers.sim.gestures import COMMAND_POSES, LOOKALIKES, scripted_samples  # noqa: E402
from drivers.sim.motion import MotionModel  # noqa: E402

RATE_HZ = 120.0


def run(recogniser, motion, script, hand, t_end_s, noise_mm, rng, drop=0.005):
    """Every gesture fired over [0, t_end_s); samples with Gaussian keypoint noise and random drops."""
    fired, samples = [], 0
    for t, k, q in scripted_samples(motion, script, hand, 0.0, t_end_s, RATE_HZ):
        k = k + rng.normal(0.0, noise_mm / 1000.0, size=k.shape)
        keep = rng.uniform(size=len(t)) >= drop
        for i in np.nonzero(keep)[0]:
            g = recogniser.update(int(t[i] * 1e9), k[i], q[i])
            samples += 1
            if g is not None:
                fired.append(g)
    return fired, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="simulated manipulation for false commands")
    parser.add_argument("--gestures", type=int, default=300, help="scripted command gestures for latency and misses")
    parser.add_argument("--noise-mm", type=float, default=2.0, help="glove keypoint noise (std, mm)")
    parser.add_argument("--hold-s", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    timing = GestureTiming(hold_s=args.hold_s)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    # latency and misses: command poses every 4 s, held 0.4-1.0 s longer than the hold, random order
    latencies, missed, wrong, n_samples = [], 0, 0, 0
    per_session = 30
    for session in range(int(np.ceil(args.gestures / per_session))):
        hand = ("left", "right")[session % 2]
        poses = rng.choice(COMMAND_POSES, size=per_session)
        script = tuple((3.0 + 4.0 * i + rng.uniform(0, 0.5), str(p), args.hold_s + rng.uniform(0.4, 1.0))
                       for i, p in enumerate(poses))
        fired, n = run(GestureRecogniser(hand, timing=timing), MotionModel(args.seed + session), script, hand,
                       script[-1][0] + 4.0, args.noise_mm, rng)
        n_samples += n
        for t0, pose, _ in script:
            match = [g for g in fired if abs(g.onset_ns / 1e9 - t0) < 1.0]
            if not match:
                missed += 1
            elif match[0].pose != pose:
                wrong += 1
            else:
                latencies.append(match[0].t_ns / 1e9 - (t0 + args.hold_s))
    n_gestures = int(np.ceil(args.gestures / per_session)) * per_session

    # false commands: manipulation with look-alikes on both hands, no command pose
    false, sim_s, chunk_s = [], args.hours * 3600.0, 600.0
    for c in range(int(np.ceil(sim_s / chunk_s))):
        for hand in ("left", "right"):
            t_look = np.arange(5.0, chunk_s - 5.0, 20.0) + rng.uniform(0, 5.0, size=int((chunk_s - 10) // 20) + 1)[
                :len(np.arange(5.0, chunk_s - 5.0, 20.0))]
            script = tuple((float(t), str(rng.choice(LOOKALIKES)), float(rng.uniform(0.5, 2.5))) for t in t_look)
            fired, n = run(GestureRecogniser(hand, timing=timing), MotionModel(1000 + c, speed=rng.uniform(0.8, 1.3)),
                           script, hand, chunk_s, args.noise_mm, rng)
            n_samples += n
            false += [(c, hand, g.pose, round(g.onset_ns / 1e9, 2)) for g in fired]
    elapsed = time.perf_counter() - started
    result = {
        "machine": machine(), "hold_s": args.hold_s, "noise_mm": args.noise_mm,
        "gestures": n_gestures, "missed": missed, "fired_as_another_pose": wrong,
        "latency_from_end_of_hold_ms": {"p50": round(pct(latencies, 50) * 1e3, 1),
                                        "p95": round(pct(latencies, 95) * 1e3, 1),
                                        "max": round(float(np.max(latencies)) * 1e3, 1) if latencies else None},
        "manipulation_hours_per_hand": args.hours, "false_commands": len(false),
        "false_commands_per_hour": round(len(false) / (2 * args.hours), 2), "false_examples": false[:10],
        "samples": n_samples, "samples_per_s": round(n_samples / elapsed), "elapsed_s": round(elapsed, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
