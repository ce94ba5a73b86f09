"""Thumbnails for the page: the ego and top images downscaled, the wrist and fingertip overlay drawn, JPEG.

Made in the panel process (never the recorder), at most ``THUMB_HZ`` times a second, from the newest
``view`` (docs/control.md). The overlay is the Qt monitor's (``monitor/overlay.py``): wrist frames
(x red, y green, z blue, 4 cm) and fingertips (magenta) projected through the recorder's calibration,
scaled to the thumbnail's size.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np

from capture_app.episode.image_codec import decode_jpeg
from capture_app.monitor.overlay import HANDS, ViewState, fingertip_pixels, intrinsics_for, wrist_axes_pixels

THUMB_WIDTH = 320      # pixels: a phone shows two side by side, or one at full width
THUMB_HZ = 2.0         # thumbnails a second at most
JPEG_QUALITY = 60
AXIS_COLOURS = ((255, 0, 0), (0, 200, 0), (40, 80, 255))  # RGB: x, y, z
TIP_COLOUR = (255, 0, 255)


def _reduce_for(width: int, target: int) -> int:
    """The largest JPEG decode reduction (1, 2, 4) that keeps the image at least ``target`` wide."""
    for reduce in (4, 2):
        if width // reduce >= target:
            return reduce
    return 1


def camera_image(frame: dict | None, decoded: np.ndarray | None = None, width: int = THUMB_WIDTH) -> np.ndarray | None:
    """A view's camera (``view["ego"]`` / ``view["top"]``) as an RGB image ``width`` wide (or narrower when the
    camera is); ``decoded`` is the image of an H.264 camera (decoded in order by the feed)."""
    if frame is None:
        return None
    encoding = frame.get("encoding")
    if encoding == "h264":
        image = decoded
    elif encoding == "jpeg":
        blob = frame["color"]
        blob = np.frombuffer(blob, np.uint8) if isinstance(blob, (bytes, bytearray)) else blob
        image = decode_jpeg(blob, reduce=_reduce_for(int(frame.get("shape", [0, 0])[1]), width))
    else:
        image = np.asarray(frame.get("color"))
        if image.ndim != 3:
            return None
    if image is None:
        return None
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def draw_overlay(image: np.ndarray, view: dict, ego_intrinsics) -> np.ndarray:
    """``image`` (the ego thumbnail, RGB) with each valid hand's wrist axes and fingertips drawn on it."""
    state = ViewState(T_cam_wrist={h: _matrix(view.get("T_cam_wrist", {}).get(h)) for h in HANDS},
                      keypoints={h: _matrix(view.get("keypoints", {}).get(h)) for h in HANDS})
    intrinsics = intrinsics_for(ego_intrinsics, image)
    out = image.copy()
    for hand, pixels in wrist_axes_pixels(state, intrinsics).items():
        if np.isfinite(pixels).all():
            origin = tuple(int(v) for v in pixels[0])
            for axis in range(3):
                cv2.line(out, origin, tuple(int(v) for v in pixels[axis + 1]), AXIS_COLOURS[axis], 2, cv2.LINE_AA)
    for hand, pixels in fingertip_pixels(state, intrinsics).items():
        for p in pixels:
            if np.isfinite(p).all():
                cv2.circle(out, (int(p[0]), int(p[1])), 3, TIP_COLOUR, -1, cv2.LINE_AA)
    return out


def _matrix(value) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=float)


def jpeg_data_url(image: np.ndarray) -> str:
    """An RGB image as a ``data:image/jpeg;base64,...`` URL (the page swaps it into an <img>)."""
    ok, blob = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding of a thumbnail failed")
    return "data:image/jpeg;base64," + base64.b64encode(blob.tobytes()).decode("ascii")


def thumbnails(view: dict, ego_intrinsics, video_images: dict | None = None, width: int = THUMB_WIDTH) -> dict:
    """{"t_ns", "ego", "top"}: the view's images as data URLs ("" when the view has none yet)."""
    video_images = video_images or {}
    out = {"t_ns": int(view.get("t_eval_ns", 0)), "ego": "", "top": ""}
    ego = camera_image(view.get("ego"), video_images.get("ego"), width)
    if ego is not None:
        if ego_intrinsics is not None:
            ego = draw_overlay(ego, view, ego_intrinsics)
        out["ego"] = jpeg_data_url(ego)
    top = camera_image(view.get("top"), video_images.get("top"), width)
    if top is not None:
        out["top"] = jpeg_data_url(top)
    return out
