"""Starting this package's own commands in child processes (driver hosts, the recorder, finalizing)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the directory holding capture_app/, drivers/, calibration/


def cli_command(*args: str) -> list[str]:
    """``python -m capture_app.cli ARGS`` with this interpreter."""
    return [sys.executable, "-m", "capture_app.cli", *args]


def child_env() -> dict[str, str]:
    """The environment for a child: this package importable from any working directory, installed or not."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return env
