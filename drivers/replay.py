"""Replay of a recorded stream: publishes one stream of an episode file at its recorded rate.

Capture times keep their recorded spacing, shifted onto the current host clock; the
original sequence numbers, tracking flags and device times are kept. Images are
published as stored in the file: JPEG (encoding "jpeg"), or H.264 packets (encoding "h264",
with ``meta.keyframe`` and ``meta.packet``); everything else raw.
Type ``replay``; options ``episode`` (path), ``source_stream`` (default: the driver's stream), ``loop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capture_app.core.clock import now_ns, sleep_until_ns
from capture_app.episode.file import open_episode
from capture_app.episode.format import NO_DEVICE_TIME, TIME_COLUMNS
from capture_app.core.errors import DeviceNotFoundError, EpisodeFormatError
from drivers.base import Driver, Sample

_TRACKING = {0: "ok", 1: "degraded", 2: "lost"}


@dataclass(frozen=True)
class ReplayOptions:
    episode: str = ""
    source_stream: str = ""
    loop: bool = False


class ReplayDriver(Driver):
    Options = ReplayOptions

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        self._file = None
        self._row = 0
        self._shift_ns = 0
        self._seq_base = 0
        self.finished = False

    def open(self) -> None:
        path = Path(self.options.episode)
        source = self.options.source_stream or self.config.stream
        try:
            self._file = open_episode(path)
        except (OSError, EpisodeFormatError) as exc:
            raise DeviceNotFoundError(f"replay of {source}: cannot open episode {path} ({exc}); fix options.episode "
                                      f"of driver {self.config.name!r}") from None
        if f"streams/{source}" not in self._file:
            available = list(self._file.get("streams", {}))
            self._file.close()
            raise DeviceNotFoundError(f"episode {path} has no stream {source!r}; it has {available}")
        group = self._file[f"streams/{source}"]
        self._group = group
        self._times = group["t_capture_ns"][:]
        self._seq = group["seq"][:].astype(np.int64)
        self._device = group["t_device_ns"][:]
        self._tracking = group["tracking"][:]
        # a video column's keyframe flags and packet numbers travel as meta["keyframe"], ["packet"], not as buffers
        self._columns = [name for name in group if name not in TIME_COLUMNS
                         and not name.endswith(("_keyframe", "_packet"))]
        self._encoded = {name: group.attrs[f"{name}_encoding"] for name in self._columns
                         if group.attrs.get(f"{name}_encoding") in ("jpeg", "h264")}
        self._restart()
        self.device_info.update({"model": f"replay of {source}", "episode": str(path), "rows": len(self._times)})

    def _restart(self) -> None:
        self._row = 0
        self._shift_ns = now_ns() + 50_000_000 - int(self._times[0]) if len(self._times) else 0

    def read(self) -> Sample | None:
        if self._row >= len(self._times):
            if not self.options.loop:
                self.finished = True
                self._stop.wait(0.2)
                return None
            self._seq_base += int(self._seq[-1]) + 1
            self._restart()
        i = self._row
        t_capture = int(self._times[i]) + self._shift_ns
        if not sleep_until_ns(t_capture, self._stop):
            return None
        self._row += 1
        arrays, encodings, shapes, meta = {}, {}, {}, {}
        for name in self._columns:
            value = self._group[name][i]
            if name in self._encoded:
                arrays[name] = np.asarray(value, dtype=np.uint8)
                encodings[name] = self._encoded[name]
                shapes[name] = tuple(self._group.attrs[f"{name}_shape"])
                if encodings[name] == "h264":
                    meta["keyframe"] = bool(self._group[f"{name}_keyframe"][i])
                    meta["packet"] = int(self._group[f"{name}_packet"][i])  # a loop restarts at a keyframe
            else:
                arrays[name] = np.asarray(value)
        if "depth_scale_m" in self._group.attrs:
            meta["depth_scale_m"] = float(self._group.attrs["depth_scale_m"])
        device = int(self._device[i])
        return Sample(t_capture, arrays, tracking=_TRACKING[int(self._tracking[i])],
                      t_device_ns=None if device == NO_DEVICE_TIME else device, seq=self._seq_base + int(self._seq[i]),
                      encodings=encodings, decoded_shapes=shapes, meta=meta or None)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
