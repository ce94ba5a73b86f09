"""A camera's stored frames as encoder-ready video frames, each stored row decoded once.

JPEG rows (the recorder's default) are decoded by FFmpeg's MJPEG decoder straight to their own
YCbCr 4:2:0 planes (full range, as JFIF stores them): no RGB in between. The planes are resized
when the export asks for another size (OpenCV area interpolation, per plane; when the target is at
most half the stored size in both directions the decoder first scales down in the DCT domain,
FFmpeg's ``lowres``, which is cheaper than decoding every pixel) and mapped to the limited range
of H.264's yuv420p by a lookup table (Y 0..255 -> 16..235, Cb/Cr 0..255 -> 16..240 around 128).
That is what the RGB path (decode to RGB, convert back to yuv420p) gave, to within rounding and
the chroma planes' resampling, at a fraction of the work (docs/performance.md, "LeRobot export").

Other storage (H.264 rows, raw RGB) goes through ``ImageReader`` (RGB) and FFmpeg's own
conversion. Rows are read from HDF5 in blocks, not one by one.

Also gives, for the image statistics, a frame at 1/8 resolution in RGB (every 8th pixel of each
row and column, as ``rgb[::8, ::8]``), converted from the planes with the JFIF equations.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from capture_app.dataset.training_rows import CAMERAS, ImageReader
from capture_app.episode.frames import colour_encoding

READ_BLOCK = 32  # stored rows read from HDF5 at once

# full range (JPEG) -> limited range (H.264 yuv420p, BT.601 "tv" levels)
_LUT_Y = np.round(16 + np.arange(256) * 219 / 255).astype(np.uint8)
_LUT_C = np.clip(np.round(128 + (np.arange(256) - 128) * 224 / 255), 0, 255).astype(np.uint8)


def jfif_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Full-range YCbCr planes of one size (H, W) uint8 -> RGB uint8 (H, W, 3) (JFIF / BT.601)."""
    y = y.astype(np.float32)
    cb = cb.astype(np.float32) - 128.0
    cr = cr.astype(np.float32) - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _plane(frame, index: int) -> np.ndarray:
    """A view of plane ``index`` of an av.VideoFrame as (rows, width) uint8 (no copy; line padding cut off)."""
    plane = frame.planes[index]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:plane.height, :plane.width]


class CameraFrames:
    """Encoder-ready frames (av.VideoFrame, yuv420p limited range, ``width`` x ``height``) of one camera
    (training-set key ``key``) of an open episode. ``seconds`` accumulates this process's CPU seconds per
    stage: ``read`` (HDF5), ``decode``, ``convert`` (resize, range, colour)."""

    def __init__(self, reader: ImageReader, key: str, width: int, height: int, resize: bool, threads: int = 1):
        import av
        self._av = av
        self.key, self.width, self.height, self.resize = key, width, height, resize
        self._reader = reader
        group = reader.file[f"streams/{CAMERAS[key]}"]
        self.encoding = colour_encoding(group)
        self._data = group["color"]
        self._block_start, self._block = 0, []
        self.seconds = {"read": 0.0, "decode": 0.0, "convert": 0.0}
        self._decoder = None
        if self.encoding == "jpeg":
            stored_h, stored_w = (int(v) for v in group.attrs["color_shape"][:2])
            self._lowres = 0
            while resize and self._lowres < 3 and width * 2 ** (self._lowres + 1) <= stored_w \
                    and height * 2 ** (self._lowres + 1) <= stored_h:
                self._lowres += 1
            self._decoder = av.CodecContext.create("mjpeg", "r")
            self._decoder.thread_count = threads
            if self._lowres:
                self._decoder.options = {"lowres": str(self._lowres)}

    def _blob(self, row: int) -> np.ndarray:
        if not self._block_start <= row < self._block_start + len(self._block):
            self._block_start = row
            self._block = list(self._data[row:min(row + READ_BLOCK, len(self._data))])
        return self._block[row - self._block_start]

    def frame(self, row: int, small_rgb: bool = False):
        """(the video frame of stored row ``row``, its RGB at 1/8 resolution when ``small_rgb`` else None)."""
        if self._decoder is None:
            return self._from_rgb(row, small_rgb)
        t0 = time.process_time()
        blob = self._blob(row)
        t1 = time.process_time()
        decoded = self._decoder.decode(self._av.Packet(blob))
        if not decoded:
            raise ValueError(f"{self._reader.path}: {CAMERAS[self.key]} row {row} is not a decodable JPEG")
        source = decoded[-1]
        t2 = time.process_time()
        if source.format.name not in ("yuvj420p", "yuv420p"):  # not 4:2:0 (a 4:4:4 or grey JPEG): via RGB
            out, small = self._rgb_frame(source.to_ndarray(format="rgb24"), small_rgb)
        else:
            planes = [_plane(source, i) for i in range(3)]
            if (source.width, source.height) != (self.width, self.height):
                self._check_size(source.width * 2 ** self._lowres, source.height * 2 ** self._lowres)
                sizes = [(self.width, self.height)] + [((self.width + 1) // 2, (self.height + 1) // 2)] * 2
                planes = [cv2.resize(p, s, interpolation=cv2.INTER_AREA) for p, s in zip(planes, sizes)]
            small = jfif_to_rgb(planes[0][::8, ::8], planes[1][::4, ::4], planes[2][::4, ::4]) if small_rgb else None
            out = self._av.VideoFrame(self.width, self.height, "yuv420p")
            for i, lut in enumerate((_LUT_Y, _LUT_C, _LUT_C)):
                target = _plane(out, i)
                mapped = cv2.LUT(planes[i], lut, dst=target)
                if mapped is not target:  # OpenCV could not write into the frame's buffer
                    target[:] = mapped
        t3 = time.process_time()
        self.seconds["read"] += t1 - t0
        self.seconds["decode"] += t2 - t1
        self.seconds["convert"] += t3 - t2
        return out, small

    def _check_size(self, width: int, height: int) -> None:
        if not self.resize:  # without --image-size a frame of another size is an error, as in the RGB path
            raise ValueError(f"{self._reader.path}: {CAMERAS[self.key]} has a frame of {width}x{height} in a "
                             f"{self.width}x{self.height} video; export with --image-size WxH to resize")

    def _rgb_frame(self, rgb: np.ndarray, small_rgb: bool):
        if rgb.shape[:2] != (self.height, self.width):
            self._check_size(rgb.shape[1], rgb.shape[0])
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        out = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
        return out, (rgb[::8, ::8] if small_rgb else None)

    def _from_rgb(self, row: int, small_rgb: bool):
        t0 = time.process_time()
        rgb = self._reader.frame(self.key, row)
        t1 = time.process_time()
        out, small = self._rgb_frame(rgb, small_rgb)
        self.seconds["decode"] += t1 - t0
        self.seconds["convert"] += time.process_time() - t1
        return out, small
