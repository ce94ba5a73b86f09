"""Writes a RealSense recording with pyrealsense2's software device (no camera needed)."""

from __future__ import annotations

import time

import numpy as np

W, H, FPS = 64, 48, 30
SERIAL = "123456789012"
COLOR_FX, DEPTH_FX = 60.0, 50.0
DEPTH_TO_COLOR_M = (0.015, 0.0, 0.0)
FIRST_TIMESTAMP_MS = 1000.0


def color_value(k: int) -> int:
    return k % 250


def depth_value(k: int) -> int:
    return 500 + k


def write_recording(path, frames: int = 30) -> None:
    """Frame k: colour filled with color_value(k), depth with depth_value(k), hardware timestamp
    FIRST_TIMESTAMP_MS + k / FPS seconds."""
    import pyrealsense2 as rs

    device = rs.software_device()
    depth_sensor = device.add_sensor("Stereo Module")
    color_sensor = device.add_sensor("RGB Camera")
    depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)

    def stream(kind, uid, fmt, bpp, fx):
        k = rs.intrinsics()
        k.width, k.height, k.ppx, k.ppy, k.fx, k.fy = W, H, W / 2, H / 2, fx, fx
        k.model, k.coeffs = rs.distortion.none, [0.0] * 5
        s = rs.video_stream()
        s.type, s.index, s.uid, s.width, s.height, s.fps, s.bpp, s.fmt, s.intrinsics = kind, 0, uid, W, H, FPS, bpp, fmt, k
        return s

    depth_profile = depth_sensor.add_video_stream(stream(rs.stream.depth, 0, rs.format.z16, 2, DEPTH_FX))
    color_profile = color_sensor.add_video_stream(stream(rs.stream.color, 1, rs.format.rgb8, 3, COLOR_FX))
    device.register_info(rs.camera_info.serial_number, SERIAL)
    device.register_info(rs.camera_info.name, "Intel RealSense D435 (software device)")
    extrinsics = rs.extrinsics()
    extrinsics.rotation, extrinsics.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], list(DEPTH_TO_COLOR_M)
    depth_profile.register_extrinsics_to(color_profile, extrinsics)
    recorder = rs.recorder(str(path), device, False)  # False: uncompressed (compression can drop frames)
    queue = rs.frame_queue(100)
    depth_sensor.open(depth_profile)
    color_sensor.open(color_profile)
    depth_sensor.start(queue)
    color_sensor.start(queue)
    start = time.monotonic()
    for k in range(frames):
        # pace the pushes at the real frame rate: real-time playback replays the file's own timing
        time.sleep(max(0.0, start + k / FPS - time.monotonic()))
        timestamp = FIRST_TIMESTAMP_MS + k * 1000.0 / FPS
        for sensor, profile, pixels, bpp in (
                (depth_sensor, depth_profile, np.full((H, W), depth_value(k), np.uint16), 2),
                (color_sensor, color_profile, np.full((H, W, 3), color_value(k), np.uint8), 3)):
            frame = rs.software_video_frame()
            frame.pixels, frame.bpp, frame.stride, frame.timestamp = pixels, bpp, W * bpp, timestamp
            frame.domain, frame.frame_number = rs.timestamp_domain.hardware_clock, k
            frame.profile = profile.as_video_stream_profile()
            if bpp == 2:
                frame.depth_units = 0.001
            sensor.on_video_frame(frame)
    for sensor in (depth_sensor, color_sensor):
        sensor.stop()
        sensor.close()
    del recorder  # finishes the file
