"""Camera streams stored as H.264 inside the episode (`[writer] video_streams`): the codec's quality,
the bus schema, the writer's every-stored-frame-decodes rule, random access, and a SIGKILL."""

from __future__ import annotations

import json

import av
import h5py
import numpy as np
import pytest

from capture_app.bus.wire import Message
from capture_app.cli import main
from capture_app.rig.config import parse_config
from drivers.host import driver_video_settings
from capture_app.core.errors import ConfigError
from capture_app.episode.format import validate_and_summarize
from capture_app.episode.frames import FrameReader, decodable_rows
from capture_app.bus.checks import MessageCheck
from capture_app.episode.video_codec import VideoDecoder, VideoEncoder, VideoSettings, is_annex_b
from capture_app.recorder.writer import EpisodeMetadata, EpisodeWriter
from drivers.sim.calibration import EGO_INTRINSICS_720P, TOP_INTRINSICS_480P
from drivers.sim.motion import MotionModel, true_rig_geometry
from drivers.sim.render import SceneRenderer
from tests.conftest import record_and_kill, small_sim_text


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def _sim_frames(intrinsics, n: int, fixed_camera: bool) -> list[np.ndarray]:
    motion = MotionModel(0, 1.0, "work", "static", "work")
    renderer = SceneRenderer(intrinsics, motion, 0)
    T_topcam = true_rig_geometry()["T_world_topcam"]
    return [renderer.render(i / 30, T_topcam if fixed_camera else motion.T_world_cam(i / 30)) for i in range(n)]


@pytest.mark.parametrize("camera", ["ego", "top"])
def test_the_default_settings_keep_38_db_with_a_keyframe_every_interval(camera):
    intrinsics, fixed = (EGO_INTRINSICS_720P, False) if camera == "ego" else (TOP_INTRINSICS_480P, True)
    frames = _sim_frames(intrinsics, 24, fixed)
    encoder, decoder = VideoEncoder(intrinsics.width, intrinsics.height, VideoSettings()), VideoDecoder()
    packets = [encoder.encode(frame) for frame in frames]
    assert [keyframe for _, keyframe, _ in packets] == [i % 10 == 0 for i in range(24)]
    assert [number for _, _, number in packets] == list(range(24))
    assert all(is_annex_b(packet) for packet, _, _ in packets)
    decoded = [decoder.decode(packet) for packet, _, _ in packets]
    assert all(image is not None and image.shape == frames[0].shape for image in decoded)  # no frame held back
    # 38 dB on the simulated scene; the top camera's view of the textured table (fine wood grain, drawn since
    # 2026-12-05 so that visual rotation is measurable) keeps 35 dB at the same settings (docs/performance.md)
    assert min(_psnr(a, b) for a, b in zip(frames, decoded)) >= (38.0 if camera == "ego" else 35.0)
    # from a fresh decoder, a keyframe and what follows it decode to the same images
    fresh = VideoDecoder()
    assert np.array_equal([fresh.decode(p) for p, _, _ in packets[10:14]][-1], decoded[13])
    assert VideoDecoder().decode(packets[13][0]) is None  # mid-interval, without its keyframe: nothing


def test_auto_uses_nvenc_where_it_opens_and_otherwise_x264_saying_why():
    """Through the real PyAV/FFmpeg: its wheels carry h264_nvenc, which opens only with an NVIDIA GPU and
    driver (libcuda, libnvidia-encode). Without one "auto" falls back to x264 and keeps FFmpeg's reason."""
    encoder = VideoEncoder(64, 64, VideoSettings(encoder="auto"))
    assert encoder.codec_name in ("h264_nvenc", "libx264")
    if encoder.codec_name == "libx264":
        assert list(encoder.skipped) == ["h264_nvenc"] and encoder.skipped["h264_nvenc"].strip()
        if "h264_nvenc" in av.codecs_available:  # built in but no GPU here: FFmpeg's own line, e.g. libcuda
            assert "h264_nvenc" in encoder.skipped["h264_nvenc"]
    packets = [encoder.encode(np.full((64, 64, 3), 8 * i, np.uint8)) for i in range(12)]
    assert [k for _, k, _ in packets] == [i % 10 == 0 for i in range(12)]  # either encoder: IDR every interval
    decoder = VideoDecoder()
    assert all(abs(int(decoder.decode(p).mean()) - 8 * i) <= 2 for i, (p, _, _) in enumerate(packets))
    assert VideoEncoder(64, 64, VideoSettings(encoder="libx264")).skipped == {}


