"""Colour storage against the raw frames: JPEG (the default) and H.264 ([writer] video_streams) on
the simulated cameras' own renders (720p ego camera moving with the head, 640x480 top camera):
bytes per second, PSNR against the raw frames, encode time per frame, and random access to any
frame of an episode file (a fresh FrameReader per frame: decode from its keyframe).

    python bench/video_storage.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine, pct  # noqa: E402
from capture_app.episode.file import open_episode, open_hdf5
from capture_app.rig.config import WriterConfig  # noqa: E402
from capture_app.episode.frames import FrameReader  # noqa: E402
from capture_app.episode.image_codec import decode_jpeg, encode_jpeg  # noqa: E402
from capture_app.episode.video_codec import VideoEncoder, VideoSettings  # noqa: E402
from drivers.sim.calibration import EGO_INTRINSICS_720P, TOP_INTRINSICS_480P  # noqa: E402
from drivers.sim.motion import MotionModel, true_rig_geometry  # noqa: E402
from drivers.sim.render import SceneRenderer  # noqa: E402

FPS = 30


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def render(camera: str, seconds: float) -> list[np.ndarray]:
    motion = MotionModel(0, 1.0, "work", "static", "work")
    k = EGO_INTRINSICS_720P if camera == "ego_camera" else TOP_INTRINSICS_480P
    renderer = SceneRenderer(k, motion, 0)
    T_topcam = true_rig_geometry()["T_world_topcam"]
    return [renderer.render(i / FPS, motion.T_world_cam(i / FPS) if camera == "ego_camera" else T_topcam)
            for i in range(int(seconds * FPS))]


def timed(work, items) -> tuple[list, list[float]]:
    results, ms = [], []
    for item in items:
        start = time.perf_counter()
        results.append(work(item))
        ms.append((time.perf_counter() - start) * 1000)
    return results, ms


def video_file(frames: list[np.ndarray], settings: VideoSettings, path: Path) -> None:
    """An episode-like file holding one H.264 camera stream, as the writer lays it out."""
    encoder = VideoEncoder(frames[0].shape[1], frames[0].shape[0], settings)
    packets = [encoder.encode(frame) for frame in frames]
    with open_hdf5(path, "w") as f:
        group = f.create_group("streams/cam")
        group.attrs["color_encoding"] = "h264"
        data = group.create_dataset("color", (len(packets),), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8),
                                    chunks=(64,))
        for i, (packet, _, _) in enumerate(packets):
            data[i] = packet
        group["color_keyframe"] = np.array([keyframe for _, keyframe, _ in packets])
        group["color_packet"] = np.array([number for _, _, number in packets], np.uint64)
        group["seq"] = np.arange(len(packets), dtype=np.uint64)
        group["sender_epoch"] = np.zeros(len(packets), np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(machine())
    defaults = WriterConfig()
    settings = VideoSettings(crf=defaults.video_crf, preset=defaults.video_preset,
                             keyframe_interval=defaults.video_keyframe_interval, rate_hz=FPS)
    print(f"H.264 settings: {settings}; JPEG quality {defaults.jpeg_quality}")
    for camera in ("ego_camera", "top_camera"):
        frames = render(camera, args.seconds)
        jpegs, jpeg_ms = timed(lambda frame: encode_jpeg(frame, defaults.jpeg_quality), frames)
        jpeg_psnr = [psnr(frame, decode_jpeg(blob)) for frame, blob in zip(frames, jpegs)]
        encoder = VideoEncoder(frames[0].shape[1], frames[0].shape[0], settings)
        packets, video_ms = timed(encoder.encode, frames)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "video.h5"
            video_file(frames, settings, path)
            with open_episode(path) as f:
                sequential = FrameReader(f, "cam")
                decoded = [sequential.frame(row) for row in range(len(frames))]
                rows = np.random.default_rng(0).integers(0, len(frames), 60)
                _, access_ms = timed(lambda row: FrameReader(f, "cam").frame(int(row)), rows)
        video_psnr = [psnr(frame, image) for frame, image in zip(frames, decoded)]
        seconds = len(frames) / FPS
        jpeg_rate = sum(b.nbytes for b in jpegs) / seconds / 1e6
        video_rate = sum(p.nbytes for p, _, _ in packets) / seconds / 1e6
        print(f"{camera} {frames[0].shape[1]}x{frames[0].shape[0]}, {len(frames)} frames:")
        print(f"  JPEG  {jpeg_rate:.3f} MB/s, PSNR mean {np.mean(jpeg_psnr):.1f} dB min {min(jpeg_psnr):.1f}, "
              f"encode median {np.median(jpeg_ms):.2f} ms/frame")
        print(f"  H.264 {video_rate:.3f} MB/s ({video_rate / jpeg_rate:.2f}x JPEG), PSNR mean {np.mean(video_psnr):.1f} dB "
              f"min {min(video_psnr):.1f}, encode median {np.median(video_ms):.2f} ms/frame; random access "
              f"median {np.median(access_ms):.1f} ms, p95 {pct(access_ms, 95):.1f} ms, max {max(access_ms):.1f} ms")


if __name__ == "__main__":
    main()
