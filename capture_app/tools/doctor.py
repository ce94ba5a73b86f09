"""``capture-app doctor``: is every configured device usable, and if not, what to do next.

For each driver of the rig config it opens the device the way recording would (so the
messages are the drivers' own) and closes it again; it also reports the SDKs' versions,
whether the udev rules are installed and whether the USB devices of the rig are
accessible to this user.

No check aborts the others: an SDK exception that is not a ``CaptureError`` (a ``TypeError``
from an SDK version the driver did not expect, a ``RuntimeError`` from a vendor library) is
reported as that check's failure, naming the device, the exception and what to do.
"""

from __future__ import annotations

import glob
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from capture_app.rig.config import RigConfig
from capture_app.core.errors import CaptureError
from drivers.usb_ids import identify
from drivers.registry import create_driver

RULES_NAME = "99-capture-rig.rules"
RULES_DIR = Path("/etc/udev/rules.d")
SDK_MODULES = {"realsense": ("pyrealsense2", "pip install pyrealsense2 (and apt-get install libusb-1.0-0)"),
               "openvr_tracker": ("openvr", "pip install openvr; install and run SteamVR"),
               "zed": ("pyzed.sl", "the ZED SDK installer (optional: the UVC fallback needs only OpenCV)")}


@dataclass
class Check:
    subject: str
    ok: bool
    detail: str
    next_step: str = ""


def sdk_version(kind: str, module) -> str:
    """An SDK's version as the SDK itself reports it (pyzed.sl has no __version__)."""
    if kind == "zed":
        from drivers.zed import sdk_version as zed_sdk_version
        return zed_sdk_version(module)
    return str(getattr(module, "__version__", "unknown"))


def sdk_versions(config: RigConfig) -> list[Check]:
    checks = []
    for kind in sorted({d.type for d in config.drivers} & set(SDK_MODULES)):
        module, install = SDK_MODULES[kind]
        try:
            m = importlib.import_module(module)
            checks.append(Check(f"SDK {module}", True, f"version {sdk_version(kind, m)}"))
        except Exception as exc:  # an SDK can fail to import in several ways (missing .so, ...)
            optional = kind == "zed"
            detail = f"not installed (optional: the UVC fallback is used) ({exc})" if optional else f"not importable: {exc}"
            checks.append(Check(f"SDK {module}", optional, detail, install))
    return checks


def device_checks(config: RigConfig) -> list[Check]:
    checks = []
    for d in config.drivers:
        if d.endpoint:
            checks.append(Check(d.name, True, f"runs elsewhere, published at {d.endpoint}"))
            continue
        if d.type.startswith("sim_"):
            checks.append(Check(d.name, True, "simulated"))
            continue
        driver = None
        try:
            driver = create_driver(d, "inproc://doctor")
            if hasattr(driver, "start_runtime"):  # doctor checks; it never starts SteamVR itself (drivers/vive.py)
                driver.start_runtime = False
            driver.open()
            info = ", ".join(f"{k} {v}" for k, v in driver.device_info.items() if isinstance(v, (str, int, float)))
            checks.append(Check(d.name, True, f"opened ({info})"))
        except CaptureError as exc:
            checks.append(Check(d.name, False, str(exc), "fix the above, then run `capture-app doctor` again"))
        except Exception as exc:  # an SDK's own exception: this device fails, the other checks still run
            checks.append(unexpected_failure(d.name, d.type, exc))
        finally:
            if driver is not None:
                try:
                    driver.close()
                except Exception as exc:
                    checks.append(unexpected_failure(f"{d.name} (close)", d.type, exc))
    return checks


def unexpected_failure(subject: str, kind: str, exc: BaseException) -> Check:
    """A check failed by an exception no driver anticipated (an SDK's own): what, where, what to do."""
    sdk = SDK_MODULES.get(kind, (kind, ""))[0]
    return Check(subject, False, f"the {sdk} SDK raised {type(exc).__name__}: {exc}",
                 f"check the installed {sdk} version (listed above), update it or the driver, and "
                 f"report this message if it persists")


