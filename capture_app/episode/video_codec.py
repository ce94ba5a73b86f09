"""H.264 video of camera frames (PyAV / FFmpeg: NVIDIA's NVENC where it opens, else libx264), for
camera streams stored as video.

A frame becomes one packet the moment it is encoded (x264 ``zerolatency``: no B-frames, no
look-ahead), so a driver publishes each frame under its own stamp and sequence number;
``fastdecode`` (no CABAC, no deblocking) costs a third more bytes and halves the time to decode
a frame from its keyframe (random access within 20 ms at 720p). Every
``keyframe_interval``-th frame is a keyframe (IDR) that carries the SPS/PPS in-band (Annex B):
a frame decodes from the nearest keyframe at or before it through every packet in between.
Chroma is kept at full resolution (4:4:4, High 4:4:4 profile): 4:2:0 smeared thin coloured
lines (hands, markers) to 36 dB PSNR where 4:4:4 keeps 39-41 dB at a third of the bytes
(docs/performance.md). FFmpeg decodes it; some hardware decoders do not.

``encoder = "auto"`` tries ``h264_nvenc`` first (a ZED rig carries an NVIDIA GPU: the encoding
then costs the CPU almost nothing) and falls back to ``libx264`` when it does not open (no GPU,
no driver, no 4:4:4 support), keeping why in ``VideoEncoder.skipped``. NVENC is set up to give
the same stream shape, from FFmpeg's documented options (libavcodec/nvenc_h264.c, nvenc.c):
``delay 0`` + ``zerolatency`` + ``tune ull`` + ``bf 0`` (one packet per frame, no reordering),
``gop_size`` = keyframe interval with ``forced-idr`` (every keyframe an IDR), SPS/PPS repeated
in-band on every IDR (FFmpeg sets NVENC's ``repeatSPSPPS`` when the global-header flag is
unset, as here), constant QP = ``crf``. Its quality and size were not measured here (no GPU).

Pure codec: no files, no threads. ``capture_app.episode.frames`` reads frames from episodes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from capture_app.episode.image_codec import EncodeError

ANNEX_B_STARTS = (b"\x00\x00\x00\x01", b"\x00\x00\x01")
H264_ENCODERS = ("h264_nvenc", "libx264")  # what encoder = "auto" tries, in this order
VIDEO_ENCODERS = ("auto",) + H264_ENCODERS
_LOG_LOCK = threading.Lock()


@dataclass(frozen=True)
class VideoSettings:
    """How camera frames are encoded as video: x264 ``crf`` (quality, lower is better, 0..51),
    ``preset`` (speed against size), a keyframe every ``keyframe_interval`` frames (random access
    decodes at most that many frames), ``rate_hz`` the nominal frame rate, ``encoder`` one of
    ``VIDEO_ENCODERS`` ("auto": NVENC where it opens, else x264)."""

    crf: int = 26
    preset: str = "superfast"
    keyframe_interval: int = 10
    rate_hz: float = 30.0
    encoder: str = "auto"


def require_av():
    """The PyAV module, or an EncodeError that says how to install it."""
    try:
        import av
    except ImportError:
        raise EncodeError("camera streams stored as video need PyAV: pip install 'capture-app[video]'") from None
    return av


def is_annex_b(packet: np.ndarray | bytes) -> bool:
    """Whether ``packet`` starts like an H.264 Annex B access unit (a start code)."""
    head = bytes(np.asarray(packet, np.uint8)[:4]) if not isinstance(packet, bytes) else packet[:4]
    return head.startswith(ANNEX_B_STARTS)


def _encoder_options(name: str, settings: VideoSettings) -> dict[str, str]:
    """FFmpeg options that make ``name`` give one self-contained-at-keyframes packet per frame."""
    if name == "h264_nvenc":
        return {"preset": "p4", "tune": "ull", "zerolatency": "1", "delay": "0", "bf": "0", "forced-idr": "1",
                "rc": "constqp", "qp": str(settings.crf)}
    return {"preset": settings.preset, "tune": "zerolatency,fastdecode", "crf": str(settings.crf), "bf": "0",
            "x264-params": f"keyint={settings.keyframe_interval}:min-keyint={settings.keyframe_interval}"
                           f":scenecut=0:repeat-headers=1"}


def _open_encoder(av, name: str, width: int, height: int, settings: VideoSettings):
    """An opened encoder context, or av's error (with FFmpeg's own last error line, e.g. "Cannot load
    libcuda.so.1", which PyAV adds to the message when its logging is on)."""
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv444p"
    ctx.framerate = Fraction(settings.rate_hz).limit_denominator(1000)
    ctx.time_base = 1 / ctx.framerate  # pts = frame count
    ctx.gop_size = settings.keyframe_interval
    ctx.options = _encoder_options(name, settings)
    with _LOG_LOCK:
        level = av.logging.get_level()
        if level is None:
            av.logging.set_level(av.logging.ERROR)
        try:
            with av.logging.Capture():  # FFmpeg's errors go into the exception, not to stderr
                ctx.open()
        finally:
            av.logging.set_level(level)
    return ctx


