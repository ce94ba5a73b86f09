"""Image compression for camera frames: JPEG of RGB colour images (OpenCV; releases the GIL)."""

from __future__ import annotations

import cv2
import numpy as np


class EncodeError(ValueError):
    """An image the encoder refused."""


def encode_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """An RGB uint8 image (h, w, 3) -> its JPEG bytes as a 1-D uint8 array, at ``quality`` 1..100."""
    ok, blob = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise EncodeError(f"JPEG encoding failed for a {rgb.shape} {rgb.dtype} image")
    return blob.reshape(-1)


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


def decode_jpeg(blob: np.ndarray, reduce: int = 1) -> np.ndarray:
    """JPEG bytes -> RGB image; ``reduce`` 2 or 4 decodes at 1/2 or 1/4 of the size (several times cheaper)."""
    return cv2.cvtColor(cv2.imdecode(np.asarray(blob, np.uint8), _REDUCED[reduce]), cv2.COLOR_BGR2RGB)


def is_raw_colour(array: np.ndarray) -> bool:
    """A raw RGB image this codec can encode (uint8, h x w x 3)."""
    return array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
