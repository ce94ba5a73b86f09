"""The rig config: which drivers run, their streams, rates and endpoints.

A TOML file (``docs/rig-config.md``); the embedded default is the simulated rig
(``capture_app/configs/sim_rig.toml``). Everything is validated on load and an error
names the file, the field, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from capture_app.episode.quality import QualityThresholds
from capture_app.core.errors import ConfigError
from capture_app.core.streams import CAMERA_STREAMS, STREAM_KINDS
from capture_app.core.values import checked_endpoint
from capture_app.rig.handsfree_config import HandsfreeConfig, parse_handsfree
from capture_app.rig.drift_config import DriftConfig

CONFIG_VERSION = 1
DEFAULT_SIM_CONFIG = "sim_rig.toml"
# [bus] batch_ms when the rig config does not say: pose and keypoint samples held up to 40 ms per batch message.
# Against 20 ms it halves those messages and cuts the recorder's CPU by ~12 % (docs/performance.md, 2026-12-06
# third session); the synced rows are unchanged, since the synchronizer waits [sync] delay_ms (100) anyway.
DEFAULT_BATCH_MS = 40.0


def _fail(where: str, name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{where}: field {name!r} = {value!r} is invalid; allowed: {allowed}")


def _check_positive(where: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise _fail(where, name, value, "a number >= 0" if allow_zero else "a number > 0")


@dataclass(frozen=True)
class DriverConfig:
    """One driver: ``type`` picks the class from the driver registry.

    ``endpoint`` empty means the driver runs as a thread inside the app; otherwise the
    app connects to that endpoint where ``capture-app driver NAME --publish`` binds.
    ``options`` are the driver type's own settings, validated by that class.
    """

    name: str
    type: str
    stream: str
    rate_hz: float
    serial: str = ""
    endpoint: str = ""
    extra_streams: tuple = ()
    options: dict = field(default_factory=dict)
    clock_sync: str = "auto"  # auto: query the driver's clock service only for tcp endpoints off loopback

    @property
    def streams(self) -> tuple[str, ...]:
        """Every stream this driver publishes (a Manus session delivers both gloves)."""
        return (self.stream, *self.extra_streams)

    def __post_init__(self):
        where = f"driver {self.name!r}"
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise _fail("driver", "name", self.name, "an identifier such as 'left_glove'")
        if self.stream not in STREAM_KINDS:
            raise _fail(where, "stream", self.stream, ", ".join(STREAM_KINDS))
        object.__setattr__(self, "extra_streams", tuple(self.extra_streams))
        for extra in self.extra_streams:
            if extra not in STREAM_KINDS or extra == self.stream:
                raise _fail(where, "extra_streams", list(self.extra_streams), "other stream names: " + ", ".join(STREAM_KINDS))
        _check_positive(where, "rate_hz", self.rate_hz)
        if self.endpoint:
            try:
                checked_endpoint("endpoint", self.endpoint)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc} (or '' for a driver run by the app)") from None
        if not isinstance(self.options, dict):
            raise _fail(where, "options", self.options, "a table")
        if self.clock_sync not in ("auto", "on", "off"):
            raise _fail(where, "clock_sync", self.clock_sync, "auto, on or off")

    @property
    def needs_clock_sync(self) -> bool:
        """Whether this driver's stamps come from another clock (another host) and need the clock service."""
        from capture_app.bus.remote import is_loopback
        if self.clock_sync != "auto":
            return self.clock_sync == "on"
        return bool(self.endpoint) and not is_loopback(self.endpoint)


@dataclass(frozen=True)
class SyncConfig:
    """Synchronizer settings; times in milliseconds."""

    rate_hz: float = 20.0
    delay_ms: float = 100.0
    max_interpolation_gap_ms: float = 60.0
    max_extrapolation_ms: float = 10.0
    max_image_offset_ms: float = 40.0
    realtime_priority: int = 10  # SCHED_FIFO priority of the ticking thread where permitted (0 = normal scheduling)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name != "realtime_priority":
                _check_positive("[sync]", f.name, getattr(self, f.name), allow_zero=f.name == "max_extrapolation_ms")
        if not 1 <= self.rate_hz <= 60:
            raise _fail("[sync]", "rate_hz", self.rate_hz, "1 to 60")
        if not isinstance(self.realtime_priority, int) or not 0 <= self.realtime_priority <= 99:
            raise _fail("[sync]", "realtime_priority", self.realtime_priority, "an integer 0..99 (0 = off)")


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


