"""MP4 video files for training sets, through PyAV (FFmpeg): H.264 (libx264) or AV1 (libsvtav1),
yuv420p, constant frame rate, frame k at pts k (time k / fps). The encoders release the GIL.

``threads``: the encoder's own threads (0 = FFmpeg's choice, one or more per core); an export runs
one encoder per worker process, so it gives each ``cores // workers`` (docs/performance.md)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

CODECS = {"h264": "libx264", "av1": "libsvtav1"}
DEFAULT_PRESETS = {"h264": "ultrafast", "av1": "10"}  # docs/datasets.md: speed against file size
PRESETS = {"h264": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"),
           "av1": tuple(str(p) for p in range(14))}


def check_preset(codec: str, preset: str) -> str:
    """The encoder preset to use (``preset``, or the codec's default when empty); ValueError when
    ``codec`` has no such preset."""
    if codec not in CODECS:
        raise ValueError(f"video codec {codec!r}: use one of {sorted(CODECS)}")
    preset = preset or DEFAULT_PRESETS[codec]
    if preset not in PRESETS[codec]:
        raise ValueError(f"--preset {preset!r} for {codec}: use one of {', '.join(PRESETS[codec])}")
    return preset


class VideoWriter:
    """Append RGB uint8 frames (H, W, 3) to an MP4 file; ``close`` flushes the encoder.
    ``gop``: frames between keyframes (lerobot uses 2 so that training decodes any frame quickly)."""

    def __init__(self, path: str | Path, fps: int, width: int, height: int, codec: str = "h264",
                 crf: int = 23, gop: int = 2, preset: str = "", threads: int = 0):
        import av
        if codec not in CODECS:
            raise ValueError(f"video codec {codec!r}: use one of {sorted(CODECS)}")
        preset = check_preset(codec, preset)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        options = {"crf": str(crf), "g": str(gop), "preset": preset}
        self._stream = self._container.add_stream(CODECS[codec], rate=fps, options=options)
        self._stream.codec_context.thread_count = threads
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = Fraction(1, fps)
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av
        if rgb.shape[:2] != (self._stream.height, self._stream.width):
            raise ValueError(f"{self.path}: a frame of {rgb.shape[1]}x{rgb.shape[0]} in a "
                             f"{self._stream.width}x{self._stream.height} video")
        self.write_frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))

    def write_frame(self, frame) -> None:
        """Append an av.VideoFrame of the video's size (yuv420p limited range needs no conversion; any other
        format is converted by FFmpeg). The same frame may be written again (a held frame)."""
        if (frame.width, frame.height) != (self._stream.width, self._stream.height):
            raise ValueError(f"{self.path}: a frame of {frame.width}x{frame.height} in a "
                             f"{self._stream.width}x{self._stream.height} video")
        frame.pts = self.frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_video(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of an MP4 file: (timestamps in s (N,), RGB uint8 frames (N, H, W, 3))."""
    import av
    times, frames = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            times.append(float(frame.pts * stream.time_base))
            frames.append(frame.to_ndarray(format="rgb24"))
    return np.array(times), np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def video_info(path: str | Path) -> dict:
    """The ``info`` entry lerobot keeps for a video feature in meta/info.json."""
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec_context.codec.canonical_name, "video.pix_fmt": stream.pix_fmt,
                "video.is_depth_map": False, "video.fps": int(stream.base_rate or stream.average_rate),
                "video.channels": 3, "has_audio": len(container.streams.audio) > 0}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images or stacks of them."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
