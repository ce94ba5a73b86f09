"""Shared fixtures. Tests run offscreen, on loopback/ipc/inproc only, and clean up threads and files."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading  # noqa: E402

import pytest  # noqa: E402

from capture_app.config import RigConfig, load_config, parse_config  # noqa: E402

OUR_THREAD_PREFIXES = ("driver-", "synchronizer", "bus-dispatcher", "episode-writer", "driver-host", "stream-watch",
                        "control-server", "state-publisher", "monitor-", "take-finalize")


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
