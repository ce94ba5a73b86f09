"""``doctor`` and ``doctor --live`` against SDKs that raise their own exceptions (not a CaptureError):
each device's check fails with what, which device and what to do, and the later checks still run.

The exceptions are the vendors' own: pyrealsense2 raises ``RuntimeError`` from librealsense (e.g.
"failed to set power state" when the USB device is not accessible); pyzed.sl before zed-python-api
v5.0.5 raises ``TypeError`` on ``ERROR_CODE`` ordering (tests/fake_pyzed.py).
"""

from __future__ import annotations

import sys
import types

import pytest

from capture_app.tools import doctor, doctor_live
from capture_app.rig.config import parse_config
from drivers import realsense, zed
from tests import fake_pyzed

RIG = """
version = 1
name = "lab"

[[drivers]]
name = "top_camera"
type = "realsense"
stream = "top_camera"
rate_hz = 30

[[drivers]]
name = "ego_camera"
type = "zed"
stream = "ego_camera"
rate_hz = 30
options = { backend = "sdk" }
"""


def _broken_realsense():
    """pyrealsense2 whose context cannot query devices: librealsense raises RuntimeError (not a CaptureError)."""
    class Context:
        def query_devices(self):
            raise RuntimeError("failed to set power state")
    return types.SimpleNamespace(context=Context, __version__="2.59.0")


@pytest.fixture
def faulty_sdks(monkeypatch, tmp_path):
    sl = fake_pyzed.module("5.0.3")  # ERROR_CODE without ordering, as on 4.x and 5.0.0-5.0.4
    monkeypatch.setattr(realsense, "import_realsense", _broken_realsense)
    monkeypatch.setattr(zed, "import_zed_sdk", lambda: sl)
    monkeypatch.setitem(sys.modules, "pyrealsense2", _broken_realsense())
    monkeypatch.setitem(sys.modules, "pyzed", types.ModuleType("pyzed"))
    monkeypatch.setitem(sys.modules, "pyzed.sl", sl)
    monkeypatch.setattr(doctor, "RULES_DIR", tmp_path)  # no rules installed here
    return sl


def test_doctor_reports_an_sdk_exception_per_device_and_runs_every_later_check(faulty_sdks):
    checks, all_present = doctor.run_doctor(parse_config(RIG, "<rig>"))
    by_subject = {c.subject: c for c in checks}
    top = by_subject["top_camera"]
    assert not top.ok and "RuntimeError: failed to set power state" in top.detail and "pyrealsense2" in top.detail
    assert top.next_step
    # the device after it was still opened: pyzed 5.0.x without ERROR_CODE ordering works
    assert by_subject["ego_camera"].ok, by_subject["ego_camera"]
    assert "5.0.3" in by_subject["ego_camera"].detail
    assert by_subject["SDK pyzed.sl"].ok and "5.0.3" in by_subject["SDK pyzed.sl"].detail
    assert "udev rules" in by_subject and not all_present


def test_doctor_reports_a_crashing_check_group_and_still_runs_the_others(faulty_sdks, monkeypatch):
    def broken_sysfs(*args):
        raise PermissionError("/sys/bus/usb/devices: permission denied")
    monkeypatch.setattr(doctor, "usb_permission_checks", broken_sysfs)
    checks, _ = doctor.run_doctor(parse_config(RIG, "<rig>"))
    usb = next(c for c in checks if c.subject == "USB devices")
    assert not usb.ok and "PermissionError" in usb.detail
    assert any(c.subject == "udev rules" for c in checks) and any(c.subject == "ego_camera" for c in checks)
    text = doctor.format_checks(checks)
    assert "[FAIL] top_camera: the pyrealsense2 SDK raised RuntimeError" in text and "next:" in text


def test_doctor_live_reports_an_sdk_exception_and_streams_the_next_device(faulty_sdks):
    timings, errors = doctor_live.live_check(parse_config(RIG, "<rig>"), seconds=0.3)
    assert any(e.startswith("top_camera: the SDK raised RuntimeError: failed to set power state") for e in errors)
    ego = next(t for t in timings if t.stream == "ego_camera")
    assert ego.samples > 0, errors  # pyzed 5.0.x grabbed: no TypeError on ERROR_CODE
    top = next(t for t in timings if t.stream == "top_camera")
    assert top.samples == 0 and top.problems


def test_doctor_live_reports_an_sdk_exception_while_streaming(faulty_sdks, monkeypatch):
    def grab(self, runtime):
        raise RuntimeError("CUDA error 700 (illegal address)")
    monkeypatch.setattr(faulty_sdks.Camera, "grab", grab)
    timings, errors = doctor_live.live_check(parse_config(RIG, "<rig>"), seconds=0.3)
    assert any(e.startswith("ego_camera: the SDK raised RuntimeError: CUDA error 700") for e in errors), errors
    assert any(e.startswith("top_camera:") for e in errors)
