"""The OpenVR tracker driver against a fake of the SDK objects (SteamVR cannot run here)."""

from __future__ import annotations

import time
import numpy as np
import pytest
import zmq

from capture_app.bus.wire import BusSubscriber
from capture_app.rig.config import DriverConfig
from capture_app.core.errors import DeviceDisconnectedError, DeviceNotFoundError
from capture_app.core.geometry import quat_to_matrix, rot_y
from drivers import base, vive
from tests.openvr_runtime import StubRuntime


openvr = pytest.importorskip("openvr")


@pytest.fixture
def runtime(monkeypatch):
    """The real pyopenvr module and IVRSystem, with a stub runtime behind its C function table."""
    rt = StubRuntime(openvr)
    rt.devices = {0: (openvr.TrackedDeviceClass_HMD, "HMD"), 3: (openvr.TrackedDeviceClass_GenericTracker, "LHR-HEAD"),
                  5: (openvr.TrackedDeviceClass_GenericTracker, "LHR-LEFT")}
    for i in rt.devices:
        rt.set_pose(i)
    monkeypatch.setattr(openvr, "init", lambda app_type: rt.system)
    monkeypatch.setattr(openvr, "shutdown", lambda: None)
    monkeypatch.setattr(base, "BACKOFF_START_S", 0.02)
    yield rt
    vive._Session.users, vive._Session.system = 0, None


def _driver(serial="LHR-LEFT", stream="left_wrist_tracker", endpoint="inproc://unused", **kwargs):
    return vive.OpenVRTracker(DriverConfig(stream, "openvr_tracker", stream, 250, serial=serial), endpoint, **kwargs)


def test_poses_and_tracking_states_through_the_real_binding(runtime):
    T = np.eye(4)
    T[:3, :3] = rot_y(np.pi / 2)
    T[:3, 3] = [0.1, 1.2, -0.3]
    driver = _driver()
    driver.open()
    try:
        runtime.set_pose(5, T)
        sample = driver.read()
        # the driver hands the binding a full array (a None array is sent as NULL, count 0, and gives None)
        assert runtime.pose_calls[-1] == openvr.k_unMaxTrackedDeviceCount
        np.testing.assert_allclose(sample.arrays["pose"][:3], [0.1, 1.2, -0.3], atol=1e-6)  # float32 in OpenVR
        np.testing.assert_allclose(quat_to_matrix(sample.arrays["pose"][3:]), T[:3, :3], atol=1e-6)
        assert sample.tracking == "ok"
        runtime.set_pose(5, T, result=openvr.TrackingResult_Running_OutOfRange)
        assert driver.read().tracking == "degraded"
        runtime.set_pose(5, T, valid=False, result=openvr.TrackingResult_Calibrating_InProgress)
        assert driver.read().tracking == "lost"
        runtime.set_pose(5, T, connected=False)
        with pytest.raises(DeviceDisconnectedError, match="LHR-LEFT.*disconnected"):
            driver.read()
    finally:
        driver.close()


def test_a_none_pose_array_returns_none_from_the_real_binding(runtime):
    """The failure of the first driver, pinned: pyopenvr passes NULL/0 for None and returns None."""
    assert runtime.system.getDeviceToAbsoluteTrackingPose(openvr.TrackingUniverseStanding, 0, None) is None
    assert runtime.pose_calls == [0]


def test_polling_runs_at_the_configured_rate(runtime):
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


def test_unknown_serial_lists_the_trackers_seen(runtime):
    with pytest.raises(DeviceNotFoundError, match="LHR-RIGHT.*not found.*LHR-HEAD, LHR-LEFT"):
        _driver(serial="LHR-RIGHT").open()


def test_tracker_appearing_disappearing_and_reappearing_is_reported_and_survived(runtime):
    context = zmq.Context()
    subscriber = BusSubscriber(bind=["inproc://vive"], context=context)
    del runtime.devices[5]                   # not switched on yet
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
        runtime.devices[5] = (openvr.TrackedDeviceClass_GenericTracker, "LHR-LEFT")  # switched on
        collect(0.3)
        runtime.set_pose(5, connected=False)  # battery dies
        collect(0.2)
        runtime.set_pose(5)                   # back
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


@pytest.mark.parametrize("code, message", [(110, "SteamVR is not installed.*null HMD driver"),
                                           (101, "SteamVR is not installed"),
                                           (108, "found no headset.*null HMD")])
def test_init_errors_of_the_real_binding_are_explained(monkeypatch, code, message):
    def init(app_type):  # what openvr.init raises: the binding's own InitError subclass for that code
        openvr.error_code.InitError.check_error_value(code)
    monkeypatch.setattr(openvr, "init", init)
    with pytest.raises(DeviceNotFoundError, match=message):
        _driver().open()
    vive._Session.users, vive._Session.system = 0, None


def test_the_real_openvr_without_steamvr_gives_a_clear_message():
    with pytest.raises(DeviceNotFoundError, match="SteamVR"):
        _driver().open()
    vive._Session.users, vive._Session.system = 0, None
