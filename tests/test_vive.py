"""The OpenVR tracker driver against a fake of the SDK objects (SteamVR cannot run here)."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest
import zmq

from capture_app.bus import BusSubscriber
from capture_app.config import DriverConfig
from capture_app.errors import DeviceDisconnectedError, DeviceNotFoundError
from capture_app.geometry import quat_to_matrix, rot_y
from drivers import base, vive


class InitError(Exception):
    pass


class InitError_Init_PathRegistryNotFound(InitError):
    pass


class FakePose:
    def __init__(self, T=None, valid=True, connected=True, result=200):
        T = np.eye(4) if T is None else T
        self.mDeviceToAbsoluteTracking = types.SimpleNamespace(m=[list(row) for row in T[:3]])
        self.bPoseIsValid, self.bDeviceIsConnected, self.eTrackingResult = valid, connected, result


class FakeSystem:
    def __init__(self):
        self.devices = {0: (1, "HMD"), 3: (3, "LHR-HEAD"), 5: (3, "LHR-LEFT")}
        self.poses = {i: FakePose() for i in range(64)}
        self.calls = 0

    def getTrackedDeviceClass(self, i):
        return self.devices.get(i, (0, ""))[0]

    def getStringTrackedDeviceProperty(self, i, prop):
        assert prop == 1002
        return self.devices[i][1]

    def getDeviceToAbsoluteTrackingPose(self, universe, seconds, array):
        self.calls += 1
        return [self.poses[i] for i in range(64)]


def fake_openvr(system, fail_init=None):
    def init(app_type):
        if fail_init:
            raise fail_init
        return system
    return types.SimpleNamespace(
        init=init, shutdown=lambda: None, VRApplication_Other=3, TrackingUniverseStanding=1,
        TrackingUniverseSeated=0, TrackingUniverseRawAndUncalibrated=2, TrackedDeviceClass_GenericTracker=3,
        Prop_SerialNumber_String=1002, TrackingResult_Running_OK=200, TrackingResult_Running_OutOfRange=201,
        k_unMaxTrackedDeviceCount=64,
        error_code=types.SimpleNamespace(InitError=InitError,
                                         InitError_Init_PathRegistryNotFound=InitError_Init_PathRegistryNotFound))


@pytest.fixture
def system(monkeypatch):
    s = FakeSystem()
    monkeypatch.setattr(vive, "import_openvr", lambda: fake_openvr(s))
    monkeypatch.setattr(base, "BACKOFF_START_S", 0.02)
    yield s
    vive._Session.users, vive._Session.system = 0, None


def _driver(serial="LHR-LEFT", stream="left_wrist_tracker", endpoint="inproc://unused", **kwargs):
    return vive.OpenVRTracker(DriverConfig(stream, "openvr_tracker", stream, 250, serial=serial), endpoint, **kwargs)


def test_poses_and_tracking_states(system):
    T = np.eye(4)
    T[:3, :3] = rot_y(np.pi / 2)
    T[:3, 3] = [0.1, 1.2, -0.3]
    driver = _driver()
    driver.open()
    try:
        system.poses[5] = FakePose(T)
        sample = driver.read()
        np.testing.assert_allclose(sample.arrays["pose"][:3], [0.1, 1.2, -0.3])
        np.testing.assert_allclose(quat_to_matrix(sample.arrays["pose"][3:]), T[:3, :3], atol=1e-12)
        assert sample.tracking == "ok"
        system.poses[5] = FakePose(T, result=201)
        assert driver.read().tracking == "degraded"
        system.poses[5] = FakePose(T, valid=False, result=101)
        assert driver.read().tracking == "lost"
        system.poses[5] = FakePose(T, connected=False)
        with pytest.raises(DeviceDisconnectedError, match="LHR-LEFT.*disconnected"):
            driver.read()
    finally:
        driver.close()


def test_polling_runs_at_the_configured_rate(system):
    driver = _driver()
    driver.open()
    try:
        start = time.monotonic()
        stamps = [driver.read().t_capture_ns for _ in range(50)]
        elapsed = time.monotonic() - start
    finally:
        driver.close()
    assert 0.18 < elapsed < 0.4  # 50 polls at 250 Hz
    assert np.median(np.diff(stamps)) == pytest.approx(4e6, rel=0.25)


def test_unknown_serial_lists_the_trackers_seen(system):
    with pytest.raises(DeviceNotFoundError, match="LHR-RIGHT.*not found.*LHR-HEAD, LHR-LEFT"):
        _driver(serial="LHR-RIGHT").open()


def test_tracker_appearing_disappearing_and_reappearing_is_reported_and_survived(system):
    context = zmq.Context()
    subscriber = BusSubscriber(bind=["inproc://vive"], context=context)
    del system.devices[5]                   # not switched on yet
    driver = _driver(endpoint="inproc://vive", context=context)
    messages = []

    def collect(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = subscriber.recv(20)
            if m is not None:
                messages.append(m)
    driver.start()
    try:
        collect(0.3)
        system.devices[5] = (3, "LHR-LEFT")  # switched on
        collect(0.3)
        system.poses[5] = FakePose(connected=False)  # battery dies
        collect(0.2)
        system.poses[5] = FakePose()                 # back
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            m = subscriber.recv(20)
            if m is not None:
                messages.append(m)
    finally:
        driver.stop()
        subscriber.close()
        context.term()
    errors = {m.meta["last_error"] for m in messages if m.is_status}
    assert any("not found" in e for e in errors), errors
    assert any("disconnected" in e for e in errors), errors
    data = [m for m in messages if not m.is_status]
    assert data and data[-1].tracking == "ok", "streaming did not resume"


def test_steamvr_missing_is_explained(monkeypatch):
    monkeypatch.setattr(vive, "import_openvr", lambda: fake_openvr(None, InitError_Init_PathRegistryNotFound()))
    with pytest.raises(DeviceNotFoundError, match="SteamVR is not installed.*null HMD driver"):
        _driver().open()
    vive._Session.users, vive._Session.system = 0, None


def test_the_real_openvr_without_steamvr_gives_a_clear_message():
    pytest.importorskip("openvr")
    with pytest.raises(DeviceNotFoundError, match="SteamVR"):
        _driver().open()
    vive._Session.users, vive._Session.system = 0, None
