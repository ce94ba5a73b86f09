"""Every Python example in docs/ runs, against a real recorded episode where it reads one."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capture_app.rig.config import parse_config
from capture_app.recorder.session import CaptureSession
from tests.conftest import small_sim_text

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = [(path.name, i, block) for path in sorted(DOCS.glob("*.md"))
            for i, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S))]


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    """episode.h5 (JPEG colour) and, beside it, video-episode.h5 (the ego camera stored as H.264)."""
    out = tmp_path_factory.mktemp("docs")
    video = small_sim_text().replace("[writer]\n", '[writer]\nvideo_streams = ["ego_camera"]\n')
    for name, text in (("video-episode", video), ("episode", small_sim_text())):
        with CaptureSession(parse_config(text, "<docs>")) as session:
            assert session.wait_for_streams(5) == []
            session.start_episode(out, name=name)
            time.sleep(2.0)
            path = session.stop_episode()
    return path


def test_the_docs_have_examples():
    assert any(name == "episode-format.md" for name, _, _ in EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name, index, code", EXAMPLES, ids=[f"{n}-{i}" for n, i, _ in EXAMPLES])
def test_a_docs_example_runs(name, index, code, episode, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(episode.parent)
    if "from lerobot" in code and importlib.util.find_spec("lerobot") is None:
        _run_with_lerobot(code)
        return
    if "export_lerobot" in code:  # run as written, a script of its own: its worker processes import it again
        script = tmp_path / "example.py"
        script.write_text(code)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                              cwd=episode.parent)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip(), "the example printed nothing"
        return
    if name == "control.md":  # the control channel's examples talk to a running recorder
        from tests.recorder_fixture import running_recorder
        with running_recorder(tmp_path) as (endpoint, _, _):
            monkeypatch.setenv("CAPTURE_CONTROL", endpoint)
            exec(compile(code, f"{name} example {index}", "exec"), {})
    else:
        exec(compile(code, f"{name} example {index}", "exec"), {})
    assert capsys.readouterr().out.strip(), "the example printed nothing"


def _run_with_lerobot(code: str) -> None:
    """lerobot pins its own torch and PyAV, so it lives in another virtualenv (docs/datasets.md)."""
    python = os.environ.get("CAPTURE_APP_LEROBOT_PYTHON")
    if not python:
        pytest.skip("lerobot lives in its own virtualenv: set CAPTURE_APP_LEROBOT_PYTHON (docs/datasets.md)")
    from capture_app.dataset.commands import export_lerobot
    from capture_app.dataset.lerobot_export import ExportOptions
    export_lerobot(["episode.h5"], "exported", ExportOptions(), workers=1, overwrite=True, progress=False)
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "the example printed nothing"
