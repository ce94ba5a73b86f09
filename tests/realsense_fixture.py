"""Writes RealSense recordings with pyrealsense2's own software device and recorder (no camera needed).

The recordings look like a D435's: a depth (z16) and a colour (rgb8) sensor with their
intrinsics and depth-to-colour extrinsics, frames fed at the frame rate (a software-device
recording replays at the pace its frames were fed), depth stamped ``depth_offset_ms`` after
colour (a D435's two sensors differ by a few ms: librealsense issues #5764, #8643), a chosen
timestamp domain, a device clock that drifts against the host, and dropped frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Recording:
    """What to write. Frame k's colour is filled with color_value(k), its depth with depth_value(k)."""

    frames: int = 30
    depth_offset_ms: float = 0.0          # depth timestamp (and feed) this long after colour
    domain: str = "hardware_clock"        # rs.timestamp_domain name
    drift_ppm: float = 0.0                # device clock runs this much fast against the host
    drop_color: frozenset = frozenset()   # frame numbers never delivered
    drop_depth: frozenset = frozenset()
    paced: bool = True                    # feed at FPS (False: as fast as possible, 'faster than real time')
    holes: bool = False                   # depth has zero pixels (no return), as real depth does


def frame_time_ms(rec: Recording, k: int) -> float:
    """The device timestamp of colour frame k (ms)."""
    return FIRST_TIMESTAMP_MS + k * 1000.0 / FPS * (1 + rec.drift_ppm * 1e-6)


def depth_image(rec: Recording, k: int) -> np.ndarray:
    depth = np.full((H, W), depth_value(k), np.uint16)
    if rec.holes:
        depth[:, :4] = 0          # a band with no return
        depth[k % H, :] = 0       # and a moving line
    return depth


def write_recording(path, frames: int = 30, rec: Recording | None = None) -> Recording:
    """Write ``rec`` (default: ``frames`` frames, no offset) to ``path`` (.db3); returns it."""
    import pyrealsense2 as rs

    rec = rec or Recording(frames=frames)
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
    domain = getattr(rs.timestamp_domain, rec.domain)
    start = time.monotonic()

    def push(sensor, profile, pixels, bpp, timestamp, k):
        frame = rs.software_video_frame()
        frame.pixels, frame.bpp, frame.stride, frame.timestamp = pixels, bpp, W * bpp, timestamp
        frame.domain, frame.frame_number = domain, k
        frame.profile = profile.as_video_stream_profile()
        if bpp == 2:
            frame.depth_units = 0.001
        sensor.on_video_frame(frame)

    for k in range(rec.frames):
        t_color = frame_time_ms(rec, k)
        if rec.paced:  # real-time playback replays the pace of the feeding
            time.sleep(max(0.0, start + k / FPS - time.monotonic()))
        if k not in rec.drop_color:
            push(color_sensor, color_profile, np.full((H, W, 3), color_value(k), np.uint8), 3, t_color, k)
        if rec.paced and rec.depth_offset_ms > 0:
            time.sleep(rec.depth_offset_ms / 1000)
        if k not in rec.drop_depth:
            push(depth_sensor, depth_profile, depth_image(rec, k), 2, t_color + rec.depth_offset_ms, k)
    for sensor in (depth_sensor, color_sensor):
        sensor.stop()
        sensor.close()
    del recorder  # finishes the file
    return rec


class RecordedCamera:
    """A recording played through pyrealsense2's own device API as if it were a live camera: the driver's
    live path (``_find_camera``) gets the played-back device, whose sensors call the driver's callback on
    the SDK's thread. ``real_time=False``: frames come as fast as the callback takes them. The recording is
    paused until ``play()`` (after the driver's ``open`` started every sensor), so no sensor misses a frame."""

    def __init__(self, path, real_time: bool = False):
        import pyrealsense2 as rs
        self.rs = rs
        self.device = rs.context().load_device(str(path))
        self.playback = self.device.as_playback()
        self.playback.set_real_time(real_time)

    def find_camera(self, rs, context):  # monkeypatched over RealSenseCamera._find_camera
        self.playback.pause()
        return self.device

    def play(self) -> None:
        self.playback.resume()

    def wait_until_played(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.playback.current_status() == self.rs.playback_status.stopped:
                return True
            time.sleep(0.02)
        return False
