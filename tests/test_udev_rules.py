"""udev/99-capture-rig.rules and doctor's USB check, against the vendors' own rules:

- Intel's ``config/99-realsense-libusb.rules`` (IntelRealSense/librealsense) lists RealSense product ids
  (0b07 D435, 0b3a D435i, ...) under vendor 8086; vendor 8086 alone is every Intel USB device.
- Stereolabs' ``99-slabs.rules`` (ZED SDK) turns USB autosuspend off for its cameras (``power/control`` on,
  ``power/autosuspend`` and ``power/autosuspend_delay_ms`` -1), e.g. ZED Mini 2b03:f682.
- MANUS dongles: vendor 3325, or Nordic 1915 with product 83fd only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from capture_app.tools import doctor
from drivers.usb_ids import REALSENSE_PRODUCTS, ZED_PRODUCTS, identify

RULES = Path(__file__).resolve().parent.parent / "udev" / "99-capture-rig.rules"
TOKEN = re.compile(r'\s*([A-Za-z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"\s*(,|$)')


def _rules() -> list[list[tuple[str, str, str]]]:
    """Each rule line as (key, operator, value) triples; a line that is not entirely key-op-"value" fails."""
    rules = []
    for number, line in enumerate(RULES.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens, position = [], 0
        while position < len(line):
            match = TOKEN.match(line, position)
            assert match, f"{RULES.name}:{number}: not a udev rule from column {position}: {line[position:]!r}"
            tokens.append(match.groups()[:3])
            position = match.end()
        rules.append(tokens)
    return rules


def _matches(rule, key):
    return {value for k, op, value in rule if k == key and op == "=="}


def _assigned(rule, key):
    return [(op, value) for k, op, value in rule if k == key and op in ("=", ":=", "+=")]


def test_no_rule_makes_a_device_world_writable_and_each_grants_access_to_the_user():
    for rule in _rules():
        for _, mode in _assigned(rule, "MODE"):
            assert int(mode, 8) & 0o002 == 0, f"world-writable: {rule}"
        if _assigned(rule, "MODE"):
            assert ("+=", "uaccess") in _assigned(rule, "TAG") or _assigned(rule, "GROUP"), rule


def test_realsense_rules_list_intels_product_ids_never_the_whole_vendor():
    intel = [r for r in _rules() if _matches(r, "ATTRS{idVendor}") == {"8086"}]
    assert intel
    for rule in intel:
        assert _matches(rule, "ATTRS{idProduct}"), f"a rule for every Intel device: {rule}"
    usb = set().union(*(_matches(r, "ATTRS{idProduct}") for r in intel if _matches(r, "SUBSYSTEM") == {"usb"}))
    assert usb == set(REALSENSE_PRODUCTS)
    assert {"0b07", "0b3a", "0ad3", "0b5c"} <= usb  # D435, D435i, D415, D455 as in Intel's rules
    video = set().union(*(_matches(r, "ATTRS{idProduct}") for r in intel if _matches(r, "KERNEL")))
    assert video == set(REALSENSE_PRODUCTS)


def test_nordic_rules_are_for_the_manus_dongle_only():
    for rule in _rules():
        if _matches(rule, "ATTRS{idVendor}") == {"1915"}:
            assert _matches(rule, "ATTRS{idProduct}") == {"83fd"}, rule


@pytest.mark.parametrize("product", sorted(ZED_PRODUCTS))
def test_zed_cameras_get_stereolabs_autosuspend_settings(product):
    settings = {}
    for rule in _rules():
        if _matches(rule, "ATTRS{idVendor}") == {"2b03"} and _matches(rule, "ATTRS{idProduct}") == {product}:
            assert _matches(rule, "ACTION") == {"add"} and _matches(rule, "SUBSYSTEM") == {"usb"}
            for key, op, value in rule:
                if key.startswith("ATTR{power/"):
                    settings[key] = value
    assert settings == {"ATTR{power/control}": "on", "ATTR{power/autosuspend}": "-1",
                        "ATTR{power/autosuspend_delay_ms}": "-1"}


def _sysfs(tmp_path, devices):
    for k, (vendor, product) in enumerate(devices, 1):
        folder = tmp_path / f"1-{k}"
        folder.mkdir()
        (folder / "idVendor").write_text(vendor + "\n")
        (folder / "idProduct").write_text(product + "\n")
        (folder / "busnum").write_text("1\n")
        (folder / "devnum").write_text(f"{k}\n")
    return str(tmp_path)


def test_doctor_identifies_rig_devices_by_vendor_and_product(tmp_path):
    sysfs = _sysfs(tmp_path, [("8086", "0b07"), ("8086", "0a2b"), ("8086", "8000"), ("1915", "83fd"),
                              ("1915", "c00a"), ("3325", "0001"), ("2b03", "f682"), ("28de", "2101")])
    subjects = [c.subject for c in doctor.usb_permission_checks(sysfs)]
    assert subjects == ["USB Intel RealSense D435 8086:0b07 (/dev/bus/usb/001/001)",
                        "USB MANUS dongle (Nordic 1915:83fd) 1915:83fd (/dev/bus/usb/001/004)",
                        "USB MANUS dongle 3325:0001 (/dev/bus/usb/001/006)",
                        "USB Stereolabs ZED 2b03:f682 (/dev/bus/usb/001/007)",
                        "USB Valve (VIVE trackers, dongles) 28de:2101 (/dev/bus/usb/001/008)"]
    # an Intel Bluetooth adapter or hub and a Nordic mouse are not rig devices
    assert identify("8086", "0a2b") is None and identify("1915", "c00a") is None and identify("8086", "0B07")
