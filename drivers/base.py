"""The driver base class: one named thread per device, publishing on the bus.

A subclass implements three hooks:

- ``open()``   connect to the device; raise a ``DeviceError`` saying what to do if it fails;
- ``read()``   block (briefly, <= ~0.2 s) for the next sample; return a ``Sample`` or None;
- ``close()``  release the device; must not raise.

The base class runs them on its thread, reconnects with exponential back-off after
any error, and publishes its health as a ``_status/<name>`` message twice a second,
so every error reaches the consumer (the recorder, the monitor, a log) whether the
driver runs in-process or in a process of its own. Nothing is swallowed silently.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from capture_app.bus.driver_status import DriverHealth
from capture_app.bus.message import STATUS_PREFIX
from capture_app.bus.sockets import BusPublisher
from capture_app.bus.wire import encode_message
from capture_app.episode.image_codec import encode_jpeg, is_raw_colour
from capture_app.episode.video_codec import VideoEncoder, VideoSettings
from capture_app.core.clock import NS_PER_S, now_ns
from capture_app.rig.config import DriverConfig
from capture_app.core.errors import CaptureError, ConfigError, SDKMissingError
from capture_app.core.streams import CAMERA_STREAMS
from drivers.batching import SampleBatcher

log = logging.getLogger(__name__)

STATUS_INTERVAL_NS = NS_PER_S // 2
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0


@dataclass
class Sample:
    """One sample as a driver produces it.

    ``t_capture_ns``: host monotonic time of capture (best estimate the driver has).
    ``seq``: the device's own sequence number if it has one (gaps = samples lost);
    None lets the base class number samples consecutively.
    """

    t_capture_ns: int
    arrays: dict[str, np.ndarray]
    tracking: str = "ok"
    stream: str | None = None  # None: the driver's main stream; else one of its extra_streams
    t_device_ns: int | None = None
    seq: int | None = None
    encodings: dict[str, str] | None = None
    decoded_shapes: dict[str, tuple[int, ...]] | None = None
    meta: dict[str, Any] | None = None


@dataclass(frozen=True)
class NoOptions:
    """For drivers without options of their own."""


def import_sdk(module: str, how_to_install: str):
    """Import a device SDK module, or raise SDKMissingError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SDKMissingError(f"{module} cannot be imported ({exc}); {how_to_install}") from None


def parse_options(options_cls, config: DriverConfig):
    """Build a driver's options dataclass from ``config.options``; errors name the field."""
    known = {f.name for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(config.options) - known)
    if unknown:
        raise ConfigError(f"driver {config.name!r} ({config.type}): unknown option(s) {unknown}; allowed: {sorted(known)}")
    try:
        return options_cls(**config.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"driver {config.name!r} ({config.type}): {exc}") from None