def test_an_encoder_asked_for_by_name_that_does_not_open_stops_record_at_start():
    text = small_sim_text(drivers_in="process").replace(
        "[writer]\n", '[writer]\nvideo_streams = ["ego_camera"]\nvideo_encoder = "h264_nvenc"\n')
    config = parse_config(text, "<nvenc rig>")
    try:
        VideoEncoder(64, 64, VideoSettings(encoder="h264_nvenc"))
    except Exception:
        with pytest.raises(ConfigError, match=r"video_encoder = 'h264_nvenc'.*NVIDIA GPU.*\"libx264\""):
            driver_video_settings(config)
    else:
        assert driver_video_settings(config)["ego_camera"].encoder == "h264_nvenc"  # a machine with NVENC
    with pytest.raises(ConfigError, match="video_encoder"):
        parse_config(text.replace('"h264_nvenc"', '"hevc_vaapi"'), "<bad encoder>")


def test_decodable_rows_need_a_keyframe_and_no_missing_packet_since():
    packet = np.array([5, 6, 7, 9, 10, 11, 0, 1])
    epoch = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    keyframe = np.array([0, 1, 0, 0, 1, 0, 0, 1], bool)
    assert decodable_rows(packet, epoch, keyframe).tolist() == [False, True, True, False, True, True, False, True]
    assert decodable_rows(packet[:0], epoch[:0], keyframe[:0]).tolist() == []


def _message(seq: int, packet, keyframe, number=None, encoding="h264", t0=10**12) -> Message:
    meta = ({} if keyframe is None else {"keyframe": keyframe}) | ({} if number is None else {"packet": number})
    return Message("ego_camera", seq, t0 + seq * 33_000_000, None, t0 + seq * 33_000_000, "ok",
                   {"color": np.frombuffer(packet, np.uint8) if isinstance(packet, bytes) else packet}, {"color": encoding}, {"color": (64, 64, 3)}, meta,
                   t_receive_ns=t0 + seq * 33_000_000 + 1_000_000)


def test_the_bus_schema_checks_video_frames():
    encoder = VideoEncoder(64, 64)
    frame = np.zeros((64, 64, 3), np.uint8)
    packet, keyframe, number = encoder.encode(frame)
    check = MessageCheck(["ego_camera"])
    assert check.check(_message(0, packet, keyframe, number)) is None
    assert check.check(_message(1, packet, None, 1)) == "meta:keyframe"
    assert check.check(_message(2, packet, False)) == "meta:packet"
    assert check.check(_message(3, packet, False, -1)) == "meta:packet"
    assert check.check(_message(4, b"\x01\x02\x03\x04\x05\x06", False, 1)) == "not-h264:color"
    assert check.check(_message(5, b"\xff\xd8\xff\xe0" + bytes(20), None, encoding="jpeg")) == "encoding-changed:color"
    assert check.check(_message(6, encoder.encode(frame)[0], False, 1)) is None  # the stream goes on


def test_the_writer_stores_only_frames_that_decode_and_counts_the_rest(tmp_path):
    encoder = VideoEncoder(64, 64, VideoSettings(keyframe_interval=5))
    frames = [np.full((64, 64, 3), 10 * i, np.uint8) for i in range(20)]
    packets = [encoder.encode(frame) for frame in frames]
    metadata = EpisodeMetadata(episode_name="video", expected_rates_hz={"ego_camera": 30.0})
    writer = EpisodeWriter(tmp_path, metadata).start()
    # joined at packet 2 (mid-interval: 2..4 wait for keyframe 5); the camera lost its frame seq 8 before it
    # was encoded (a seq gap, but no packet missing: stored on); packet 12 lost on the way (13, 14 wait for 15)
    for i in [i for i in range(2, 20) if i != 12]:
        assert writer.submit(_message(i + (i >= 8), *packets[i]))
    path = writer.finish()
    with h5py.File(path, "r") as f:
        group = f["streams/ego_camera"]
        assert group["color_packet"][:].tolist() == [5, 6, 7, 8, 9, 10, 11, 15, 16, 17, 18, 19]
        assert group["seq"][:].tolist() == [5, 6, 7, 9, 10, 11, 12, 16, 17, 18, 19, 20]
        assert group.attrs["video_preroll"] == 3 and group.attrs["video_undecodable"] == 2
        assert group.attrs["seq_gaps"] == 4  # 8 never sent, 13 lost, 14 and 15 not stored
        reader = FrameReader(f, "ego_camera")
        for row in [3, 0, 11, 7, 8, 2]:  # random access, backwards too
            image = reader.frame(row)
            assert image is not None and abs(int(image.mean()) - 10 * int(group["color_packet"][row])) <= 2
        events = [m.decode() if isinstance(m, bytes) else m for m in f["events/message"][:]]
    assert any("after a lost packet" in m and "video_undecodable" in m for m in events)
    assert any("before the episode's first keyframe" in m for m in events)
    summary = validate_and_summarize(path)
    assert summary.problems == [] and any("could not be decoded" in w for w in summary.warnings)


