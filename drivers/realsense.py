"""RealSense D435 (top camera) through pyrealsense2: colour + depth, or a recording played back.

A live camera is chosen by serial (rig config ``serial``). ``playback_file`` plays a
``.bag`` / ``.db3`` recording through the same SDK pipeline instead. Each colour frame is
published once, with the depth frame of the same timestamp (aligned to colour by
default). The frame's hardware/global timestamp is mapped onto the host clock; the
intrinsics, depth scale and depth-to-colour extrinsics are published as device info.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from capture_app.clock import now_ns
from capture_app.clock_mapping import ClockMapper
from capture_app.errors import DeviceNotFoundError, DeviceTimeoutError
from drivers.base import Driver, Sample, import_sdk

INSTALL_HINT = "apt-get install -y libusb-1.0-0 && pip install pyrealsense2 (or: pip install 'capture-app[realsense]')"


def import_realsense():
    """The pyrealsense2 module, or SDKMissingError saying how to install it."""
    return import_sdk("pyrealsense2", INSTALL_HINT)


@dataclass(frozen=True)
class RealSenseOptions:
    width: int = 640
    height: int = 480
    depth: bool = True
    align_depth_to_color: bool = True
    playback_file: str = ""
    real_time: bool = True
    timeout_ms: int = 1000


def _intrinsics(profile) -> dict:
    k = profile.as_video_stream_profile().get_intrinsics()
    return {"width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy, "cx": k.ppx, "cy": k.ppy,
            "distortion": list(k.coeffs), "model": str(k.model)}


class RealSenseCamera(Driver):
    """The top camera; type ``realsense``."""

    Options = RealSenseOptions

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        self._pipeline = None
        self._align = None
        self._last_color_number = None
        self._clock = ClockMapper()
        self._silent_since = None
        self.playback_finished = False
        self.depth_scale_m = 0.001

    def open(self) -> None:
        rs = import_realsense()
        o = self.options
        context = rs.context()
        config = rs.config()
        where = ""
        if o.playback_file:
            if not os.path.exists(o.playback_file):
                raise DeviceNotFoundError(f"RealSense recording {o.playback_file} not found; fix options.playback_file "
                                          f"of driver {self.config.name!r}")
            config.enable_device_from_file(o.playback_file, repeat_playback=False)
            where = f"recording {o.playback_file}"
        else:
            serials = [d.get_info(rs.camera_info.serial_number) for d in context.query_devices()]
            wanted = self.config.serial
            if not serials or (wanted and wanted not in serials):
                found = ", ".join(serials) if serials else "none"
                raise DeviceNotFoundError(
                    f"RealSense {wanted or '(any)'} for {self.config.stream} not connected (found: {found}). Plug it "
                    f"into a USB 3 port, install the udev rules (README: 'udev rules') and run `capture-app doctor`.")
            if wanted:
                config.enable_device(wanted)
            fps = int(round(self.config.rate_hz))
            config.enable_stream(rs.stream.color, o.width, o.height, rs.format.rgb8, fps)
            if o.depth:
                config.enable_stream(rs.stream.depth, o.width, o.height, rs.format.z16, fps)
            where = f"camera {wanted}"
        pipeline = rs.pipeline(context)
        try:
            profile = pipeline.start(config)
        except RuntimeError as exc:
            raise DeviceNotFoundError(f"RealSense {where} could not start: {exc}. Check the cable, that no other "
                                      f"program uses the camera, and the configured resolution/fps.") from None
        device = profile.get_device()
        if o.playback_file:
            playback = device.as_playback()
            playback.set_real_time(o.real_time)
        self._pipeline = pipeline
        self._align = rs.align(rs.stream.color) if o.depth and o.align_depth_to_color else None
        self._silent_since = None
        info = {"serial": device.get_info(rs.camera_info.serial_number), "source": where}
        if device.supports(rs.camera_info.name):
            info["model"] = device.get_info(rs.camera_info.name)
        streams = {s.stream_type(): s for s in profile.get_streams()}
        if rs.stream.color in streams:
            info["color_intrinsics"] = _intrinsics(streams[rs.stream.color])
        if rs.stream.depth in streams:
            info["depth_intrinsics"] = _intrinsics(streams[rs.stream.depth])
            if rs.stream.color in streams:
                e = streams[rs.stream.depth].get_extrinsics_to(streams[rs.stream.color])
                info["T_color_depth"] = {"rotation_colmajor": list(e.rotation), "translation_m": list(e.translation)}
            for sensor in device.query_sensors():
                if sensor.is_depth_sensor():
                    self.depth_scale_m = sensor.as_depth_sensor().get_depth_scale()
            info["depth_scale_m"] = self.depth_scale_m
        self.device_info.update(info)

    def _next_frameset(self, timeout_ms: int):
        ok, frames = self._pipeline.try_wait_for_frames(timeout_ms)
        return frames if ok else None

    def read(self) -> Sample | None:
        if self.playback_finished:
            self._stop.wait(0.2)
            return None
        frames = self._next_frameset(200)
        arrival = now_ns()
        if frames is None:
            return self._on_silence(arrival)
        self._silent_since = None
        color = frames.get_color_frame()
        if not color or color.get_frame_number() == self._last_color_number:
            return None  # a frameset repeating a colour frame already published
        if self.options.depth:
            frames = self._matching_depth(frames, color)
        self._last_color_number = color.get_frame_number()
        t_device = int(round(color.get_timestamp() * 1e6))
        self._clock.add(t_device, arrival)
        arrays = {"color": np.asanyarray(color.get_data()).copy()}
        meta = {}
        if self.options.depth:
            aligned = self._align.process(frames) if self._align is not None else frames
            depth = aligned.get_depth_frame()
            if depth:
                arrays["depth"] = np.asanyarray(depth.get_data()).copy()
                meta = {"depth_scale_m": self.depth_scale_m,
                        "depth_dt_ms": float(depth.get_timestamp() - color.get_timestamp())}
        self.device_info["clock"] = self._clock.describe()
        return Sample(self._clock.to_host(t_device), arrays, t_device_ns=t_device, meta=meta)

    def _matching_depth(self, frames, color):
        """Framesets pair each new frame with the other stream's latest: wait briefly for the depth
        frame with the colour frame's timestamp, else keep the nearest."""
        best = frames
        for _ in range(2):
            depth = best.get_depth_frame()
            if depth and abs(depth.get_timestamp() - color.get_timestamp()) < 1e-3:
                return best
            following = self._next_frameset(50)
            if following is None or following.get_color_frame().get_frame_number() != color.get_frame_number():
                return best
            best = following
        return best

    def _on_silence(self, arrival: int) -> None:
        if self.options.playback_file:
            self.playback_finished = True
            self.device_info["playback"] = "finished"
            return None
        self._silent_since = self._silent_since or arrival
        if arrival - self._silent_since > 3_000_000_000:
            raise DeviceTimeoutError(f"RealSense {self.config.serial} for {self.config.stream} delivered no frame for "
                                     f"3 s; check the USB 3 cable and power, then it reconnects by itself")
        return None

    def close(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass
            self._pipeline = None
