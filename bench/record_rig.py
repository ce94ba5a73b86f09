"""Record the full simulated rig (720p ego, 640x480 colour + depth, 3 trackers at 250 Hz,
2 gloves at 120 Hz) and report CPU per tick, writer back-log, losses, tick lateness and the
episode's bytes per second; ``--video`` stores both cameras as H.264 ([writer] video_streams).

    python bench/record_rig.py [--seconds 60] [--out DIR] [--video] [--batch-ms MS] [--encode-in driver|writer]

``--batch-ms 0`` sends every pose and keypoint sample alone (the baseline for the rig's default batches);
``--encode-in writer`` sends raw colour frames over the bus and JPEGs them in the recorder's writer.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine, pct, process_cpu_seconds, rss_mb, thread_cpu_seconds  # noqa: E402
from capture_app.episode.file import open_episode, open_hdf5
from capture_app.rig.config import load_config, with_changes  # noqa: E402
from drivers.host import driver_video_settings  # noqa: E402
from capture_app.episode.format import validate_and_summarize  # noqa: E402
from capture_app.recorder.session import CaptureSession  # noqa: E402


def encoder_floor_ms_per_tick(path: Path, jpeg_quality: int, rate_hz: float, frames: int = 30,
                              video: dict | None = None) -> dict:
    """The physical floor of the same work: the encoders alone on the episode's own frames (JPEG, or H.264
    for the streams in ``video``, of each colour image; the writer's Blosc filter on each depth image through
    HDF5), as CPU ms per synchronizer tick at the cameras' recorded rates. Medians of ``frames`` frames per
    stream."""
    import cv2
    import h5py

    from capture_app.episode.frames import FrameReader
    from capture_app.episode.video_codec import VideoEncoder

    def median_ms(work, items):
        times = []
        for item in items:
            start = time.perf_counter()
            work(item)
            times.append((time.perf_counter() - start) * 1000)
        return float(np.median(times))

    out = {}
    from capture_app.recorder.columns import DEPTH_FILTER as depth_filter
    with open_episode(path) as f, open_hdf5("floor.h5", "w", driver="core", backing_store=False) as scratch:
        for stream in ("ego_camera", "top_camera"):
            group = f[f"streams/{stream}"]
            fps = len(group["seq"]) / ((group["t_capture_ns"][-1] - group["t_capture_ns"][0]) / 1e9)
            reader = FrameReader(f, stream)
            images = [reader.frame(i) for i in range(frames)]
            if video and stream in video:
                encoder = VideoEncoder(images[0].shape[1], images[0].shape[0], video[stream])
                per_frame = median_ms(encoder.encode, images)
                out[f"{stream} H.264"] = (per_frame, per_frame * fps / rate_hz)
            else:
                bgr = [cv2.cvtColor(image, cv2.COLOR_RGB2BGR) for image in images]
                per_frame = median_ms(lambda im: cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]),
                                      bgr)
                out[f"{stream} JPEG"] = (per_frame, per_frame * fps / rate_hz)
            if "depth" in group:
                depths = [group["depth"][i] for i in range(frames)]
                table = scratch.create_dataset("depth", shape=(0, *depths[0].shape), maxshape=(None, *depths[0].shape),
                                               dtype=depths[0].dtype, chunks=(1, *depths[0].shape), **depth_filter)

                def write(d):
                    table.resize(len(table) + 1, axis=0)
                    table[-1] = d
                per_frame = median_ms(write, depths)
                out[f"{stream} depth"] = (per_frame, per_frame * fps / rate_hz)
    return out


def encoder_cpu(session: CaptureSession) -> dict[str, tuple[int, float]]:
    """stream -> (frames, CPU seconds) of the drivers' colour encoders, from their newest status
    (docs/protocol.md, ``encoder_cpu``)."""
    out = {}
    for health in session.intake.driver_health().values():
        out.update({stream: (int(v[0]), float(v[1])) for stream, v in health.encoder_cpu.items()})
    return out


def record_take(session: CaptureSession, config, out: Path, seconds: float, name: str) -> tuple[Path, float, float]:
    """Record one take of ``seconds`` in the running ``session``; print its figures; return (episode path, app CPU
    ms per tick, app / floor of this take)."""
    child = session.rig.hosts[0].pid
    writer = session.start_episode(out, name=name)
    sync = session.synchronizer
    ticks0 = sync.ticks
    lateness_start = len(sync.lateness_ns)
    cpu_app0, cpu_child0 = process_cpu_seconds(os.getpid()), process_cpu_seconds(child)
    threads0 = thread_cpu_seconds()
    encoders0, depth0 = encoder_cpu(session), writer.stats().depth_cpu_s
    received0 = session.intake.received_count()
    backlog_items, backlog_mb, rss = [], [], []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        stats = writer.stats()
        backlog_items.append(stats.backlog_items)
        backlog_mb.append(stats.backlog_bytes / 1e6)
        rss.append(rss_mb(os.getpid()))
        time.sleep(0.5)
    cpu_app = process_cpu_seconds(os.getpid()) - cpu_app0
    cpu_child = process_cpu_seconds(child) - cpu_child0
    threads = {name: cpu - threads0.get(name, 0.0) for name, cpu in thread_cpu_seconds().items()}
    ticks = sync.ticks - ticks0
    lateness = np.array(sync.lateness_ns[lateness_start:]) / 1e6
    wake = np.array(sync.wake_lateness_ns[lateness_start:]) / 1e6
    stats = writer.stats()
    encoders1 = encoder_cpu(session)
    received = session.intake.received_count() - received0
    path = session.stop_episode()
    summary = validate_and_summarize(path)
    period_ms = 1000 / config.sync.rate_hz
    print(f"recorded {seconds:.0f} s -> {path} ({summary.size_bytes / 1e6:.0f} MB, "
          f"{summary.size_bytes / 1e6 / seconds:.1f} MB/s)")
    print(f"ticks: {ticks}; CPU per 50 ms tick: app process {1000 * cpu_app / ticks:.1f} ms, "
          f"driver process (the simulator) {1000 * cpu_child / ticks:.1f} ms")
    print("  by thread: " + ", ".join(f"{name} {1000 * cpu / ticks:.1f}" for name, cpu in
                                      sorted(threads.items(), key=lambda item: -item[1]) if cpu * 1000 / ticks >= 0.05))
    print(f"  per sample received ({received} samples, {received / ticks:.0f} per tick): app process "
          f"{1e6 * cpu_app / received:.1f} us; " + ", ".join(
              f"{name} {1e6 * cpu / received:.1f}" for name, cpu in sorted(threads.items(), key=lambda item: -item[1])
              if cpu * 1000 / ticks >= 0.05) + " us")
    print(f"tick lateness: median {np.median(lateness):.2f} ms, p99 {pct(lateness, 99):.2f} ms, "
          f"max {lateness.max():.2f} ms, late by a whole period: {(lateness >= period_ms).sum()}; "
          f"wake-up alone: median {np.median(wake):.2f} p99 {pct(wake, 99):.2f} ms")
    print(f"writer back-log: median {np.median(backlog_items):.0f} items, max {max(backlog_items)} items / "
          f"{max(backlog_mb):.1f} MB")
    print(f"app RSS: start {rss[0]:.0f} MB, end {rss[-1]:.0f} MB, max {max(rss):.0f} MB")
    print(f"losses: seq gaps {sum(stats.seq_gaps.values())}, writer overflow {sum(stats.overflow.values())}")
    for s in summary.streams:
        print(f"  {s.name:<22} {s.samples:>7} samples {s.rate_hz:8.2f} Hz (expected {s.expected_rate_hz:.0f}) "
              f"gaps {s.seq_gaps} overflow {s.writer_overflow}, {s.nbytes / 1e6 / seconds:.2f} MB/s")
    real = sum(s.nbytes for s in summary.streams if s.name != "ground_truth") / 1e6 / seconds
    print(f"what a real rig records (every stream but the simulator's ground truth): {real:.2f} MB/s; the whole "
          f"file with the synced tables: {summary.size_bytes / 1e6 / summary.duration_s:.2f} MB/s of episode")
    same_run = {}
    for stream, (frames1, cpu1) in encoders1.items():
        frames0, cpu0 = encoders0.get(stream, (0, 0.0))
        if frames1 > frames0:
            per_frame = 1000 * (cpu1 - cpu0) / (frames1 - frames0)
            same_run[f"{stream} colour"] = (per_frame, per_frame * stats.written[stream] / ticks)
    depth_frames = stats.written["top_camera"]
    if depth_frames:
        depth_ms = 1000 * (stats.depth_cpu_s - depth0)
        same_run["top_camera depth"] = (depth_ms / depth_frames, depth_ms / ticks)
    total = sum(per_tick for _, per_tick in same_run.values())
    print("floor, the encoders' own CPU in this run (the drivers' colour encoders, the writer's depth filter): "
          + ", ".join(f"{name} {per_frame:.2f} ms/frame" for name, (per_frame, _) in same_run.items())
          + f"; {total:.1f} ms per tick. App CPU per tick / floor: {1000 * cpu_app / ticks / total:.2f}x")
    return path, 1000 * cpu_app / ticks, 1000 * cpu_app / ticks / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--takes", type=int, default=1, help="takes in a row in one session; prints their median")
    parser.add_argument("--out", default=None)
    parser.add_argument("--video", action="store_true", help="store both cameras as H.264 instead of JPEG")
    parser.add_argument("--batch-ms", type=float, default=None,
                        help="[bus] batch_ms: hold pose/keypoint samples this long per batch (default: the rig's)")
    parser.add_argument("--encode-in", choices=("driver", "writer"), default=None,
                        help="[writer] encode_in: where colour frames become JPEG (default: the rig's)")
    parser.add_argument("--no-drift-watch", action="store_true",
                        help="[drift] enabled = false: the recorder without its drift watch (as before issue 28)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-record-"))
    config = load_config()
    if args.batch_ms is not None:
        config = with_changes(config, bus_batch_ms=args.batch_ms)
    if args.encode_in is not None:
        config = with_changes(config, writer=dataclasses.replace(config.writer, encode_in=args.encode_in))
    if args.no_drift_watch:
        config = with_changes(config, drift=dataclasses.replace(config.drift, enabled=False))
    if args.video:
        config = with_changes(config, writer=dataclasses.replace(config.writer,
                                                                  video_streams=("ego_camera", "top_camera")))
    print(f"machine: {machine()}; [bus] batch_ms = {config.bus_batch_ms:g}; [writer] encode_in = {config.writer.encode_in}; "
          f"[drift] enabled = {str(config.drift.enabled).lower()}")
    ratios, apps = [], []
    with CaptureSession(config) as session:
        missing = session.wait_for_streams(10)
        assert not missing, missing
        for take in range(args.takes):
            if args.takes > 1:
                print(f"--- take {take + 1} of {args.takes}")
            path, app_ms, ratio = record_take(session, config, out, args.seconds, f"bench-{take + 1}")
            apps.append(app_ms)
            ratios.append(ratio)
            if take < args.takes - 1 and args.out is None:
                path.unlink()
    if args.takes > 1:
        print(f"median of {args.takes} takes in this session: app CPU per tick {np.median(apps):.1f} ms "
              f"({', '.join(f'{a:.1f}' for a in apps)}); app / floor {np.median(ratios):.2f}x "
              f"({', '.join(f'{r:.2f}' for r in ratios)})")
    alone = encoder_floor_ms_per_tick(path, config.writer.jpeg_quality, config.sync.rate_hz,
                                      video=driver_video_settings(config))
    alone_total = sum(per_tick for _, per_tick in alone.values())
    print("for comparison, the encoders alone after the take on the same frames: " + ", ".join(
        f"{name} {per_frame:.2f} ms/frame" for name, (per_frame, _) in alone.items()) + f"; {alone_total:.1f} ms per tick")
    if args.out is None:
        path.unlink()


if __name__ == "__main__":
    main()
