"""Shared fixtures. Tests run offscreen, on loopback/ipc/inproc only, and clean up threads and files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading  # noqa: E402

import pytest  # noqa: E402

from capture_app.rig.config import RigConfig, load_config, parse_config  # noqa: E402

OUR_THREAD_PREFIXES = ("driver-", "synchronizer", "bus-dispatcher", "episode-writer", "driver-host", "stream-watch",
                        "control-server", "state-publisher", "monitor-", "take-finalize", "handsfree-")


def small_sim_text(extra: str = "", *, drivers_in: str = "threads", ego=(320, 180), top=(160, 120),
                   options: dict[str, str] | None = None, timing: str = "exact") -> str:
    """The embedded sim rig with small images (fast tests); ``options`` adds TOML options per driver name;
    ``timing`` "exact" (perfect stamps: tests compare with the truth) or "realistic" (the embedded default)."""
    text = load_config().source_text
    text = text.replace('timing = "realistic"', f'timing = "{timing}"')
    text = text.replace("width = 1280, height = 720", f"width = {ego[0]}, height = {ego[1]}")
    text = text.replace("width = 640, height = 480", f"width = {top[0]}, height = {top[1]}")
    text = text.replace('\n[sim]\n', f'\n[rig]\ndrivers_in = "{drivers_in}"\n\n[sim]\n')
    for name, opts in (options or {}).items():
        marker = f'name = "{name}"'
        start = text.index(marker)
        line_start = text.index("options = {", start)
        text = text[:line_start] + "options = { " + opts + ", " + text[line_start + len("options = { "):]
    return text + extra


def record_and_kill(config_path, out_dir, name: str, after_s: float) -> tuple[Path, int]:
    """`capture-app record --config config_path` into ``out_dir`` as ``name``, SIGKILLed with its driver
    processes ``after_s`` seconds after its .partial file appeared. Returns (the .partial path, the kill's
    monotonic time in ns)."""
    command = [sys.executable, "-m", "capture_app.cli", "record", "--config", str(config_path),
               "--out", str(out_dir), "--name", name, "--duration", "60", "--wait", "60"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = Path(out_dir) / f"{name}.h5.partial"
    try:
        deadline = time.monotonic() + 120  # a loaded machine starts the drivers late
        while not partial.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert partial.exists(), "the recording never created its .partial file"
        time.sleep(after_s)
        killed_at = time.monotonic_ns()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    return partial, killed_at


@pytest.fixture
def small_sim_config() -> RigConfig:
    return parse_config(small_sim_text(), "<test sim rig>")


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Every test must stop the threads it started."""
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = 50
    leaked = []
    for _ in range(deadline):
        leaked = [t.name for t in threading.enumerate()
                  if t.ident not in before and t.is_alive() and t.name.startswith(OUR_THREAD_PREFIXES)]
        if not leaked:
            break
        threading.Event().wait(0.1)
    assert not leaked, f"threads left running: {leaked}"
