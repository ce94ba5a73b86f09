"""The monitor under a real X server (Xvfb, the xcb platform plugin), not only offscreen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from capture_app.rig.child_process import child_env

pytestmark = pytest.mark.slow


@pytest.fixture
def x_display():
    """A private Xvfb display (1366x768, the smallest screen the monitor supports); its name, e.g. ':5'."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (.ci/setup installs it)")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1366x768x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    try:
        assert number, "Xvfb did not report a display"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


def test_the_monitor_opens_and_draws_on_a_real_x_display(x_display, tmp_path):
    env = child_env()
    env.pop("QT_QPA_PLATFORM", None)  # the platform Qt picks for a real display: xcb
    env["DISPLAY"] = x_display
    shot = tmp_path / "shot.png"
    result = subprocess.run([sys.executable, "-m", "capture_app.cli", "monitor", "--sim", "--new-recorder", "--out",
                             str(tmp_path / "episodes"), "--screenshot", str(shot), "--after", "3"],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    assert "could not load the Qt platform plugin" not in result.stderr.lower()
    from PySide6 import QtGui
    image = QtGui.QImage(str(shot))
    assert not image.isNull() and image.width() >= 1000
    colours = {image.pixel(x, y) for x in range(0, image.width(), 13) for y in range(0, image.height(), 13)}
    assert len(colours) > 50  # drawn: camera images, plots, the health table
