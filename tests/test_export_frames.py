"""The export's fast frame path (capture_app/dataset/camera_frames.py): JPEG rows decoded straight to
YCbCr planes and range-mapped into the encoder's yuv420p frames must show what the RGB decode of the
same JPEG shows; image statistics from histograms must equal numpy's figures; workers never ask for
more codec threads than there are cores (docs/datasets.md, docs/performance.md)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from capture_app.core.errors import CaptureError
from capture_app.dataset.feature_stats import feature_stats, image_stats
from capture_app.episode.file import FORMAT_NAME
from capture_app.episode.image_codec import decode_jpeg, encode_jpeg

pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from capture_app.dataset.camera_frames import CameraFrames, jfif_to_rgb  # noqa: E402
from capture_app.dataset.commands import codec_threads, export_lerobot  # noqa: E402
from capture_app.dataset.lerobot_export import ExportOptions  # noqa: E402
from capture_app.dataset.training_rows import ImageReader  # noqa: E402
from capture_app.dataset.video import psnr  # noqa: E402

W, H = 320, 240


def _image(k: int) -> np.ndarray:
    """A smooth colour scene with a moving square: what a camera sees, not noise."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    rgb = np.stack([x / W * 200 + 20, y / H * 180 + 40, (x + y) / (W + H) * 150 + 60 + 20 * np.sin(x / 9)], -1)
    rgb[60 + k:120 + k, 100:170] = (230, 40, 50)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def jpeg_episode(tmp_path_factory):
    """An episode file holding only an ego camera stream of 6 JPEG rows (all the frame reader needs)."""
    path = tmp_path_factory.mktemp("frames") / "jpeg.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        blobs = [encode_jpeg(_image(k), 90) for k in range(6)]
        group = f.create_group("streams/ego_camera")
        data = group.create_dataset("color", (6,), dtype=h5py.vlen_dtype(np.uint8))
        for k, blob in enumerate(blobs):
            data[k] = blob
        group.attrs["color_encoding"] = "jpeg"
        group.attrs["color_shape"] = [H, W, 3]
    return path, blobs


def test_jpeg_rows_become_the_same_picture_in_limited_range_yuv(jpeg_episode):
    path, blobs = jpeg_episode
    with ImageReader(str(path)) as reader:
        frames = CameraFrames(reader, "ego", W, H, resize=False)
        for row in (0, 3, 5, 4):  # any order
            frame, small = frames.frame(row, small_rgb=True)
            assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (W, H)
            reference = decode_jpeg(blobs[row])
            assert psnr(frame.to_ndarray(format="rgb24"), reference) >= 38.0
            assert small.shape == reference[::8, ::8].shape
            assert np.abs(small.astype(int) - reference[::8, ::8]).mean() < 2.0
        luma = np.frombuffer(frame.planes[0], np.uint8)
        assert 16 <= luma.min() and luma.max() <= 235          # H.264 "tv" levels, not JPEG's 0..255
    assert set(frames.seconds) == {"read", "decode", "convert"}


def test_white_and_black_map_to_the_ends_of_the_limited_range():
    y = np.array([[0, 255]], np.uint8)
    assert jfif_to_rgb(y, np.full_like(y, 128), np.full_like(y, 128)).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    from capture_app.dataset.camera_frames import _LUT_C, _LUT_Y
    assert (_LUT_Y[0], _LUT_Y[255], _LUT_C[0], _LUT_C[128], _LUT_C[255]) == (16, 235, 16, 128, 240)


def test_resized_rows_match_area_interpolation_of_the_rgb_decode(jpeg_episode):
    path, blobs = jpeg_episode
    with ImageReader(str(path)) as reader:
        half = CameraFrames(reader, "ego", W // 2, H // 2, resize=True)  # decoded at half size (lowres 1)
        odd = CameraFrames(reader, "ego", 200, 150, resize=True)
        for frames in (half, odd):
            frame, _ = frames.frame(2)
            reference = cv2.resize(decode_jpeg(blobs[2]), (frames.width, frames.height), interpolation=cv2.INTER_AREA)
            assert psnr(frame.to_ndarray(format="rgb24"), reference) >= 33.0, (frames.width, frames.height)
        assert half._lowres == 1 and odd._lowres == 0
        with pytest.raises(ValueError, match="--image-size"):   # without --image-size another size is an error
            CameraFrames(reader, "ego", W // 2, H // 2, resize=False).frame(0)


def test_image_stats_from_histograms_equal_numpys_figures():
    rng = np.random.default_rng(7)
    for shape in [(60, 90, 160, 3), (3, 5, 7, 3), (1, 1, 1, 3)]:
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        frames[..., 0] //= 3                                  # a channel that does not span the range
        fast = image_stats(frames)
        reference = feature_stats(frames.reshape(-1, 3).astype(np.float64) / 255.0)
        for key, value in fast.items():
            if key != "count":
                assert value.shape == (3, 1, 1) and np.allclose(value.ravel(), reference[key], rtol=0, atol=1e-12), key
        assert fast["count"].tolist() == [shape[0]]


def test_codec_threads_never_exceed_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert codec_threads(None, 100) == 1 and codec_threads(16, 3) == 5 and codec_threads(1, 100) == 16
    for workers in (None, 1, 2, 3, 8, 16, 32):
        for episodes in (1, 2, 5, 100):
            busy = min(workers or 16, episodes)
            assert codec_threads(workers, episodes) * busy <= max(16, busy)
    assert codec_threads(4, 100, ray="auto") == 1


def test_an_unknown_preset_is_refused_before_any_work(tmp_path):
    with pytest.raises(CaptureError, match="--preset 'turbo' for h264: use one of ultrafast"):
        export_lerobot([str(tmp_path)], tmp_path / "out", ExportOptions(preset="turbo"), progress=False)
    assert not (tmp_path / "out").exists()
