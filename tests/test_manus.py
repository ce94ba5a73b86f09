"""The MANUS binding and driver against a fake SDK library compiled here with gcc from the public
MANUS headers' declarations (tests/fake_manus/fake_manus.c names its sources)."""

from __future__ import annotations

import calendar
import ctypes
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from capture_app.rig.config import DriverConfig
from capture_app.core.errors import DeviceNotFoundError, SDKMissingError
from capture_app.core.hand import KEYPOINT_NAMES
from drivers.manus import binding
from drivers.manus.driver import ManusGloves

SOURCE = Path(__file__).parent / "fake_manus" / "fake_manus.c"
CHAINS = {"thumb": 5, "index": 6, "middle": 7, "ring": 8, "pinky": 9}
JOINTS = {"metacarpal": 1, "proximal": 2, "intermediate": 3, "distal": 4, "tip": 5}

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the fake SDK")


@pytest.fixture(scope="session")
def fake_sdk(tmp_path_factory):
    """{2: path, 3: path}: the fake SDK built as a 2.x and a 3.x library."""
    out = tmp_path_factory.mktemp("fake_manus")
    libraries = {}
    for major in (2, 3):
        path = out / f"libManusSDK-fake{major}.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f"-DSDK_MAJOR={major}", str(SOURCE), "-o", str(path),
                        "-lpthread", "-lm"], check=True)
        libraries[major] = str(path)
    return libraries


FAKE_EPOCH_NS = calendar.timegm((2026, 11, 23, 12, 0, 0)) * 1_000_000_000  # the fake's publishTime origin


def expected_keypoints(side: int) -> np.ndarray:
    """The fake's hand in its root frame (fake_manus.c), in canonical order."""
    points = [np.zeros(3)]
    for name in KEYPOINT_NAMES[1:]:
        finger, joint = name.split("_")
        points.append(np.array([0.01 * CHAINS[finger] + 0.001 * JOINTS[joint], 0.002 * JOINTS[joint], 0.1 * side]))
    return np.array(points)


def _driver(library, **options):
    config = DriverConfig("gloves", "manus", "left_glove", 120, extra_streams=("right_glove",),
                          options={"library": library, **options})
    return ManusGloves(config, "inproc://unused")


def _collect(driver, n=40):
    samples = []
    deadline = time.monotonic() + 5
    while len(samples) < n and time.monotonic() < deadline:
        sample = driver.read()
        if sample is not None:
            samples.append(sample)
    return samples


@pytest.mark.parametrize("major", [2, 3])
@pytest.mark.parametrize("order", ["chain", "reversed"])
@pytest.mark.parametrize("world", [True, False])
def test_both_hands_map_into_the_canonical_order_whatever_the_node_order(fake_sdk, major, order, world, monkeypatch):
    monkeypatch.setenv("FAKE_MANUS_NODE_ORDER", order)
    driver = _driver(fake_sdk[major], world_coordinates=world)
    driver.open()
    try:
        samples = _collect(driver)
    finally:
        driver.close()
    # integrated mode connects to the dongle without host discovery, as the official SDKClient does
    assert driver.device_info["sdk_major"] == major and driver.device_info["host"] == "integrated"
    by_stream = {s.stream for s in samples}
    assert by_stream == {"left_glove", "right_glove"}
    for sample in samples:
        side = 1 if sample.stream == "left_glove" else 2
        keypoints = sample.arrays["keypoints"]
        assert keypoints.shape == (25, 3) and keypoints.dtype == np.float32
        np.testing.assert_allclose(keypoints, expected_keypoints(side), atol=2e-6)  # rotated hands, float32
    stamps = [s.t_capture_ns for s in samples if s.stream == "left_glove"]
    assert np.all(np.diff(stamps) > 0)
    # publishTime decoded by CoreSdk_GetTimestampInfo: UTC, whole milliseconds after the fake's origin
    device = np.array([s.t_device_ns for s in samples]) - FAKE_EPOCH_NS
    assert np.all(device % 1_000_000 == 0) and 0 < device.min() and device.max() < 60e9



def test_remote_mode_connects_to_the_core_host_it_finds(fake_sdk):
    driver = _driver(fake_sdk[3], mode="remote")
    driver.open()
    try:
        assert driver.device_info["host"] == "fake-core" and _collect(driver, 4)
    finally:
        driver.close()


def test_struct_layouts_match_what_gcc_makes_of_the_header_declarations(fake_sdk):
    library = ctypes.CDLL(fake_sdk[3])
    library.FakeManus_SizeOf.restype = ctypes.c_uint32
    names = ["SkeletonNode", "RawSkeletonInfo", "SkeletonStreamInfo", "NodeInfo", "ManusHost", "CoordinateSystemVUH",
             "ManusTimestampInfo"]
    for i, name in enumerate(names):
        assert ctypes.sizeof(binding.STRUCTS[name]) == library.FakeManus_SizeOf(i) == binding.EXPECTED_SIZES[name], name


def test_the_sdk_thread_callbacks_arrive_at_their_rate(fake_sdk, monkeypatch):
    monkeypatch.setenv("FAKE_MANUS_RATE_HZ", "200")
    driver = _driver(fake_sdk[3])
    driver.open()
    try:
        start = time.monotonic()
        samples = _collect(driver, 200)
        elapsed = time.monotonic() - start
    finally:
        driver.close()
    assert len(samples) == 200 and elapsed < 1.5  # 100 callbacks x 2 hands at 200 Hz ~ 0.5 s


