"""The error hierarchy. Every message says which thing, what failed and how to fix it."""

from __future__ import annotations


class CaptureError(Exception):
    """Base of every error this application raises on purpose."""


class ConfigError(CaptureError):
    """A rig config or task file is invalid; the message names the field and the allowed values."""


class CalibrationError(CaptureError):
    """A calibration file is missing, corrupt or incomplete."""


class DeviceError(CaptureError):
    """A device could not be opened or stopped delivering."""


class DeviceNotFoundError(DeviceError):
    """The configured device (or its SDK) is not present on this machine."""


class DeviceDisconnectedError(DeviceError):
    """A device that was streaming went away (unplugged, SDK restarted)."""


class DeviceTimeoutError(DeviceError):
    """A device delivered nothing within its timeout."""


class BusProtocolError(CaptureError):
    """A bus message could not be decoded; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"malformed bus message ({reason}): {detail}")
        self.reason = reason


class EpisodeFormatError(CaptureError):
    """An episode file breaks the layout documented in docs/episode-format.md."""


class WriterError(CaptureError):
    """The episode writer could not write (disk full, permissions); captured data so far is kept."""


class SDKMissingError(DeviceNotFoundError):
    """A device SDK is not installed; retrying cannot help, so the driver stops."""
