"""Helpers for the field panel's browser test: a panel process, and headless Chromium in a phone's viewport.

Debian's ``chromium`` and ``chromium-driver`` (installed by .ci/setup) driven by Selenium; a fresh
profile per browser, every background service off, so the test never touches the network.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from capture_app.rig.child_process import child_env, cli_command

PHONE = {"width": 412, "height": 915, "pixelRatio": 2.0}  # a common Android phone, portrait
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) when Debian's chromium and chromium-driver are installed, else None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


class PanelProcess:
    """``capture-app panel --connect ENDPOINT --port 0`` in a child process; ``url`` once it listens."""

    def __init__(self, endpoint: str, log_path: Path, *extra: str):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(cli_command("panel", "--connect", endpoint, "--port", "0", *extra),
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=child_env(), start_new_session=True)
        self._url = ""

    @property
    def url(self) -> str:
        """The page's URL, once the panel listens (waits for it)."""
        if not self._url:
            self._url = self._wait_for_url()
        return self._url

    def _wait_for_url(self, timeout_s: float = 90) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(r"panel: (http://\S+)", self.log_path.read_text(errors="replace"))
            if match:
                return match.group(1)
            if self.process.poll() is not None:
                raise AssertionError(f"the panel exited ({self.process.returncode}): {self.log_path.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"the panel printed no URL within {timeout_s} s: {self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no chance to say goodbye (a phone's panel host crashing)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def phone_browser(profile_dir: Path):
    """Headless Chromium emulating a phone's viewport (touch, 412 x 915 CSS pixels)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={PHONE['width']},{PHONE['height']}")
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": PHONE})
    return webdriver.Chrome(options=options, service=Service(driver))


def fresh_profile() -> Path:
    return Path(tempfile.mkdtemp(prefix="capture-panel-chromium-"))
