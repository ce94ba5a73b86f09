"""RealSense D435 (top camera) through pyrealsense2: colour + depth, or a recording played back.

A live camera is chosen by serial (rig config ``serial``); ``playback_file`` plays a
``.bag`` / ``.db3`` recording through the same SDK device API instead. Both sensors are
started with a callback that copies each frame out at once (stamping the host arrival
time), so no SDK frame is held and none is dropped by a queue of the SDK's; each colour
frame is then paired with the depth frame nearest in device time (``rgbd_pairing``) and
published once, with the colour frame number as ``seq`` (a dropped frame is a gap).

Depth is published as the sensor gives it (not aligned to colour: alignment resamples and
zeroes 3-5 % of the pixels); the depth and colour intrinsics, the depth-to-colour
extrinsics and the depth scale are device info, so any tool can align it exactly later.

Time: ``get_timestamp()`` is in milliseconds, in the domain ``get_frame_timestamp_domain()``
names (hardware_clock, system_time or global_time), stored as device info. Device times are
mapped onto the host clock (``ClockMapper``), whose fit and residual are device info too.

A live camera's frames wait in a queue of at most ``LIVE_BUFFER`` frames between the SDK's thread and
``read`` (more are dropped and counted); after a stall ``read`` gets the whole backlog at once, so the
pairer keeps as many depth frames as that queue can hand over: every colour frame of a backlog finds
its depth. A camera that delivers no frame for ``timeout_ms`` (option, default 3000 ms) raises
``DeviceTimeoutError`` and is reconnected.

Playback: the recording is read as fast as it is consumed (``set_real_time(False)``) and,
with ``real_time = true``, paced by the frames' own timestamps, so a recording fed faster
than real time still plays at its recorded pace.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from capture_app.core.clock import NS_PER_S, now_ns, sleep_until_ns
from capture_app.core.clock_mapping import ClockMapper
from capture_app.core.errors import DeviceNotFoundError, DeviceTimeoutError
from drivers.base import Driver, Sample, import_sdk
from drivers.rgbd_pairing import Frame, FramePairer

INSTALL_HINT = "apt-get install -y libusb-1.0-0 && pip install pyrealsense2 (or: pip install 'capture-app[realsense]')"
PLAYBACK_BUFFER = 8   # frames copied ahead of the consumer when playing a file (the SDK waits for us)
LIVE_BUFFER = 64      # frames buffered from a live camera before new ones are dropped (and counted)
PLAYBACK_NEVER_TIMES_OUT = 1 << 62


def import_realsense():
    """The pyrealsense2 module, or SDKMissingError saying how to install it."""
    return import_sdk("pyrealsense2", INSTALL_HINT)


@dataclass(frozen=True)
class RealSenseOptions:
    width: int = 640
    height: int = 480
    depth: bool = True
    playback_file: str = ""
    real_time: bool = True      # playback: pace by the recorded timestamps (false: as fast as consumed)
    timeout_ms: int = 3000      # live camera: no frame for this long -> DeviceTimeoutError, reconnect

    def __post_init__(self):
        if not isinstance(self.timeout_ms, int) or isinstance(self.timeout_ms, bool) or self.timeout_ms <= 0:
            raise ValueError(f"option timeout_ms = {self.timeout_ms!r}: expected a positive number of milliseconds")


def _intrinsics(profile) -> dict:
    k = profile.as_video_stream_profile().get_intrinsics()
    return {"width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy, "cx": k.ppx, "cy": k.ppy,
            "distortion": list(k.coeffs), "model": str(k.model)}


class RealSenseCamera(Driver):
    """The top camera; type ``realsense``."""

    Options = RealSenseOptions

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        self._rs = None
        self._sensors = []
        self._playback = None
        self._frames: deque[tuple[str, Frame]] = deque()
        self._frames_cond = threading.Condition()
        self._closing = False
        self._pairer = self._live_pairer()
        self._ready: deque = deque()
        self._clock = ClockMapper()
        self._silent_since = None
        self._seq_offset: int | None = None
        self._last_frame_seq: int | None = None
        self._pace_origin: tuple[int, float] | None = None
        self.playback_finished = False
        self.depth_scale_m = 0.001
        self.dropped_frames = 0      # frames a live camera delivered faster than we could take them
        self.unpaired_colors = 0     # colour frames published without a depth frame (depth dropped)

    # --- open -------------------------------------------------------------------------
    def open(self) -> None:
        rs = self._rs = import_realsense()
        o = self.options
        context = rs.context()
        if o.playback_file:
            if not os.path.exists(o.playback_file):
                raise DeviceNotFoundError(f"RealSense recording {o.playback_file} not found; fix options.playback_file "
                                          f"of driver {self.config.name!r}")
            try:
                device = context.load_device(o.playback_file)
            except RuntimeError as exc:
                raise DeviceNotFoundError(f"RealSense recording {o.playback_file} cannot be played: {exc}; record it "
                                          f"again or fix options.playback_file") from None
            self._playback = device.as_playback()
            self._playback.set_real_time(False)  # we pace by the frames' own timestamps
            # a file delivers every frame in order: a colour frame waits for its depth frame however long
            # the consumer takes (host time says nothing about a file), never for a timeout
            self._pairer = FramePairer(self.config.rate_hz, wait_ns=PLAYBACK_NEVER_TIMES_OUT,
                                       depth_history=PLAYBACK_BUFFER)
            where = f"recording {o.playback_file}"
        else:
            device = self._find_camera(rs, context)
            where = f"camera {self.config.serial or '(any)'}"
        profiles = self._choose_profiles(rs, device)
        self._closing = False
        self._frames.clear()
        self._pace_origin = None
        self._seq_offset = None
        try:
            for sensor, profile in profiles:
                sensor.open(profile)
                self._sensors.append(sensor)
            if self._playback is not None:  # start every sensor before the file plays: no frame is missed
                self._playback.pause()
            for sensor in self._sensors:
                sensor.start(self._on_frame)
            if self._playback is not None:
                self._playback.resume()
        except RuntimeError as exc:
            raise DeviceNotFoundError(f"RealSense {where} could not start: {exc}. Check the cable, that no other "
                                      f"program uses the camera, and the configured resolution/fps.") from None
        self._silent_since = None
        self._describe(rs, device, where, dict((p.stream_type(), p) for _, p in profiles))

    def _find_camera(self, rs, context):
        devices = {d.get_info(rs.camera_info.serial_number): d for d in context.query_devices()}
        wanted = self.config.serial
        if not devices or (wanted and wanted not in devices):
            found = ", ".join(devices) if devices else "none"
            raise DeviceNotFoundError(
                f"RealSense {wanted or '(any)'} for {self.config.stream} not connected (found: {found}). Plug it "
                f"into a USB 3 port, install the udev rules (README: 'udev rules') and run `capture-app doctor`.")
        return devices[wanted] if wanted else next(iter(devices.values()))

    def _choose_profiles(self, rs, device) -> list:
        """(sensor, profile) for colour (rgb8) and, if wanted, depth (z16) at the configured size and rate;
        a recording's own profiles when playing one."""
        o = self.options
        wanted = {rs.stream.color: rs.format.rgb8}
        if o.depth:
            wanted[rs.stream.depth] = rs.format.z16
        chosen = {}
        for sensor in device.query_sensors():
            for profile in sensor.get_stream_profiles():
                kind = profile.stream_type()
                if kind not in wanted or kind in chosen:
                    continue
                video = profile.as_video_stream_profile()
                if self._playback is None and (profile.format() != wanted[kind] or video.width() != o.width or
                                               video.height() != o.height or
                                               profile.fps() != int(round(self.config.rate_hz))):
                    continue
                chosen[kind] = (sensor, profile)
        missing = [str(k) for k in wanted if k not in chosen]
        if missing:
            raise DeviceNotFoundError(
                f"RealSense for {self.config.stream} offers no {', '.join(missing)} profile at {o.width}x{o.height} "
                f"{self.config.rate_hz:g} Hz; fix width/height/rate_hz of driver {self.config.name!r}")
        return list(chosen.values())

    def _describe(self, rs, device, where: str, profiles: dict) -> None:
        info = {"serial": device.get_info(rs.camera_info.serial_number), "source": where}
        if device.supports(rs.camera_info.name):
            info["model"] = device.get_info(rs.camera_info.name)
        if device.supports(rs.camera_info.firmware_version):
            info["firmware"] = device.get_info(rs.camera_info.firmware_version)
        if rs.stream.color in profiles:
            info["color_intrinsics"] = _intrinsics(profiles[rs.stream.color])
        if rs.stream.depth in profiles:
            info["depth_intrinsics"] = _intrinsics(profiles[rs.stream.depth])
            info["depth_aligned_to_color"] = False
            if rs.stream.color in profiles:
                e = profiles[rs.stream.depth].get_extrinsics_to(profiles[rs.stream.color])
                # librealsense rs2_extrinsics.rotation is column-major
                info["T_color_depth"] = {"rotation_colmajor": list(e.rotation), "translation_m": list(e.translation)}
            for sensor in device.query_sensors():
                if sensor.is_depth_sensor():
                    self.depth_scale_m = sensor.as_depth_sensor().get_depth_scale()
            info["depth_scale_m"] = self.depth_scale_m
        self.device_info.update(info)

    # --- the SDK's thread -----------------------------------------------------------------
    def _on_frame(self, frame) -> None:
        """SDK callback: copy the frame out, stamp its arrival, queue it. Never raises."""
        try:
            arrival = now_ns()
            kind = "color" if frame.get_profile().stream_type() == self._rs.stream.color else "depth"
            copied = Frame(frame.get_frame_number(), frame.get_timestamp(), arrival,
                           np.asanyarray(frame.get_data()).copy(), frame.get_frame_timestamp_domain().name)
            with self._frames_cond:
                if self._playback is not None:  # a file waits for us: back-pressure, nothing dropped
                    while len(self._frames) >= PLAYBACK_BUFFER and not self._closing:
                        self._frames_cond.wait(0.1)
                elif len(self._frames) >= LIVE_BUFFER:
                    self.dropped_frames += 1
                    return
                self._frames.append((kind, copied))
                self._frames_cond.notify_all()
        except Exception as exc:  # kept for the health status; raising into the SDK would abort it
            self.device_info["callback_error"] = f"{type(exc).__name__}: {exc}"

    # --- read -----------------------------------------------------------------------------
    def read(self) -> Sample | None:
        if self.playback_finished:
            self._stop.wait(0.2)
            return None
        if not self._ready:
            self._collect(wait_s=0.2)
        if not self._ready:
            return self._on_silence(now_ns())
        self._silent_since = None
        return self._sample(*self._ready.popleft())

    def _collect(self, wait_s: float) -> None:
        with self._frames_cond:
            if not self._frames:
                self._frames_cond.wait(wait_s)
            frames = list(self._frames)
            self._frames.clear()
            self._frames_cond.notify_all()
        for kind, frame in frames:
            (self._pairer.add_color if kind == "color" else self._pairer.add_depth)(frame)
        ended = self._playback is not None and not frames and self._playback_stopped()
        self._ready.extend(self._pairer.ready(now_ns(), flush=ended))
        if ended and not self._ready:
            self.playback_finished = True
            self.device_info["playback"] = "finished"

    def _playback_stopped(self) -> bool:
        return self._playback.current_status() == self._rs.playback_status.stopped

    def _sample(self, color: Frame, depth: Frame | None) -> Sample:
        arrival = self._pace(color) if self._playback is not None and self.options.real_time else color.arrival_ns
        t_device = int(round(color.device_ms * 1e6))
        self._clock.add(t_device, arrival)
        self.device_info["clock"] = self._clock.describe()
        self.device_info["timestamp_domain"] = f"realsense:{color.domain}"
        arrays = {"color": color.data}
        tracking, meta = "ok", {}
        if self.options.depth:
            if depth is None:  # the depth frame was dropped: 0 is the SDK's "no depth" value
                self.unpaired_colors += 1
                self.device_info["unpaired_colors"] = self.unpaired_colors
                arrays["depth"] = np.zeros(color.data.shape[:2], np.uint16)
                tracking, meta = "degraded", {"depth_missing": True}
            else:
                arrays["depth"] = depth.data
                meta = {"depth_dt_ms": float(depth.device_ms - color.device_ms)}
            meta["depth_scale_m"] = self.depth_scale_m
        if self.dropped_frames:
            self.device_info["dropped_frames"] = self.dropped_frames
        return Sample(self._clock.to_host(t_device), arrays, t_device_ns=t_device, seq=self._seq(color.number),
                      tracking=tracking, meta=meta)

    def _seq(self, frame_number: int) -> int:
        """The colour frame number, continued across reconnects (which restart the camera's count)."""
        if self._seq_offset is None:
            self._seq_offset = 0 if self._last_frame_seq is None else self._last_frame_seq + 1 - frame_number
        self._last_frame_seq = max(self._last_frame_seq if self._last_frame_seq is not None else -1, frame_number + self._seq_offset)
        return frame_number + self._seq_offset

    def _pace(self, color: Frame) -> int:
        """Wait until this recorded frame's time comes, relative to the first frame; its host time."""
        if self._pace_origin is None:
            self._pace_origin = (now_ns(), color.device_ms)
        start_ns, start_ms = self._pace_origin
        due = start_ns + int((color.device_ms - start_ms) * 1e6)
        sleep_until_ns(due, self._stop)
        return now_ns()

    def _live_pairer(self) -> FramePairer:
        """A live camera's pairer: it keeps as many depth frames as the queue can hand over in one go (a backlog
        after a stall), so no colour frame of a backlog loses its depth to the pairer's own limit."""
        return FramePairer(self.config.rate_hz, depth_history=LIVE_BUFFER)

    def _on_silence(self, t: int) -> None:
        if self._playback is not None:
            return None
        self._silent_since = self._silent_since or t
        if t - self._silent_since > self.options.timeout_ms * 1_000_000:
            raise DeviceTimeoutError(f"RealSense {self.config.serial} for {self.config.stream} delivered no frame for "
                                     f"{self.options.timeout_ms} ms (option timeout_ms); check the USB 3 cable and "
                                     f"power, then it reconnects by itself")
        return None

    def close(self) -> None:
        with self._frames_cond:
            self._closing = True
            self._frames_cond.notify_all()
        for sensor in self._sensors:
            try:
                sensor.stop()
            except RuntimeError:
                pass
        for sensor in self._sensors:
            try:
                sensor.close()
            except RuntimeError:
                pass
        self._sensors = []
        self._playback = None
        self._pairer = self._live_pairer()  # live cameras time out a missing depth frame
        self._ready.clear()