@dataclass(frozen=True)
class WriterConfig:
    """Episode writer settings."""

    flush_interval_s: float = 0.5
    queue_size: int = 12000  # samples queued for the writer, shared by the streams in proportion to their rates
    jpeg_quality: int = 90
    encode_in: str = "driver"  # driver: local drivers JPEG their colour frames before publishing; writer: the writer does
    video_streams: tuple = ()  # camera streams stored as H.264 video instead of JPEG (encoded in their driver)
    video_crf: int = 26
    video_preset: str = "superfast"
    video_keyframe_interval: int = 10
    video_encoder: str = "auto"  # auto: NVIDIA's h264_nvenc where it opens, else libx264; or either by name

    def __post_init__(self):
        _check_positive("[writer]", "flush_interval_s", self.flush_interval_s)
        if not isinstance(self.video_streams, (list, tuple)) or not all(
                s in CAMERA_STREAMS for s in self.video_streams):
            raise _fail("[writer]", "video_streams", self.video_streams, f"a list of camera streams from {list(CAMERA_STREAMS)}")
        object.__setattr__(self, "video_streams", tuple(self.video_streams))
        if self.video_streams and self.encode_in != "driver":
            raise _fail("[writer]", "video_streams", list(self.video_streams),
                        "empty when encode_in = 'writer': video is encoded in each camera's driver")
        if not isinstance(self.video_crf, int) or not 0 <= self.video_crf <= 51:
            raise _fail("[writer]", "video_crf", self.video_crf, "an integer 0..51 (x264 quality; lower is better)")
        if self.video_preset not in X264_PRESETS:
            raise _fail("[writer]", "video_preset", self.video_preset, f"one of {list(X264_PRESETS)}")
        if not isinstance(self.video_keyframe_interval, int) or not 1 <= self.video_keyframe_interval <= 300:
            raise _fail("[writer]", "video_keyframe_interval", self.video_keyframe_interval, "an integer 1..300 (frames)")
        from capture_app.episode.video_codec import VIDEO_ENCODERS  # here: the codec module imports OpenCV
        if self.video_encoder not in VIDEO_ENCODERS:
            raise _fail("[writer]", "video_encoder", self.video_encoder,
                        f"one of {list(VIDEO_ENCODERS)} (auto: NVENC where an NVIDIA GPU has it, else libx264)")
        if self.encode_in not in ("driver", "writer"):
            raise _fail("[writer]", "encode_in", self.encode_in,
                        "'driver' (each local driver encodes its colour frames, the default) or 'writer'")
        if self.flush_interval_s > 1.0:
            raise _fail("[writer]", "flush_interval_s", self.flush_interval_s, "0 < value <= 1 (data must be on disk within a second)")
        if not isinstance(self.queue_size, int) or self.queue_size < 10:
            raise _fail("[writer]", "queue_size", self.queue_size, "an integer >= 10")
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            raise _fail("[writer]", "jpeg_quality", self.jpeg_quality, "an integer 1..100")


