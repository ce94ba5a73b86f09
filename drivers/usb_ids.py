"""The USB devices of a capture rig, by vendor and product id: what ``doctor`` calls each device it finds,
and what ``udev/99-capture-rig.rules`` grants access to (tests/test_udev_rules.py keeps the two in step).

Sources:
- Intel RealSense: the D400-family product ids of Intel's own ``config/99-realsense-libusb.rules``
  (IntelRealSense/librealsense; e.g. 0b07 D435, 0b3a D435i, 0ad3 D415, 0b5c D455, 0b5b D405) and the
  D4xx recovery (DFU) ids 0adb/0adc. Vendor 8086 alone is every Intel USB device (hubs, Bluetooth,
  webcams...), never "a RealSense".
- Stereolabs (2b03): ZED f582, ZED Mini f682 (video) / f681 (sensors), ZED 2 f780/f781, ZED 2i f880/f881,
  as in the ZED SDK's ``99-slabs.rules``, which also turns USB autosuspend off for them.
- MANUS: vendor 3325; some dongles enumerate as Nordic Semiconductor 1915:83fd (1915 alone is any Nordic
  device: keyboards, mice, dev kits).
- Valve (28de) and HTC (0bb4): VIVE trackers, their dongles and lighthouse devices (SteamVR's own rules
  are vendor-wide too).
"""

from __future__ import annotations

REALSENSE_PRODUCTS = {  # product id -> model ("D4xx": another D400-family variant)
    "0ad1": "D400", "0ad2": "D410", "0ad3": "D415", "0ad4": "D430", "0ad5": "D4xx", "0ad6": "D4xx (USB 2)",
    "0af2": "D4xx", "0af6": "D420", "0afe": "D4xx", "0aff": "D4xx", "0b00": "D4xx", "0b01": "D4xx", "0b03": "D460",
    "0b07": "D435", "0b0c": "D4xx", "0b0d": "D4xx", "0b3a": "D435i", "0b3d": "D4xx", "0b48": "D4xx", "0b49": "D4xx",
    "0b4b": "D430i", "0b4d": "D4xx", "0b52": "D4xx", "0b5b": "D405", "0b5c": "D455",
    "0adb": "D4xx recovery", "0adc": "D4xx recovery",
}
ZED_PRODUCTS = {"f582": "ZED", "f682": "ZED Mini", "f681": "ZED Mini sensors", "f780": "ZED 2",
                "f781": "ZED 2 sensors", "f880": "ZED 2i", "f881": "ZED 2i sensors"}

# (vendor, product or None = any product of that vendor) -> what doctor calls it
RIG_DEVICES: dict[tuple[str, str | None], str] = {
    ("28de", None): "Valve (VIVE trackers, dongles)",
    ("0bb4", None): "HTC (VIVE)",
    ("2b03", None): "Stereolabs ZED",
    ("3325", None): "MANUS dongle",
    ("1915", "83fd"): "MANUS dongle (Nordic 1915:83fd)",
    **{("8086", product): f"Intel RealSense {model}" for product, model in REALSENSE_PRODUCTS.items()},
}


def identify(vendor: str, product: str) -> str | None:
    """What a USB device of the rig is, from its sysfs ``idVendor`` / ``idProduct`` (hex); None if not ours."""
    vendor, product = vendor.strip().lower(), product.strip().lower()
    return RIG_DEVICES.get((vendor, product)) or RIG_DEVICES.get((vendor, None))
