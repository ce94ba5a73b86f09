"""Rig configs naming real devices on a machine without them; mixes of real, recorded and simulated sources."""

from __future__ import annotations

import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from capture_app.rig.config import load_config, parse_config, to_toml, with_changes, DriverConfig
from capture_app.episode.format import validate_and_summarize
from drivers.sim.calibration import sim_calibration
from tests.conftest import small_sim_text

pytestmark = pytest.mark.slow

REAL_DRIVERS = """
[[drivers]]
name = "top_camera"
type = "realsense"
stream = "top_camera"
rate_hz = 30
serial = "141722071234"

[[drivers]]
name = "head_tracker"
type = "openvr_tracker"
stream = "head_tracker"
rate_hz = 250
serial = "LHR-1234ABCD"

[[drivers]]
name = "ego_camera"
type = "zed"
stream = "ego_camera"
rate_hz = 30
options = { backend = "uvc", uvc_device = "/dev/video97" }

[[drivers]]
name = "gloves"
type = "manus"
stream = "left_glove"
extra_streams = ["right_glove"]
rate_hz = 120
"""


@pytest.fixture
def real_rig(tmp_path, monkeypatch):
    monkeypatch.delenv("MANUS_SDK_LIB", raising=False)
    calibration = tmp_path / "calibration.json"
    sim_calibration(load_config()).save(calibration)
    path = tmp_path / "rig.toml"
    path.write_text(f'version = 1\nname = "lab"\n[calibration]\npath = "{calibration}"\n' + REAL_DRIVERS)
    return path


def _run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "capture_app.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_record_names_every_missing_device_without_a_traceback(real_rig, tmp_path):
    result = _run("record", "--config", str(real_rig), "--out", str(tmp_path / "out"), "--duration", "1",
                  "--wait", "2")
    assert result.returncode == 1
    err = result.stderr
    assert "Traceback" not in err
    for fragment in ("'top_camera' is not delivering: RealSense 141722071234", "'head_tracker' is not delivering: "
                     "SteamVR", "'ego_camera' is not delivering: no video device '/dev/video97'",
                     "'left_glove' is not delivering: no MANUS SDK library", "'right_glove' is not delivering: no MANUS"):
        assert fragment in err, fragment
    assert "capture-app doctor" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_monitor_warns_per_missing_device_and_still_opens(real_rig, tmp_path):
    shot = tmp_path / "shot.png"
    result = _run("monitor", "--config", str(real_rig), "--screenshot", str(shot), "--after", "1")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and shot.exists()
    assert "warning: stream 'top_camera' is not delivering: RealSense 141722071234" in result.stderr
    assert "warning: stream 'right_glove' is not delivering: no MANUS SDK library" in result.stderr


def test_doctor_exits_non_zero_and_says_what_to_do(real_rig):
    result = _run("doctor", "--config", str(real_rig))
    assert result.returncode == 1
    assert "[FAIL] top_camera: RealSense 141722071234" in result.stdout
    assert "[FAIL] gloves: no MANUS SDK library" in result.stdout
    assert "udev rules" in result.stdout
    assert _run("doctor").returncode == 0  # the simulated rig is always fine


def _rig_with_a_recorded_top_camera(tmp_path, recording, drivers_in="threads"):
    """The small sim rig with its top camera replaced by a RealSense recording played through the real SDK."""
    from tests import realsense_fixture
    base = parse_config(small_sim_text(drivers_in=drivers_in), "<mixed>")
    top = DriverConfig("top_camera", "realsense", "top_camera", 30, serial=realsense_fixture.SERIAL,
                       options={"playback_file": str(recording), "width": realsense_fixture.W,
                                "height": realsense_fixture.H})
    config = with_changes(base, drivers=tuple([d for d in base.drivers if d.stream != "top_camera"] + [top]))
    rig = tmp_path / "mixed.toml"
    rig.write_text(to_toml(config))
    return rig


