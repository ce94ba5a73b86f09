"""The per-user registry of running recorders (capture_app/rig/recorders.py, docs/control.md "Trust model"):
private, stale entries ignored; `capture-app monitor` attaches to the running recorder of the same user and rig
instead of starting a second one, and says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from capture_app.rig import recorders
from capture_app.rig.child_process import child_env


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setattr(recorders, "FALLBACK_PARENT", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    return run


def test_the_registry_is_private_and_ignores_dead_recorders(runtime, tmp_path):
    directory = recorders.registry_dir()
    assert directory == runtime / "capture-app" / "recorders"
    assert (directory.stat().st_mode & 0o777) == 0o700
    path = recorders.register("ipc:///x/control", "rig-a", "/data")
    assert (path.stat().st_mode & 0o777) == 0o600
    (entry,) = recorders.running_recorders()
    assert (entry["pid"], entry["control"], entry["rig"]) == (os.getpid(), "ipc:///x/control", "rig-a")
    # a dead recorder's entry, and one whose pid was reused by another process: ignored and removed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (directory / f"{dead.pid}.json").write_text(json.dumps({"pid": dead.pid, "start_time": "1", "control": "ipc:///d"}))
    (directory / "1.json").write_text(json.dumps({"pid": 1, "start_time": "0", "control": "ipc:///reused"}))
    assert [e["control"] for e in recorders.running_recorders()] == ["ipc:///x/control"]
    assert sorted(p.name for p in directory.glob("*.json")) == [path.name]
    recorders.unregister(path)
    assert recorders.running_recorders() == []
    # a registry others can use is not used (a stranger could plant a recorder there)
    directory.chmod(0o755)
    assert recorders.registry_dir() == tmp_path / "tmp" / f"capture-app-recorders-{os.getuid()}"


@pytest.mark.slow
def test_a_second_monitor_attaches_to_the_running_recorder(runtime, tmp_path):
    from tests.conftest import small_sim_text
    config = tmp_path / "rig.toml"
    config.write_text(small_sim_text())
    control_dir = tmp_path / "ctl"
    control_dir.mkdir(mode=0o700)
    env = {**child_env(), "XDG_RUNTIME_DIR": str(runtime), "QT_QPA_PLATFORM": "offscreen"}
    serve = subprocess.Popen([sys.executable, "-m", "capture_app.cli", "serve", "--config", str(config), "--control",
                              f"ipc://{control_dir / 'control'}", "--out", str(tmp_path / "episodes")],
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not recorders.running_recorders() and time.monotonic() < deadline and serve.poll() is None:
            time.sleep(0.1)
        assert [e["pid"] for e in recorders.running_recorders()] == [serve.pid], serve.poll()
        monitor = subprocess.run([sys.executable, "-m", "capture_app.cli", "monitor", "--config", str(config),
                                  "--screenshot", str(tmp_path / "shot.png"), "--after", "1"],
                                 env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
        assert monitor.returncode == 0, monitor.stderr
        assert f"attaching to the running recorder of rig 'simulated-rig' (pid {serve.pid}" in monitor.stderr
        assert "recorder: pid" not in monitor.stderr  # it started none
        assert (tmp_path / "shot.png").stat().st_size > 0
        assert serve.poll() is None  # the window closed; the recorder it attached to runs on
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        serve.stderr.close()
    assert recorders.running_recorders() == []  # it removed its entry
