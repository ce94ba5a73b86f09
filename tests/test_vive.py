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
    """Absolute deadlines at 250 Hz: poll k is never taken before start + k periods (a loaded machine can only
    make polls late, so this holds under any load; the rate itself is what doctor --live measures)."""
    from capture_app.core.clock import now_ns
    driver = _driver()
    driver.open()
    try:
        start = driver._next_ns
        stamps = [driver.read().t_capture_ns for _ in range(50)]
        assert now_ns() >= start + 49 * 4_000_000
    finally:
        driver.close()
    for k, stamp in enumerate(stamps):
        assert stamp >= start + k * 4_000_000, f"poll {k} taken {(start + k * 4e6 - stamp) / 1e6:.2f} ms early"


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


# --- the contract of openvr.h that a real rig meets on day one (tests/openvr_runtime.py names each behaviour) ---

def test_a_tracker_whose_serial_is_not_yet_available_never_stops_the_others(runtime):
    """openvr.h TrackedProp_NotYetAvailable: "call again later". pyopenvr raises it for the slot only."""
    runtime.not_yet_available = {3}  # LHR-HEAD just switched on, in the slot scanned first
    left = _driver("LHR-LEFT")
    left.open()
    try:
        assert left.read().tracking == "ok"
    finally:
        left.close()
    with pytest.raises(DeviceNotFoundError, match="LHR-HEAD.*not found.*no serial yet \\(slot 3 \\(GenericTracker\\): "
                                                  "TrackedProp_NotYetAvailable.*trying again"):
        _driver("LHR-HEAD", "head_tracker").open()
    runtime.not_yet_available = set()  # a moment later SteamVR knows it
    head = _driver("LHR-HEAD", "head_tracker")
    head.open()
    head.close()
    assert head.device_info["openvr_index"] == 3


def test_a_tracker_held_in_hand_is_found_though_it_reports_as_a_controller(runtime):
    runtime.devices[7] = (openvr.TrackedDeviceClass_Controller, "LHR-HAND")  # SteamVR role "Held in hand"
    runtime.set_pose(7)
    driver = _driver("LHR-HAND", "right_wrist_tracker")
    driver.open()
    try:
        assert driver.read().tracking == "ok"
    finally:
        driver.close()
    assert driver.device_info["openvr_class"] == "Controller"
    assert "Held in hand" in driver.device_info["openvr_role_note"]
    assert "Manage Trackers" in driver.device_info["openvr_role_note"]
    # not found: what SteamVR sees, in every class
    with pytest.raises(DeviceNotFoundError, match="LHR-RIGHT.*not found; SteamVR sees Controller: LHR-HAND; "
                                                  "GenericTracker: LHR-HEAD, LHR-LEFT; HMD: HMD\\."):
        _driver("LHR-RIGHT").open()
    with pytest.raises(DeviceNotFoundError, match="That serial is a HMD, not a tracker"):
        _driver("HMD").open()


def test_rotation_only_fallback_keeps_the_rotation_and_flags_the_position(runtime):
    T = np.eye(4)
    T[:3, :3] = rot_y(0.3)
    driver = _driver()
    driver.open()
    try:
        runtime.set_pose(5, T, result=openvr.TrackingResult_Fallback_RotationOnly)  # IMU only (openvr.h)
        sample = driver.read()
        assert sample.tracking == "degraded" and sample.meta == {"position_valid": False}
        np.testing.assert_allclose(quat_to_matrix(sample.arrays["pose"][3:]), T[:3, :3], atol=1e-6)
        assert driver.device_info["rotation_only_samples"] == 1
        runtime.set_pose(5, T, valid=False, result=openvr.TrackingResult_Fallback_RotationOnly)
        assert driver.read().tracking == "lost"  # no valid pose at all
    finally:
        driver.close()


def test_the_stamp_is_taken_around_the_pose_call_with_its_uncertainty(runtime):
    from capture_app.core.clock import now_ns
    inside = {}

    def slow_call():  # a pose call that takes 30 ms (a loaded machine, a busy vrserver)
        inside["entry"] = now_ns()
        time.sleep(0.03)
        inside["exit"] = now_ns()
    driver = _driver()
    driver.open()
    try:
        runtime.during_pose_call = slow_call
        sample = driver.read()
    finally:
        driver.close()
    half = sample.meta["stamp_uncertainty_ms"] * 1e6
    assert sample.t_capture_ns < inside["exit"], "stamped after the pose call returned"
    assert sample.t_capture_ns - half <= inside["entry"] and sample.t_capture_ns + half >= inside["exit"] - 1
    assert half >= 15e6 and driver.device_info["slow_pose_calls"] == 1


def test_openvr_events_reach_every_tracker_driver(runtime):
    head, left = _driver("LHR-HEAD", "head_tracker"), _driver("LHR-LEFT")
    head.open()
    left.open()
    try:
        runtime.events.append((openvr.VREvent_TrackedDeviceDeactivated, 5, 0.0))
        assert head.read() is not None  # polls the event; it is not about the head tracker
        with pytest.raises(DeviceDisconnectedError, match="LHR-LEFT.*deactivated"):
            left.read()  # the head driver polled it, the left driver still gets it
        assert left.device_info["openvr_events"] == ["deactivated"]
        runtime.devices[3] = (openvr.TrackedDeviceClass_Controller, "LHR-HEAD")  # role set to "Held in hand"
        runtime.events.append((openvr.VREvent_TrackedDeviceRoleChanged, openvr.k_unTrackedDeviceIndexInvalid, 0.0))
        assert head.read() is not None
        assert head.device_info["openvr_class"] == "Controller" and "role changed" in head.device_info["openvr_events"]
        runtime.events.append((openvr.VREvent_Quit, openvr.k_unTrackedDeviceIndexInvalid, 0.0))
        with pytest.raises(DeviceDisconnectedError, match="SteamVR is quitting"):
            head.read()
    finally:
        head.close()
        left.close()


def test_doctor_uses_a_running_steamvr_and_never_starts_it(runtime, monkeypatch):
    """openvr.h: VRApplication_Background "should not start SteamVR if it's not already running";
    VR_IsRuntimeInstalled checks the installation without starting anything."""
    from capture_app.tools import doctor
    from capture_app.rig.config import parse_config
    config = parse_config('version = 1\nname = "lab"\n[[drivers]]\nname = "left"\ntype = "openvr_tracker"\n'
                          'stream = "left_wrist_tracker"\nrate_hz = 250\nserial = "LHR-LEFT"\n', "<rig>")
    applications, is_runtime_installed = [], openvr.isRuntimeInstalled

    def init(application):
        applications.append(application)
        return runtime.system
    monkeypatch.setattr(openvr, "init", init)
    monkeypatch.setattr(openvr, "isRuntimeInstalled", lambda: True)
    [check] = doctor.device_checks(config)
    assert check.ok and applications == [openvr.VRApplication_Background]

    def not_running(application):
        openvr.error_code.InitError.check_error_value(121)  # InitError_Init_NoServerForBackgroundApp
    monkeypatch.setattr(openvr, "init", not_running)
    [check] = doctor.device_checks(config)
    assert not check.ok and "SteamVR is not running" in check.detail and "does not start it" in check.detail
    monkeypatch.setattr(openvr, "isRuntimeInstalled", is_runtime_installed)  # the real one: no SteamVR here
    monkeypatch.setattr(openvr, "init", lambda application: pytest.fail("doctor started OpenVR"))
    [check] = doctor.device_checks(config)
    assert not check.ok and "SteamVR is not installed" in check.detail