def test_wrong_struct_size_is_refused_with_a_clear_message():
    with pytest.raises(binding.ManusABIError, match="SkeletonNode is 44 B here but 48 B in the SDK"):
        binding.check_struct_sizes({**binding.EXPECTED_SIZES, "SkeletonNode": 48}, sdk_version="9.9")
    binding.check_struct_sizes()  # the real table passes


def test_missing_library_and_missing_hosts_say_what_to_do(fake_sdk, monkeypatch, tmp_path):
    monkeypatch.delenv("MANUS_SDK_LIB", raising=False)
    with pytest.raises(SDKMissingError, match="MANUS_SDK_LIB.*does not ship it"):
        _driver("").open()
    with pytest.raises(SDKMissingError, match="does not exist"):
        _driver(str(tmp_path / "libManusSDK.so")).open()
    monkeypatch.setenv("FAKE_MANUS_NO_HOSTS", "1")
    driver = _driver(fake_sdk[3])
    with pytest.raises(DeviceNotFoundError, match="MANUS dongle not found"):
        driver.open()
    driver.close()
    driver = _driver(fake_sdk[3], mode="remote")
    with pytest.raises(DeviceNotFoundError, match="no MANUS host found"):
        driver.open()
    driver.close()


def test_library_from_the_environment(fake_sdk, monkeypatch):
    monkeypatch.setenv("MANUS_SDK_LIB", fake_sdk[3])
    driver = _driver("")
    driver.open()
    try:
        assert _collect(driver, 4)
    finally:
        driver.close()


def test_an_sdk_crash_does_not_take_the_app_down_and_the_gloves_come_back(fake_sdk, tmp_path, monkeypatch):
    """The glove SDK segfaults mid-episode: its process dies, the app records the gap and restarts it."""
    import h5py

    from capture_app.rig.config import parse_config, with_changes
    from capture_app.recorder.session import CaptureSession
    from tests.conftest import small_sim_text

    monkeypatch.setenv("FAKE_MANUS_CRASH_ONCE", str(tmp_path / "crashed-once"))
    monkeypatch.setenv("FAKE_MANUS_CRASH_FRAME", "480")  # 4 s after connecting: inside the episode
    base = parse_config(small_sim_text(), "<manus rig>")
    gloves = DriverConfig("gloves", "manus", "left_glove", 120, extra_streams=("right_glove",),
                          options={"library": fake_sdk[3]})
    drivers = [d for d in base.drivers if not d.stream.endswith("glove")] + [gloves]
    config = with_changes(base, drivers=tuple(drivers))
    with CaptureSession(config) as session:
        assert session.wait_for_streams(8) == []
        session.start_episode(tmp_path, name="crash")
        deadline = time.monotonic() + 15
        while not (tmp_path / "crashed-once").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "crashed-once").exists(), "the fake SDK never crashed"
        deadline = time.monotonic() + 10
        while session.stream_status()["left_glove"].state != "lost" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.stream_status()["left_glove"].state == "lost"  # the crash shows
        at_loss = session.stream_status()["left_glove"].samples
        deadline = time.monotonic() + 15  # back: the restarted driver process delivers again
        while session.stream_status()["left_glove"].samples < at_loss + 120 and time.monotonic() < deadline:
            time.sleep(0.1)
        status = session.stream_status()["left_glove"]
        assert status.samples >= at_loss + 120 and status.state != "lost", f"the glove stream did not come back: {status}"
        time.sleep(0.5)
        path = session.stop_episode()
    with h5py.File(path, "r") as f:
        events = [m.decode() for m in f["events/message"][:]]
        assert any("exited with status -11" in e for e in events), events
        assert any("driver process restarted" in e for e in events), events
        t = f["streams/left_glove/t_capture_ns"][:]
        assert np.diff(t).max() > 300e6  # the gap is in the data, not papered over
        assert len(t) > 100 and f["streams/right_glove/keypoints"].shape[1:] == (25, 3)


def test_device_time_comes_from_the_stream_info_as_the_official_sdkclients_take_it(fake_sdk, monkeypatch):
    """Both official SDKClients overwrite each skeleton's publishTime with SkeletonStreamInfo.publishTime
    (SDKClient.cpp, OnRawSkeletonStreamCallback); an SDK that leaves the per-skeleton field 0 still gives
    every sample its device time."""
    monkeypatch.setenv("FAKE_MANUS_PUBLISH_TIME", "stream")
    driver = _driver(fake_sdk[3])
    driver.open()
    try:
        samples = _collect(driver)
    finally:
        driver.close()
    device = np.array([s.t_device_ns if s.t_device_ns is not None else -1 for s in samples]) - FAKE_EPOCH_NS
    assert len(samples) == 40 and np.all(device % 1_000_000 == 0) and 0 < device.min() and device.max() < 60e9
    assert "device_time_missing" not in driver.device_info and driver.device_info["clock"]  # the report is filled


def test_samples_without_any_device_time_are_counted_and_flagged(fake_sdk, monkeypatch):
    monkeypatch.setenv("FAKE_MANUS_PUBLISH_TIME", "none")
    driver = _driver(fake_sdk[2])
    driver.open()
    try:
        samples = _collect(driver)
    finally:
        driver.close()
    assert samples and all(s.t_device_ns is None for s in samples)
    assert driver.device_info["device_time_missing"] == len(samples)
    assert "publishTime missing" in driver.device_info["timestamp_domain"]