@dataclass(frozen=True)
class UploadConfig:
    """``[upload]``: where finished episodes go (docs/upload.md). ``destination``: an fsspec URL (``s3://bucket/prefix``,
    ``gs://...``, ``file:///mnt/share``, a path); empty: no uploads. ``storage_options``: passed to fsspec (e.g.
    ``{ client_kwargs = { endpoint_url = "http://minio:9000" } }``; credentials come from the backend's usual
    environment, never from this file). ``keep_local_gb``: after an episode is verified on the destination, the
    oldest verified local episodes are deleted while the episodes folder holds more than this many GB; a negative
    value (the default) never deletes. ``interval_s``: between upload passes of ``serve``. ``max_mb_per_s``:
    bandwidth cap (0: none). ``chunk_mb``: bytes read and written per step (progress and state granularity)."""

    destination: str = ""
    storage_options: dict = field(default_factory=dict)
    keep_local_gb: float = -1.0
    interval_s: float = 60.0
    max_mb_per_s: float = 0.0
    chunk_mb: float = 8.0
    verify: str = "sha256"  # sha256: read the object back and hash it; size: compare sizes only

    def __post_init__(self):
        if not isinstance(self.destination, str):
            raise _fail("[upload]", "destination", self.destination, "an fsspec URL such as s3://bucket/rigs")
        if not isinstance(self.storage_options, dict):
            raise _fail("[upload]", "storage_options", self.storage_options, "a table of fsspec options")
        for name in ("keep_local_gb", "interval_s", "max_mb_per_s", "chunk_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise _fail("[upload]", name, value, "a number")
        _check_positive("[upload]", "interval_s", self.interval_s)
        _check_positive("[upload]", "chunk_mb", self.chunk_mb)
        _check_positive("[upload]", "max_mb_per_s", self.max_mb_per_s, allow_zero=True)
        if self.verify not in ("sha256", "size"):
            raise _fail("[upload]", "verify", self.verify, "sha256 (read back and hash) or size")


@dataclass(frozen=True)
class RigConfig:
    """A whole rig: drivers plus bus, sync and writer settings, and where it came from."""

    name: str
    drivers: tuple[DriverConfig, ...]
    bus_endpoint: str = "inproc://capture-bus"
    bus_keys_dir: str = ""
    bus_batch_ms: float | None = None  # drivers send pose and keypoint samples in batches held at most this long, ms;
                                       # 0: one by one; None: DEFAULT_BATCH_MS, or half [sync] delay_ms if that is less
    sync: SyncConfig = field(default_factory=SyncConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    handsfree: HandsfreeConfig = field(default_factory=HandsfreeConfig)  # [handsfree] (rig/handsfree_config.py)
    calibration_path: str = ""
    sim_seed: int = 0
    sim_timing: str = "realistic"  # [sim] timing: realistic (each device's stamp model) | exact (perfect stamps)
    drivers_in: str = "process"
    upload: UploadConfig = field(default_factory=UploadConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)  # [drift] (rig/drift_config.py)
    source_text: str = ""
    source_path: str = "<embedded>"

    def __post_init__(self):
        if self.sim_timing not in ("realistic", "exact"):
            raise _fail(f"{self.source_path}: [sim]", "timing", self.sim_timing, "realistic or exact")
        if self.drivers_in not in ("process", "threads"):
            raise _fail(f"{self.source_path}: [rig]", "drivers_in", self.drivers_in,
                        "'process' (local drivers in a child process, the default) or 'threads'")
        names = [d.name for d in self.drivers]
        if len(set(names)) != len(names):
            raise ConfigError(f"{self.source_path}: driver names must be unique, got {names}")
        streams = [s for d in self.drivers for s in d.streams]
        duplicates = sorted({s for s in streams if streams.count(s) > 1})
        if duplicates:
            raise ConfigError(f"{self.source_path}: stream(s) {duplicates} are produced by more than one driver")
        if not self.drivers:
            raise ConfigError(f"{self.source_path}: no [[drivers]] listed; a rig needs at least one")
        most = min(50.0, self.sync.delay_ms / 2)
        batch = min(DEFAULT_BATCH_MS, most) if self.bus_batch_ms is None else self.bus_batch_ms
        if isinstance(batch, bool) or not isinstance(batch, (int, float)) or not 0 <= batch <= most:
            raise _fail(f"{self.source_path}: [bus]", "batch_ms", batch,
                        f"milliseconds 0..{most:g}: at most 50 and half of [sync] delay_ms = {self.sync.delay_ms:g}, "
                        f"or samples held in batches arrive after their live rows (0 sends every sample alone)")
        object.__setattr__(self, "bus_batch_ms", float(batch))

    @property
    def is_simulated(self) -> bool:
        return any(d.type.startswith("sim_") for d in self.drivers)

    def driver(self, name: str) -> DriverConfig:
        for d in self.drivers:
            if d.name == name:
                return d
        raise ConfigError(f"{self.source_path}: no driver named {name!r}; configured: {[d.name for d in self.drivers]}")


def _build(cls, table: Any, where: str):
    if table is None:
        return cls()
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    return cls(**table)


def parse_config(text: str, source_path: str = "<string>") -> RigConfig:
    """Parse and validate rig-config TOML text. Raises ConfigError naming the field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source_path}: not valid TOML ({exc}); fix the syntax at that line") from None
    try:
        version = data.get("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise _fail(source_path, "version", version, str(CONFIG_VERSION))
        drivers = []
        for i, table in enumerate(data.get("drivers", [])):
            where = f"{source_path}: [[drivers]] #{i + 1}"
            missing = [k for k in ("name", "type", "stream", "rate_hz") if k not in table]
            if missing:
                raise ConfigError(f"{where}: missing field(s) {missing}")
            drivers.append(_build(DriverConfig, table, where))
        bus = data.get("bus", {})
        sim = data.get("sim", {})
        rig = data.get("rig", {})
        try:
            checked_endpoint("[bus] endpoint", bus.get("endpoint", "inproc://capture-bus"))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return RigConfig(
            name=str(data.get("name", Path(source_path).stem)),
            drivers=tuple(drivers),
            bus_endpoint=str(bus.get("endpoint", "inproc://capture-bus")),
            bus_keys_dir=str(bus.get("keys", "")),
            bus_batch_ms=bus.get("batch_ms"),
            sync=_build(SyncConfig, data.get("sync"), f"{source_path}: [sync]"),
            writer=_build(WriterConfig, data.get("writer"), f"{source_path}: [writer]"),
            quality=_build(QualityThresholds, data.get("quality"), f"{source_path}: [quality]"),
            handsfree=parse_handsfree(data.get("handsfree"), f"{source_path}: [handsfree]",
                                      Path(source_path).parent if Path(source_path).is_file() else None),
            calibration_path=str(data.get("calibration", {}).get("path", "")),
            sim_seed=int(sim.get("seed", 0)),
            sim_timing=str(sim.get("timing", "realistic")),
            drivers_in=str(rig.get("drivers_in", "process")),
            upload=_build(UploadConfig, data.get("upload"), f"{source_path}: [upload]"),
            drift=_build(DriftConfig, data.get("drift"), f"{source_path}: [drift]"),
            source_text=text,
            source_path=source_path,
        )
    except ConfigError as exc:
        if source_path in str(exc):
            raise
        raise ConfigError(f"{source_path}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{source_path}: {exc}") from None


def load_config(path: str | Path | None = None) -> RigConfig:
    """Load a rig config file; ``None`` gives the embedded simulated rig."""
    if path is None:
        text = resources.files("capture_app.configs").joinpath(DEFAULT_SIM_CONFIG).read_text()
        return parse_config(text, f"<embedded {DEFAULT_SIM_CONFIG}>")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read rig config {path}: {exc.strerror}; pass --config with an existing file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"rig config {path} is not UTF-8 text (a binary file?): pass --config with the rig's "
                          f"TOML file (docs/rig-config.md)") from None
    return parse_config(text, str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(config: RigConfig) -> str:
    """The rig config as TOML text that ``parse_config`` reads back to an equal config."""
    lines = [f"version = {CONFIG_VERSION}", f"name = {_toml_value(config.name)}", "",
             "[rig]", f"drivers_in = {_toml_value(config.drivers_in)}", "",
             "[bus]", f"endpoint = {_toml_value(config.bus_endpoint)}", f"keys = {_toml_value(config.bus_keys_dir)}",
             f"batch_ms = {_toml_value(config.bus_batch_ms)}", ""]
    for section, obj in (("sync", config.sync), ("writer", config.writer), ("quality", config.quality)):
        lines.append(f"[{section}]")
        lines += [f"{f.name} = {_toml_value(getattr(obj, f.name))}" for f in dataclasses.fields(obj)]
        lines.append("")
    lines.append("[handsfree]")
    for f in dataclasses.fields(config.handsfree):
        value = getattr(config.handsfree, f.name)
        if isinstance(value, dict):  # keys may hold spaces (phrases): quoted
            value = "{ " + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
            lines.append(f"{f.name} = {value}")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    lines.append("")
    lines += ["[calibration]", f"path = {_toml_value(config.calibration_path)}", "",
              "[sim]", f"seed = {config.sim_seed}", f"timing = {_toml_value(config.sim_timing)}", ""]
    if config.upload != UploadConfig():
        lines.append("[upload]")
        lines += [f"{f.name} = {_toml_value(getattr(config.upload, f.name))}" for f in dataclasses.fields(config.upload)]
        lines.append("")
    if config.drift != DriftConfig():
        lines.append("[drift]")
        lines += [f"{f.name} = {_toml_value(getattr(config.drift, f.name))}" for f in dataclasses.fields(config.drift)]
        lines.append("")
    for d in config.drivers:
        lines.append("[[drivers]]")
        lines += [f"{f.name} = {_toml_value(list(v) if isinstance(v := getattr(d, f.name), tuple) else v)}"
                  for f in dataclasses.fields(d)]
        lines.append("")
    return "\n".join(lines)


def sim_epoch_ns(config: RigConfig) -> int:
    """The simulated rig's motion epoch (host ns): its motion at host time t is the model's at t - epoch."""
    return int(next((d.options.get("epoch_ns", 0) for d in config.drivers if d.type.startswith("sim_")), 0))


def with_changes(config: RigConfig, driver_options: dict[str, dict] | None = None, **changes) -> RigConfig:
    """A copy of ``config`` with fields changed and options merged into drivers (by name or "*" for all),
    its ``source_text`` regenerated so that driver processes see the same config."""
    drivers = []
    for d in changes.pop("drivers", config.drivers):
        extra = {**(driver_options or {}).get("*", {}), **(driver_options or {}).get(d.name, {})}
        if d.stream == "ground_truth":
            extra = {k: v for k, v in extra.items() if k in ("seed", "speed", "head_motion", "board_motion", "hand_motion", "epoch_ns")}
        drivers.append(dataclasses.replace(d, options={**d.options, **extra}) if extra else d)
    changed = dataclasses.replace(config, drivers=tuple(drivers), **changes)
    return dataclasses.replace(changed, source_text=to_toml(changed))
