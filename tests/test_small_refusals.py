"""The smaller items of #23, point 7: bad files, endpoints and arguments are clear errors; a busy port, a
failed final table and a failed start are reported (non-zero, nothing left behind); the disk-full stop
estimates stored bytes; killed recorders leave no run directory and no driver process behind."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from capture_app.bus.wire import decode_message, encode_message
from capture_app.rig.child_process import child_env
from capture_app.cli import main
from capture_app.tools.live_commands import progress_line
from capture_app.rig.config import WriterConfig, parse_config
from capture_app.core.errors import ConfigError, WriterError
from capture_app.rig.tasks import parse_tasks
from capture_app.recorder.writer import EpisodeMetadata, EpisodeWriter
from tests.conftest import small_sim_text


def test_a_binary_rig_config_is_a_clear_error(tmp_path, capsys):
    rig = tmp_path / "rig.toml"
    rig.write_bytes(bytes(range(256)) * 4)
    assert main(["record", "--config", str(rig), "--duration", "1", "--out", str(tmp_path)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


@pytest.mark.parametrize("endpoint, why", [("ipc://", "socket path"), ("tcp://127.0.0.1:http", "PORT a number"),
                                           ("tcp://127.0.0.1:70000", "PORT a number"), ("tcp://:5555", "PORT"),
                                           ("ipc:///tmp/" + "x" * 200, "at most 107")])
def test_a_bad_driver_endpoint_is_a_clear_config_error(endpoint, why):
    text = small_sim_text().replace('name = "head_tracker"', f'name = "head_tracker"\nendpoint = "{endpoint}"', 1)
    with pytest.raises(ConfigError, match=why):
        parse_config(text, "<rig>")


def test_task_texts_are_checked_like_the_control_channel():
    with pytest.raises(ConfigError, match="control character"):
        parse_tasks("tasks:\n  - name: pour\n    subtasks: [{label: \"gr\\0asp\"}]\n")
    with pytest.raises(ConfigError, match="must be text"):
        parse_tasks("tasks:\n  - name: pour\n    instruction: [1, 2]\n")


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_wait_is_checked(value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["record", "--wait", value])
    assert info.value.code == 2 and "--wait" in capsys.readouterr().err


def _free_port_pair() -> int:
    """A port whose next port is free too (the clock service binds it)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65534:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    pytest.skip("no free pair of ports")


def test_driver_publish_on_a_busy_port_exits_non_zero_and_says_why(tmp_path):
    port = _free_port_pair()
    busy = socket.socket()
    busy.bind(("127.0.0.1", port))
    busy.listen()
    from capture_app.bus.remote import generate_keys
    generate_keys(tmp_path / "keys")  # tcp:// needs keys (docs/protocol.md, Trust model)
    try:
        result = subprocess.run([sys.executable, "-m", "capture_app.cli", "driver", "left_glove", "--publish",
                                 f"tcp://127.0.0.1:{port}", "--keys", str(tmp_path / "keys"), "--duration", "60"], capture_output=True, text=True,
                                timeout=120, env=child_env(), stdin=subprocess.DEVNULL)
    finally:
        busy.close()
    assert result.returncode != 0, result.stderr[-1000:]
    assert "cannot bind" in result.stderr and "Traceback" not in result.stderr


def test_record_exits_non_zero_when_the_final_table_failed(tmp_path, monkeypatch, capsys):
    rig = tmp_path / "rig.toml"
    rig.write_text(small_sim_text())
    def follower_fails(self, path, timeout_s=0):  # the follower cannot write the table ...
        self.abandon()
        return False
    monkeypatch.setattr("capture_app.recorder.final_follower.FinalTableFollower.finish", follower_fails)
    monkeypatch.setattr("capture_app.recorder.episodes.finalize_in_child_process", lambda path: None)  # nor the file
    assert main(["record", "--config", str(rig), "--duration", "1", "--wait", "60", "--out", str(tmp_path / "out"),
                 "--name", "ep"]) == 1
    assert "resync" in capsys.readouterr().err
    assert (tmp_path / "out" / "ep.h5").exists()  # the episode is kept, with its live table


def test_a_failed_start_leaves_no_file_behind(tmp_path, monkeypatch):
    def broken(self):
        raise OSError("simulated failure while writing the metadata")
    monkeypatch.setattr(EpisodeWriter, "_write_metadata", broken)
    with pytest.raises(WriterError):
        EpisodeWriter(tmp_path, EpisodeMetadata("ep")).start()
    assert list(tmp_path.iterdir()) == []