def guarded(subject: str, check, *args) -> list[Check]:
    """Run one group of checks; an exception fails that group only, with what went wrong."""
    try:
        result = check(*args)
    except Exception as exc:
        return [Check(subject, False, f"the check itself failed: {type(exc).__name__}: {exc}",
                      "report this message; the other checks above and below still ran")]
    return result if isinstance(result, list) else [result]


def udev_check(rules_dir: Path = RULES_DIR) -> Check:
    ours = Path(__file__).resolve().parent.parent / "udev" / RULES_NAME
    installed = rules_dir / RULES_NAME
    install = (f"sudo cp udev/{RULES_NAME} {rules_dir}/ && sudo udevadm control --reload-rules && "
               f"sudo udevadm trigger, then replug the devices")
    if not installed.exists():
        return Check("udev rules", False, f"{installed} not installed", install)
    if ours.exists() and installed.read_text() != ours.read_text():
        return Check("udev rules", False, f"{installed} differs from this version's udev/{RULES_NAME}", install)
    return Check("udev rules", True, f"{installed} installed")


def usb_permission_checks(sysfs: str = "/sys/bus/usb/devices") -> list[Check]:
    """The rig's USB devices found in sysfs, identified by vendor *and* product id (drivers/usb_ids.py):
    an Intel hub or a Nordic mouse is not a RealSense or a MANUS dongle."""
    checks = []
    for vendor_file in sorted(glob.glob(f"{sysfs}/*/idVendor")):
        folder = os.path.dirname(vendor_file)
        try:
            vendor = Path(vendor_file).read_text().strip()
            product = Path(folder, "idProduct").read_text().strip()
            name = identify(vendor, product)
            if name is None:
                continue
            bus = int(Path(folder, "busnum").read_text())
            dev = int(Path(folder, "devnum").read_text())
        except (OSError, ValueError):
            continue
        node = f"/dev/bus/usb/{bus:03d}/{dev:03d}"
        ok = os.access(node, os.R_OK | os.W_OK)
        checks.append(Check(f"USB {name} {vendor}:{product} ({node})", ok, "read/write" if ok else "no access",
                            "" if ok else "install the udev rules (see above) and replug"))
    return checks


def video_encoder_checks(config: RigConfig) -> list[Check]:
    """Which H.264 encoder the streams stored as video will get ([writer] video_streams), and why not NVENC."""
    if not config.writer.video_streams:
        return []
    from drivers.host import driver_video_settings
    from capture_app.episode.video_codec import VideoEncoder
    try:
        encoder = VideoEncoder(64, 64, next(iter(driver_video_settings(config).values())))
    except (CaptureError, ValueError) as exc:  # ConfigError; EncodeError (a ValueError): no encoder opens
        return [Check("video encoder", False, str(exc), 'set [writer] video_encoder = "auto" (NVENC, else libx264)')]
    skipped = "; ".join(f"{name} not used: {why}" for name, why in encoder.skipped.items())
    return [Check("video encoder", True, encoder.codec_name + (f" ({skipped})" if skipped else ""))]


def run_doctor(config: RigConfig) -> tuple[list[Check], bool]:
    """All checks, and whether every configured device (and the video encoder, if any) is usable."""
    sdk = guarded("SDK versions", sdk_versions, config)
    devices = guarded("devices", device_checks, config) + guarded("video encoder", video_encoder_checks, config)
    real = any(not d.type.startswith("sim_") and d.type != "replay" for d in config.drivers)
    system = [*guarded("udev rules", udev_check), *guarded("USB devices", usb_permission_checks)] if real else []
    return sdk + devices + system, all(c.ok for c in devices)


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"[{'ok' if c.ok else 'FAIL'}] {c.subject}: {c.detail}")
        if c.next_step and not c.ok:
            lines.append(f"       next: {c.next_step}")
    return "\n".join(lines)