def _video_rig(tmp_path, keyframe_interval: int = 10) -> str:
    text = small_sim_text(drivers_in="process", ego=(320, 180), top=(160, 120)).replace(
        "[writer]\n", f'[writer]\nvideo_streams = ["ego_camera", "top_camera"]\n'
                      f"video_keyframe_interval = {keyframe_interval}\n")
    parse_config(text, "<video rig>")
    path = tmp_path / "rig.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_a_recorded_video_episode_reads_back_every_frame_and_exports(tmp_path):
    assert main(["record", "--config", _video_rig(tmp_path), "--out", str(tmp_path / "out"), "--name", "video",
                 "--duration", "3", "--wait", "60"]) == 0
    path = tmp_path / "out" / "video.h5"
    summary = validate_and_summarize(path)
    assert summary.problems == [] and summary.status == "complete"
    with h5py.File(path, "r") as f:
        for stream in ("ego_camera", "top_camera"):
            group = f[f"streams/{stream}"]
            assert group.attrs["color_encoding"] == "h264" and bool(group["color_keyframe"][0])
            device = json.loads(group.attrs["device"])  # which encoder made it, and why not NVENC
            assert device["video_encoder"] == VideoEncoder(64, 64).codec_name
            assert ("video_encoder_skipped" in device) == (device["video_encoder"] == "libx264")
            assert group.attrs["video_preroll"] <= 9 and group.attrs["video_undecodable"] == 0
            sequential = FrameReader(f, stream)
            images = [sequential.frame(row) for row in range(len(group["seq"]))]
            assert len(images) >= 80 and all(image is not None for image in images)
            jumping = FrameReader(f, stream)
            for row in np.random.default_rng(0).permutation(len(images))[:12]:
                assert np.array_equal(jumping.frame(int(row)), images[row])
    from capture_app.dataset.training_rows import ImageReader, read_training_rows
    rows = read_training_rows(str(path))
    with ImageReader(str(path)) as reader:  # what the LeRobot export decodes
        used = rows.image_rows["ego"]
        assert reader.frame("ego", int(used[used >= 0][-1])).shape == (180, 320, 3)


@pytest.mark.slow
def test_sigkill_while_recording_video_keeps_every_frame_up_to_the_last_second(tmp_path):
    partial, killed_at = record_and_kill(_video_rig(tmp_path), tmp_path / "out", "killed", 2.7)
    assert main(["recover", str(partial)]) == 0
    path = tmp_path / "out" / "killed.h5"
    assert validate_and_summarize(path).problems == []
    with h5py.File(path, "r") as f:
        for stream in ("ego_camera", "top_camera"):
            group = f[f"streams/{stream}"]
            assert killed_at - group["t_receive_ns"][-1] < 1_000_000_000, stream
            reader = FrameReader(f, stream)
            assert all(reader.frame(row) is not None for row in range(len(group["seq"])))


def test_doctor_says_which_video_encoder_a_rig_gets():
    from capture_app.tools.doctor import format_checks, video_encoder_checks
    rig = small_sim_text(drivers_in="process")
    assert video_encoder_checks(parse_config(rig, "<no video>")) == []
    checks = video_encoder_checks(parse_config(rig.replace("[writer]\n", '[writer]\nvideo_streams = ["top_camera"]\n'), "<v>"))
    assert len(checks) == 1 and checks[0].ok and checks[0].detail.startswith(VideoEncoder(64, 64).codec_name)
    assert ("h264_nvenc not used" in checks[0].detail) == (VideoEncoder(64, 64).codec_name == "libx264")
    named = parse_config(rig.replace("[writer]\n", '[writer]\nvideo_streams = ["top_camera"]\nvideo_encoder = "h264_nvenc"\n'), "<n>")
    check = video_encoder_checks(named)[0]
    assert check.ok == (VideoEncoder(64, 64).codec_name == "h264_nvenc")
    if not check.ok:
        assert "next:" in format_checks([check]) and "video_encoder" in check.detail