def _reason(exc: Exception) -> str:
    """FFmpeg's own error line when PyAV carried it ("[h264_nvenc] Cannot load libcuda.so.1"), else the error."""
    text = str(exc)
    _, found, log = text.partition("last error log: ")
    return log.strip() if found else (getattr(exc, "strerror", None) or text)


class VideoEncoder:
    """RGB frames (h, w, 3) uint8 of one size -> one H.264 packet each, with its keyframe flag.
    ``codec_name`` is the FFmpeg encoder in use; ``skipped`` maps each encoder tried before it to why
    it did not open."""

    def __init__(self, width: int, height: int, settings: VideoSettings = VideoSettings()):
        av = require_av()
        if width % 2 or height % 2:
            raise EncodeError(f"video frames need an even width and height, got {width}x{height}")
        if settings.encoder not in VIDEO_ENCODERS:
            raise EncodeError(f"video encoder {settings.encoder!r} is not one of {list(VIDEO_ENCODERS)}")
        self.width, self.height = width, height
        self._av = av
        self.skipped: dict[str, str] = {}
        for name in H264_ENCODERS if settings.encoder == "auto" else (settings.encoder,):
            try:
                self._ctx = _open_encoder(av, name, width, height, settings)
            except (av.error.FFmpegError, ValueError) as exc:  # ValueError: FFmpeg built without it
                self.skipped[name] = _reason(exc)
                continue
            self.codec_name = name
            break
        else:
            hint = (" (h264_nvenc needs an NVIDIA GPU and driver: set [writer] video_encoder = \"auto\" or "
                    "\"libx264\")" if "h264_nvenc" in self.skipped else "")
            raise EncodeError(f"no H.264 encoder opens for {width}x{height}: "
                              + "; ".join(f"{n}: {why}" for n, why in self.skipped.items()) + hint)
        self._frames = 0

    def encode(self, rgb: np.ndarray) -> tuple[np.ndarray, bool, int]:
        """The packet of ``rgb`` (1-D uint8), whether it is a keyframe, and its number in this encoder's
        stream (0, 1, 2...: a receiver that sees a number skipped knows a packet is missing, whereas a
        frame the camera lost before it was encoded leaves no gap here)."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise EncodeError(f"video encoder of {self.width}x{self.height} RGB got a {rgb.shape} {rgb.dtype} frame")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self._frames
        self._frames += 1
        packets = self._ctx.encode(frame)
        if len(packets) != 1:  # zerolatency and no B-frames: exactly one packet per frame
            raise EncodeError(f"the H.264 encoder gave {len(packets)} packets for one frame")
        packet = packets[0]
        return np.frombuffer(bytes(packet), np.uint8), bool(packet.is_keyframe), self._frames - 1


class VideoDecoder:
    """Decodes one stream's packets in order; ``reset`` before jumping to another keyframe."""

    def __init__(self):
        self._av = require_av()
        self.reset()

    def reset(self) -> None:
        self._ctx = self._av.CodecContext.create("h264", "r")
        self._ctx.thread_type = "SLICE"  # frame threading would hold frames back

    def decode(self, packet: np.ndarray | bytes, image: bool = True) -> np.ndarray | None:
        """The RGB image (h, w, 3) of ``packet``'s frame, or None when the decoder could not produce it
        (a packet whose references are missing, e.g. the first packets after joining mid-stream).
        ``image=False`` only advances the decoder (frames on the way to another: no colour conversion)."""
        try:
            frames = self._ctx.decode(self._av.Packet(bytes(np.asarray(packet, np.uint8)) if not isinstance(packet, bytes)
                                                      else packet))
        except self._av.error.FFmpegError:
            return None
        if not frames or not image:
            return None
        return frames[-1].to_ndarray(format="rgb24")