def test_a_realsense_recording_plus_simulated_gloves_and_trackers(tmp_path):
    pytest.importorskip("pyrealsense2")
    from tests import realsense_fixture
    recording = tmp_path / "top.db3"
    realsense_fixture.write_recording(recording, frames=150)
    rig = _rig_with_a_recorded_top_camera(tmp_path, recording, drivers_in="process")
    result = _run("record", "--config", str(rig), "--out", str(tmp_path / "out"), "--duration", "2.5",
                  "--name", "mixed")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / "mixed.h5"
    summary = validate_and_summarize(path)
    assert summary.problems == []
    rates = {s.name: s for s in summary.streams}
    assert rates["top_camera"].samples >= 50 and rates["top_camera"].rate_hz == pytest.approx(30, rel=0.1)
    assert rates["left_glove"].samples >= 250 and rates["head_tracker"].seq_gaps == 0
    with h5py.File(path, "r") as f:
        device = f["streams/top_camera"].attrs["device"]
        assert realsense_fixture.SERIAL in device and "color_intrinsics" in device
        assert f["streams/top_camera/depth"].shape[1:] == (realsense_fixture.H, realsense_fixture.W)
        assert np.all(f["streams/top_camera/t_device_ns"][:] > 0)


def test_replay_of_a_recorded_stream_publishes_it_again_at_its_rate(tmp_path):
    from capture_app.recorder.session import CaptureSession
    config = parse_config(small_sim_text(), "<source>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(5) == []
        session.start_episode(tmp_path, name="source")
        time.sleep(1.5)
        source = session.stop_episode()
    # loop: the replay outlasts however long the machine takes to bring the streams up
    replayed = [DriverConfig(d.name, "replay", d.stream, d.rate_hz, options={"episode": str(source), "loop": True})
                for d in config.drivers]
    replay_config = with_changes(config, drivers=tuple(replayed))
    with CaptureSession(replay_config) as session:
        assert session.wait_for_streams(5) == []
        session.start_episode(tmp_path, name="replayed")
        time.sleep(1.0)
        path = session.stop_episode()
    with h5py.File(source, "r") as a, h5py.File(path, "r") as b:
        for stream in ("head_tracker", "left_glove", "ego_camera"):
            seq_a = a[f"streams/{stream}/seq"][:].astype(np.int64)
            seq_b = b[f"streams/{stream}/seq"][:].astype(np.int64)
            loop = seq_b // (seq_a[-1] + 1)       # each pass adds the source's last seq + 1
            longest_pass = loop == np.bincount(loop).argmax()  # the pass the episode holds most of
            seq_b = seq_b[longest_pass] % (seq_a[-1] + 1)
            rows = np.searchsorted(seq_a, seq_b)
            assert len(seq_b) > 10
            if stream == "ego_camera":  # the JPEG is passed through unchanged
                first = int(np.flatnonzero(longest_pass)[0])
                assert bytes(b[f"streams/{stream}/color"][first]) == bytes(a[f"streams/{stream}/color"][rows[0]])
            else:
                column = "pose" if stream.endswith("tracker") else "keypoints"
                np.testing.assert_array_equal(b[f"streams/{stream}/{column}"][:][longest_pass],
                                              a[f"streams/{stream}/{column}"][rows])
            spacing_a = np.diff(a[f"streams/{stream}/t_capture_ns"][rows])
            np.testing.assert_array_equal(np.diff(b[f"streams/{stream}/t_capture_ns"][:][longest_pass]), spacing_a)


def test_doctor_live_streams_a_recorded_realsense_and_reports_its_timing(tmp_path):
    pytest.importorskip("pyrealsense2")
    from tests import realsense_fixture
    recording = tmp_path / "top.db3"
    realsense_fixture.write_recording(recording, rec=realsense_fixture.Recording(frames=120, depth_offset_ms=4))
    rig = _rig_with_a_recorded_top_camera(tmp_path, recording)
    result = _run("doctor", "--config", str(rig), "--live", "--seconds", "2")
    line = next(x for x in result.stdout.splitlines() if x.startswith("top_camera"))
    samples, rate = int(line.split()[1]), float(line.split()[2])
    assert samples >= 50 and rate == pytest.approx(30, rel=0.15), result.stdout
    assert "realsense:hardware_clock" in line and "PROBLEM" not in result.stdout, result.stdout


def test_cli_rejects_bad_durations_and_accepts_verbose_anywhere():
    for bad in ("-1", "0", "nan", "abc"):
        result = _run("record", "--sim", "--duration", bad)
        assert result.returncode == 2 and "--duration" in result.stderr and "Traceback" not in result.stderr
    assert _run("-v", "doctor").returncode == 0
    assert _run("doctor", "-v").returncode == 0
