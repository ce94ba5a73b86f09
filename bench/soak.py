"""Soak: the full simulated rig at native rates, recording episodes back to back for a long time.
Reports lost samples, memory growth, tick lateness and CPU per tick.

    python bench/soak.py [--minutes 30] [--episode-seconds 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine, pct, process_cpu_seconds, rss_mb  # noqa: E402
from capture_app.rig.config import load_config  # noqa: E402
from capture_app.episode.format import validate_and_summarize  # noqa: E402
from capture_app.recorder.session import CaptureSession  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--episode-seconds", type=float, default=60.0)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    print(f"machine: {machine()}", flush=True)
    lateness, rss, lost, samples, problems = [], [], 0, 0, 0
    with CaptureSession(load_config()) as session:
        assert session.wait_for_streams(10) == []
        child = session.rig.hosts[0].pid
        cpu0, child0, ticks0 = process_cpu_seconds(os.getpid()), process_cpu_seconds(child), session.synchronizer.ticks
        end = time.monotonic() + args.minutes * 60
        k = 0
        while time.monotonic() < end:
            start = len(session.synchronizer.lateness_ns)
            session.start_episode(out, name=f"soak-{k:03d}")
            time.sleep(min(args.episode_seconds, max(1.0, end - time.monotonic())))
            path = session.stop_episode()
            lateness.extend(session.synchronizer.lateness_ns[start:])
            summary = validate_and_summarize(path)
            problems += len(summary.problems)
            lost += sum(s.seq_gaps + s.writer_overflow for s in summary.streams)
            samples += sum(s.samples for s in summary.streams)
            rss.append(rss_mb(os.getpid()))
            path.unlink()
            print(f"episode {k}: {summary.duration_s:.0f} s, lost {lost}, rss {rss[-1]:.0f} MB, "
                  f"lateness p99 so far {pct(np.array(lateness) / 1e6, 99):.2f} ms", flush=True)
            k += 1
        ticks = session.synchronizer.ticks - ticks0
        cpu, cpu_child = process_cpu_seconds(os.getpid()) - cpu0, process_cpu_seconds(child) - child0
    late = np.array(lateness) / 1e6
    growth = (rss[-1] - rss[0]) / rss[0] * 100 if len(rss) > 1 else 0.0
    warm = rss[3] if len(rss) > 4 else rss[0]  # allocators and HDF5 caches settle over the first episodes
    growth_after_warmup = (rss[-1] - warm) / warm * 100
    print(f"{k} episodes, {args.minutes:.0f} min, {samples} samples: lost {lost}, layout problems {problems}")
    print(f"app RSS after episode 1: {rss[0]:.0f} MB, after the last: {rss[-1]:.0f} MB, growth {growth:.1f}%; "
          f"after the warm-up (episode 4: {warm:.0f} MB): {growth_after_warmup:.1f}%")
    print(f"tick lateness: median {np.median(late):.2f} ms, p99 {pct(late, 99):.2f} ms, max {late.max():.2f} ms, "
          f"late by a whole period: {(late >= 50).sum()} of {len(late)}")
    print(f"CPU per 50 ms tick: app {1000 * cpu / ticks:.1f} ms, simulator process {1000 * cpu_child / ticks:.1f} ms")


if __name__ == "__main__":
    main()
