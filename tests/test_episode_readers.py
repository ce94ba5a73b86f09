"""Every reader of an episode opens it with the HDF5 filters loaded (capture_app.episode.file), and refuses
what is not an episode without touching it: recover of a SIGKILLed take with depth, review in a fresh
process, recover / view / resync / inspect of files that are not (whole) episodes (#23)."""

from __future__ import annotations

import time
import json
import subprocess
import sys

import h5py
import hdf5plugin  # noqa: F401  (this process reads the depth to compare)
import numpy as np
import pytest

from capture_app.rig.child_process import child_env
from capture_app.cli import main
from capture_app.episode.recover import readable_rows
from tests.conftest import record_and_kill, small_sim_text


def _fresh_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter: nothing this test process imported (hdf5plugin) is loaded there."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=child_env(), stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def killed_take(tmp_path_factory):
    """A sim take (its top camera is an RGB-D camera like the RealSense: Blosc depth) SIGKILLed after 2.5 s:
    the .partial path and the depth rows that read back (with the filter) before recovery."""
    tmp = tmp_path_factory.mktemp("killed")
    rig = tmp / "rig.toml"
    rig.write_text(small_sim_text(drivers_in="process"))
    partial, _ = record_and_kill(rig, tmp / "out", "crash", 2.5)
    with h5py.File(partial, "r") as f:
        group = f["streams/top_camera"]
        flushed = min(readable_rows(d) for d in group.values() if isinstance(d, h5py.Dataset))
    assert flushed > 10, "the take flushed too few depth rows to test anything"
    return partial, flushed


@pytest.mark.slow
def test_recover_of_a_killed_rgbd_take_keeps_every_flushed_depth_row(killed_take):
    partial, flushed = killed_take
    result = _fresh_python("import sys; from capture_app.cli import main; sys.exit(main(['recover', sys.argv[1]]))",
                           str(partial))
    assert result.returncode == 0, result.stderr
    path = partial.with_name("crash.h5")
    with h5py.File(path, "r") as f:
        group = f["streams/top_camera"]
        assert "depth" in group, f"recover dropped the depth column: {f.attrs['recovered_changes']}"
        assert len(group["depth"]) == len(group["seq"]) >= flushed
        assert readable_rows(group["depth"]) == len(group["depth"])
        assert "depth" not in f.attrs["recovered_changes"]


@pytest.mark.slow
def test_review_of_a_recovered_rgbd_episode_opens_in_a_fresh_process(killed_take):
    partial, _ = killed_take
    path = partial.with_name("crash.h5")
    if not path.exists():
        assert main(["recover", str(partial)]) == 0
    code = ("import sys; from capture_app.monitor.review import EpisodeReview\n"
            "r = EpisodeReview(sys.argv[1])\n"
            "depth = [r.state(i).top_depth for i in range(r.ticks)]\n"
            "print(sum(d is not None and d.size > 0 for d in depth), r.ticks)\n")
    result = _fresh_python(code, str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    shown, ticks = map(int, result.stdout.split())
    assert ticks > 10 and shown >= ticks // 2, result.stdout  # the first ticks may precede the first frame


def _not_an_episode(path):
    with h5py.File(path, "w") as f:
        f.attrs["owner"] = "someone else"
        f["data"] = np.arange(5)
    return path.read_bytes()


def test_recover_refuses_a_non_episode_and_an_empty_file_without_touching_them(tmp_path):
    other = tmp_path / "other.h5.partial"
    before = _not_an_episode(other)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    assert main(["recover", str(other)]) == 1
    assert other.read_bytes() == before and not (tmp_path / "other.h5").exists()
    assert main(["recover", str(empty)]) == 1
    assert empty.read_bytes() == b""


def test_view_and_resync_of_a_non_episode_refuse_clearly(tmp_path, capsys):
    other = tmp_path / "other.h5"
    before = _not_an_episode(other)
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5 at all")
    pytest.importorskip("rerun")
    for path in (other, text):
        assert main(["view", str(path), "--save", str(tmp_path / "x.rrd")]) == 1
        assert "not a capture-app episode" in capsys.readouterr().err or path == text
    assert main(["resync", str(other)]) == 1
    assert "not a capture-app episode" in capsys.readouterr().err
    assert other.read_bytes() == before


def test_resync_clears_a_leftover_final_table_scratch(tmp_path, small_sim_config):
    from capture_app.recorder.session import CaptureSession
    with CaptureSession(small_sim_config) as session:
        assert session.wait_for_streams(20) == []
        session.start_episode(tmp_path, name="ep")
        time.sleep(1.5)
        path = session.stop_episode(finalize=False)
    with h5py.File(path, "r+") as f:  # a resync killed between writing its scratch table and renaming it
        f.create_group("synced_final_tmp").create_dataset("t_tick_ns", data=np.arange(3))
    assert main(["resync", str(path)]) == 0
    with h5py.File(path, "r") as f:
        assert "synced_final_tmp" not in f and f["synced"].attrs["table"] == "final"
        assert len(f["synced/t_tick_ns"]) > 3


def test_inspect_shows_what_recovery_changed(tmp_path, killed_take, capsys):
    partial, _ = killed_take
    path = partial.with_name("crash.h5")
    if not path.exists():
        assert main(["recover", str(partial)]) == 0
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    with h5py.File(path, "r") as f:
        changes = json.loads(f.attrs["recovered_changes"])
    assert "recovery changed:" in out
    for table in changes:
        assert table in out


@pytest.mark.slow
def test_the_window_refuses_a_bad_review_file_and_stays_live(qtbot, tmp_path):
    """O in a live window on a file that is not an episode: a clear error, nothing half in review."""
    pytest.importorskip("pytestqt")
    from capture_app.monitor.client import RecorderClient
    from capture_app.monitor.window import MainWindow
    from capture_app.rig.tasks import load_tasks
    from tests.recorder_fixture import running_recorder
    other = tmp_path / "other.h5"
    _not_an_episode(other)
    with running_recorder(tmp_path) as (endpoint, _, _):
        client = RecorderClient(endpoint, name="test monitor")
        try:
            window = MainWindow(client, load_tasks(), tmp_path / "episodes")
            qtbot.addWidget(window)
            window.show()
            window.open_review(other)
            assert window.review is None and window.edits is None
            assert "cannot review" in window.last_error and "not a capture-app episode" in window.last_error
            assert not window.review_slider.isVisible()
            window.timer.stop()
        finally:
            client.close()