class Driver:
    """Base class of every device driver (real, simulated, replay)."""

    Options = NoOptions
    isolated = False  # True: always run in a process of its own (an SDK crash must not take the app down)

    def __init__(self, config: DriverConfig, bus_endpoint: str, *, bind: bool = False,
                 context: zmq.Context | None = None, curve=None, jpeg_quality: int | None = None,
                 video: dict[str, VideoSettings] | None = None, batch_ms: float = 0.0):
        self.config = config
        self.jpeg_quality = jpeg_quality  # set: raw colour frames are published as JPEG of this quality
        self.video = video or {}          # stream -> settings: its raw colour frames are published as H.264
        self._video_encoders: dict[str, VideoEncoder] = {}
        self.options = parse_options(self.Options, config)
        self._bus_endpoint = bus_endpoint
        self._bind = bind
        self._context = context
        self._curve = curve
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._health = DriverHealth(name=config.name, stream=config.stream, streams=list(config.streams),
                                    expected_rate_hz=float(config.rate_hz))
        self._recent_ns: deque[int] = deque(maxlen=2048)
        self._last_seq: dict[str, int] = {}
        self._next_seq: dict[str, int] = {}
        self._status_seq = 0
        self.sender = int.from_bytes(os.urandom(6), "big")  # this instance's id on the bus
        self.device_info: dict = {"serial": config.serial}
        # batch_ms > 0: pose and keypoint samples go out in batches held at most this long (drivers/batching.py)
        self._batcher = SampleBatcher(int(batch_ms * 1e6), self.sender) if batch_ms > 0 else None

    # --- hooks for subclasses -------------------------------------------------
    def open(self) -> None:
        """Connect to the device. Raise a DeviceError (with a fix) on failure."""

    def read(self) -> Sample | None:
        """Block briefly for the next sample; None when there is none yet."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the device. Must not raise."""

    # --- lifecycle ------------------------------------------------------------
    def start(self) -> "Driver":
        """Start the driver thread (named ``driver-<name>``)."""
        if self._thread is not None:
            raise RuntimeError(f"driver {self.config.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"driver-{self.config.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("driver %s did not stop within %.1f s", self.config.name, timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "Driver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def health(self) -> DriverHealth:
        """A consistent copy of the current health figures."""
        with self._lock:
            health = dataclasses.replace(self._health)
            health.published = {stream: list(v) for stream, v in self._health.published.items()}
            health.encoder_cpu = {stream: list(v) for stream, v in self._health.encoder_cpu.items()}
            recent = list(self._recent_ns)
        t = now_ns()
        window = [x for x in recent if t - x <= NS_PER_S]
        health.rate_hz = float(len(window))
        health.device = dict(self.device_info)
        return health

    # --- the thread -----------------------------------------------------------
    def _set(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._health, key, value)

    def _record_error(self, exc: BaseException) -> None:
        text = str(exc) if isinstance(exc, CaptureError) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._health.errors += 1
            self._health.last_error = text
        if isinstance(exc, CaptureError):
            log.warning("driver %s: %s", self.config.name, text)
        else:
            log.exception("driver %s: unexpected error", self.config.name, exc_info=exc)

    def _run(self) -> None:
        try:
            publisher = BusPublisher(self._bus_endpoint, bind=self._bind, context=self._context, curve=self._curve)
        except zmq.ZMQError as exc:  # a busy port, a path that cannot be created: this driver cannot run
            how = "bind" if self._bind else "connect to"
            self._record_error(CaptureError(f"cannot {how} {self._bus_endpoint}: {exc}; is another process using "
                                            f"it? Choose another endpoint"))
            self._set(state="failed")
            return
        backoff = BACKOFF_START_S
        next_status_ns = 0
        try:
            while not self._stop.is_set():
                self._set(state="connecting")
                try:
                    self.open()
                    self._set(state="running")
                    backoff = BACKOFF_START_S
                    while not self._stop.is_set():
                        sample = self.read()
                        if sample is not None:
                            self._publish(publisher, sample)
                        if self._batcher is not None:
                            for frames in self._batcher.due(now_ns()):
                                publisher.send_frames(frames)
                        if now_ns() >= next_status_ns:
                            next_status_ns = now_ns() + STATUS_INTERVAL_NS
                            self._publish_status(publisher)
                except (SDKMissingError, ConfigError) as exc:
                    self._record_error(exc)
                    self._set(state="failed")
                    while True:  # retrying cannot help; keep telling consumers why until stopped
                        self._publish_status(publisher)
                        if self._stop.wait(STATUS_INTERVAL_NS / NS_PER_S):
                            return
                except Exception as exc:  # any device failure: report, back off, retry
                    self._record_error(exc)
                    self._set(state="reconnecting")
                    self._publish_status(publisher)
                finally:
                    try:
                        if self._batcher is not None:  # what was read goes out before the device closes
                            for frames in self._batcher.drain():
                                publisher.send_frames(frames)
                    except Exception as exc:
                        self._record_error(exc)
                    try:
                        self.close()
                    except Exception as exc:
                        self._record_error(exc)
                if not self._stop.wait(backoff):
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
            self._set(state="stopped")
            self._publish_status(publisher)
        finally:
            time.sleep(0.01)  # let the last status leave before the socket closes
            publisher.close()

    def _encode_colour(self, sample: Sample, stream: str) -> Sample:
        """The sample to publish, its raw colour frame compressed here, in the driver's thread and process (the
        encoders release the GIL), so the recorder only moves its bytes: H.264 for a stream stored as video,
        else JPEG. A copy: the device's own Sample keeps its raw frame (a simulated camera repeats it)."""
        colour = sample.arrays.get("color")
        encodings = dict(sample.encodings or {})
        if colour is None or encodings.get("color", "raw") != "raw" or not is_raw_colour(colour):
            return sample
        settings = self.video.get(stream)
        meta = sample.meta
        cpu_start_ns = time.thread_time_ns()  # the encoders' own CPU (the floor of bench/record_rig.py)
        if settings is not None:
            encoder = self._video_encoders.get(stream)
            if encoder is None or (encoder.height, encoder.width) != colour.shape[:2]:
                encoder = self._video_encoders[stream] = VideoEncoder(colour.shape[1], colour.shape[0], settings)
                self.device_info["video_encoder"] = encoder.codec_name  # stored as the stream's `device` attribute
                if encoder.skipped:
                    self.device_info["video_encoder_skipped"] = dict(encoder.skipped)
            encoded, keyframe, number = encoder.encode(colour)
            encodings["color"] = "h264"
            meta = {**(meta or {}), "keyframe": keyframe, "packet": number}
        elif self.jpeg_quality is not None:
            encoded = encode_jpeg(colour, self.jpeg_quality)
            encodings["color"] = "jpeg"
        else:
            return sample
        cpu_s = (time.thread_time_ns() - cpu_start_ns) / 1e9
        with self._lock:
            frames, total_s = self._health.encoder_cpu.get(stream, (0, 0.0))
            self._health.encoder_cpu[stream] = [frames + 1, total_s + cpu_s]
        return dataclasses.replace(sample, arrays={**sample.arrays, "color": encoded}, encodings=encodings, meta=meta,
                                   decoded_shapes={**(sample.decoded_shapes or {}), "color": tuple(colour.shape)})

    def _publish(self, publisher: BusPublisher, sample: Sample) -> None:
        stream = sample.stream or self.config.stream
        if self.jpeg_quality is not None or stream in self.video:
            sample = self._encode_colour(sample, stream)
        seq = sample.seq
        if seq is None:
            seq = self._next_seq.get(stream, 0)
        self._next_seq[stream] = seq + 1
        last = self._last_seq.get(stream)
        lost = 0 if last is None else max(0, seq - last - 1)
        self._last_seq[stream] = seq
        if self._batcher is not None and stream not in CAMERA_STREAMS and all(
                e == "raw" for e in (sample.encodings or {}).values()):
            for frames in self._batcher.add(stream, seq, sample.t_capture_ns, sample.t_device_ns, sample.tracking,
                                            sample.arrays, sample.meta, now_ns()):
                publisher.send_frames(frames)
        else:
            publisher.publish(
                stream, seq, sample.t_capture_ns, sample.arrays,
                tracking=sample.tracking, t_device_ns=sample.t_device_ns, encodings=sample.encodings,
                decoded_shapes=sample.decoded_shapes, meta=sample.meta, sender=self.sender,
            )
        with self._lock:
            self._health.samples += 1
            self._health.lost += lost
            self._health.published[stream] = [self.sender, int(seq)]
            self._health.tracking = sample.tracking
            self._health.last_sample_age_s = 0.0
            self._recent_ns.append(now_ns())

    def _publish_status(self, publisher: BusPublisher) -> None:
        health = self.health()
        if self._recent_ns:
            health.last_sample_age_s = (now_ns() - self._recent_ns[-1]) / NS_PER_S
        self._status_seq += 1
        publisher.send_frames(encode_message(
            STATUS_PREFIX + self.config.name, self._status_seq, now_ns(), {}, meta=health.to_dict(),
            sender=self.sender))  # the same id as its samples': a receiver ties its health to them