def test_the_disk_full_estimate_counts_stored_bytes_not_raw_depth(tmp_path, monkeypatch):
    """Depth compresses ~100x: with 20 MB free, flushes of 15 MB of raw depth go on (a 30 MB disk used to
    stop after 2 s); the first flush, not yet measured, is estimated at its raw size."""
    free = {"bytes": 200 << 20}
    real_usage = shutil.disk_usage
    monkeypatch.setattr("capture_app.recorder.writer.shutil.disk_usage",
                        lambda path: real_usage(path)._replace(free=free["bytes"]))
    writer = EpisodeWriter(tmp_path, EpisodeMetadata("depth", expected_rates_hz={"top_camera": 30.0}),
                           WriterConfig(flush_interval_s=1.0)).start()
    depth = np.full((480, 640), 700, np.uint16)  # 600 kB raw, a few kB stored
    color = np.zeros((4, 4, 3), np.uint8)
    seq = 0

    def flush_of(frames):
        nonlocal seq
        for _ in range(frames):
            t = 1_000_000 + seq * 33_000_000
            writer.submit(decode_message(encode_message("top_camera", seq, t, {"color": color, "depth": depth}),
                                         t_receive_ns=t + 500))
            seq += 1
        return writer.make_durable(120)

    assert flush_of(4)                      # 2.4 MB raw: measured
    free["bytes"] = 20 << 20
    for _ in range(3):
        assert flush_of(25), writer.error   # 15 MB raw each, ~0.2 MB stored
    path = writer.finish({})
    with h5py.File(path, "r") as f:
        assert len(f["streams/top_camera/depth"]) == 79


def test_the_progress_line_shows_dropped_bus_messages():
    session = SimpleNamespace(stream_status=lambda: {}, writer=None,
                              loss_counts=lambda: {"bus_malformed": 3, "bus_unexpected": 2})
    line = progress_line(session, 1.0)
    assert "malformed 3" in line and "unexpected 2" in line


def test_run_directories_of_dead_recorders_are_swept_and_no_others(tmp_path):
    from capture_app.rig.run_dirs import OWNER_FILE, make_run_dir, sweep_dead
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = make_run_dir(tmp_path)
    killed = tmp_path / "capture-app-killed"
    killed.mkdir()
    (killed / OWNER_FILE).write_text(f"{dead.pid} 12345\n")
    reused = tmp_path / "capture-app-reused"  # a live pid, but another process's start time: its recorder is gone
    reused.mkdir()
    (reused / OWNER_FILE).write_text(f"{os.getpid()} 1\n")
    unknown = tmp_path / "capture-app-creating"
    unknown.mkdir()
    assert sorted(sweep_dead(tmp_path)) == sorted([killed, reused])
    assert mine.exists() and unknown.exists() and not killed.exists() and not reused.exists()


@pytest.mark.slow
def test_a_driver_process_stops_when_its_recorder_is_gone(tmp_path):
    """The recorder's end of the pipe closes (as when it is SIGKILLed): its driver process stops, although the
    process named by --parent-pid (this test) still runs."""
    read_end, write_end = os.pipe()
    rig = tmp_path / "rig.toml"
    rig.write_text(small_sim_text())
    command = [sys.executable, "-m", "capture_app.cli", "driver", "left_glove", "--config", str(rig), "--connect",
               f"ipc://{tmp_path}/bus.sock", "--parent-pid", str(os.getpid()), "--parent-pipe", str(read_end)]
    child = subprocess.Popen(command, env=child_env(), pass_fds=(read_end,), stdin=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    os.close(read_end)
    try:
        time.sleep(2)
        assert child.poll() is None, child.stderr.read()  # runs while its recorder does
        os.close(write_end)
        write_end = None
        assert child.wait(120) == 0
    finally:
        if write_end is not None:
            os.close(write_end)
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_default_take_name_already_in_the_folder_gets_a_number(tmp_path, monkeypatch):
    """A take aborted and started again within the same second: the second default name must not collide."""
    import datetime
    from types import SimpleNamespace

    import capture_app.recorder.episodes as episodes

    class FrozenClock(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2026, 12, 6, 2, 47, 24)

    monkeypatch.setattr(episodes, "_dt", SimpleNamespace(datetime=FrozenClock))  # this module's clock only
    assert episodes.episode_name("pour the juice!") == "20261206-024724_pour-the-juice"
    assert episodes.episode_name("pour", tmp_path) == "20261206-024724_pour"
    (tmp_path / "20261206-024724_pour.h5").write_bytes(b"")          # the aborted take, kept
    assert episodes.episode_name("pour", tmp_path) == "20261206-024724_pour-2"
    (tmp_path / "20261206-024724_pour-2.h5.partial").write_bytes(b"")  # a take still being written
    (tmp_path / "20261206-024724_pour-3.h5").write_bytes(b"")
    assert episodes.episode_name("pour", tmp_path) == "20261206-024724_pour-4"
    assert episodes.episode_name("", tmp_path) == "20261206-024724"
