"""The upload queue and the fleet view against a REAL S3 server on loopback (moto in server mode,
reached through s3fs exactly as a bucket would be), as a rig's operator and a data lead would use them
(docs/upload.md): three takes recorded, the uploader SIGKILLed mid-file, the next run completes every
episode byte-exact, manifests verified, local copies deleted by the policy, the fleet status lists them."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capture_app.core.errors import CaptureError, ConfigError
from capture_app.fleet.background import BackgroundUploads
from capture_app.fleet.destination import Destination
from capture_app.fleet.state import STATE_FILE, UploadState
from capture_app.fleet.uploader import SETTLE_S, Uploader
from capture_app.rig.config import UploadConfig, parse_config, to_toml
from capture_app.recorder.session import CaptureSession
from capture_app.recorder.takes import Takes
from tests.conftest import small_sim_text

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")
ROOT = Path(__file__).resolve().parent.parent
BUCKET = "rigs"


@pytest.fixture(scope="module")
def s3():
    """One moto S3 server on 127.0.0.1 (a free port) for the module; credentials and endpoint in the
    environment the way a rig would have them (AWS_* variables), so children inherit them."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test-key",
           "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str, env: dict | None = None, **kwargs):
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "capture_app.cli", *args], env=environment, **kwargs)


def _record_three_takes(config_text: str, out: Path) -> list[Path]:
    config = parse_config(config_text, "<rig>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(30) == []
        takes = Takes(session, out)
        paths = []
        for k in range(3):
            takes.start(name=f"take{k}", task="pour", instruction="pour the juice", operator="ana")
            time.sleep(1.5)
            paths.append(Path(takes.stop()["path"]))
        takes.wait_finalized()
    return paths


def _state(folder: Path) -> dict:
    return json.loads((folder / STATE_FILE).read_text())


@pytest.mark.timeout(600)  # ~25 s alone; a shared machine under load stretches recording and uploads
def test_three_takes_uploaded_through_a_kill_verified_deleted_and_listed(s3, tmp_path):
    dest = f"s3://{BUCKET}/fleet"
    upload = ('\n[upload]\ndestination = "%s"\nkeep_local_gb = 0\nmax_mb_per_s = 2.0\nchunk_mb = 0.0625\n' % dest)
    text = small_sim_text(upload)
    config_path = tmp_path / "rig.toml"
    config_path.write_text(text)
    out = tmp_path / "episodes"
    paths = _record_three_takes(text, out)
    settled = max(p.stat().st_mtime for p in paths) + SETTLE_S + 0.1   # the uploader leaves files modified in
    time.sleep(max(0.0, settled - time.time()))                           # the last 2 s alone (still finishing)
    hashes = {p.name: _sha(p) for p in paths}
    sizes = {p.name: p.stat().st_size for p in paths}
    assert min(sizes.values()) > 512 * 1024, sizes  # big enough to be killed in the middle at 2 MB/s

    # first run: SIGKILLed in the middle of a file
    first = _cli("upload", "--config", str(config_path), "--out", str(out), "--no-progress",
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_in = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if (out / STATE_FILE).exists():
            files = _state(out)["files"]
            middle = [n for n, e in files.items() if e["status"] == "uploading" and 0 < e["bytes_sent"] < e["size"]]
            if middle:
                os.kill(first.pid, signal.SIGKILL)
                killed_in = middle[0]
                break
        time.sleep(0.05)
    first.wait(30)
    first.stderr.close()
    assert killed_in is not None, "the uploader was never seen in the middle of a file"
    assert _state(out)["files"][killed_in]["status"] == "uploading"   # the state file survived the kill whole
    s3fs_dest = Destination(dest)
    key = f"simulated-rig/episodes/{Path(killed_in).stem}/{killed_in}"
    assert s3fs_dest.size(key) is None          # an interrupted multipart upload leaves no object
    assert (out / killed_in).exists()           # nothing deleted that was not verified

    # second run completes
    second = _cli("upload", "--config", str(config_path), "--out", str(out), "--no-progress",
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    state = _state(out)
    assert state["format"] == "capture-app-upload-state" and state["version"] == 1
    assert {n: e["status"] for n, e in state["files"].items()} == {p.name: "deleted" for p in paths}
    assert not any(p.exists() for p in paths)   # keep_local_gb = 0: every verified copy deleted
    client = boto3.client("s3")
    for name, digest in hashes.items():
        prefix = f"fleet/simulated-rig/episodes/{Path(name).stem}"
        body = client.get_object(Bucket=BUCKET, Key=f"{prefix}/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest and len(body) == sizes[name]   # byte-exact
        manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
        assert manifest["format"] == "capture-app-upload-manifest" and manifest["version"] == 1
        assert manifest["files"] == [{"path": name, "size": sizes[name], "sha256": digest}]
        assert manifest["rig"] == "simulated-rig" and manifest["episode_info"]["operator"] == "ana"
        assert manifest["episode_info"]["verdict"] in ("ok", "redo")

    # nothing is uploaded twice
    third = _cli("upload", "--config", str(config_path), "--out", str(out), "--no-progress",
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0 and "0 uploaded and verified" in err, err

    # the fleet view lists the rig and its three episodes (status and report read the destination at once)
    report = tmp_path / "report.html"
    status = _cli("fleet", "status", dest, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = _cli("fleet", "report", dest, "--out", str(report), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text_out, err = status.communicate(timeout=60)
    _, report_err = done.communicate(timeout=60)
    assert status.returncode == 0, err
    assert "simulated-rig" in text_out and "3 uploaded episodes" in text_out
    for p in paths:
        assert p.stem in text_out
    heartbeat = json.loads(client.get_object(Bucket=BUCKET, Key="fleet/simulated-rig/heartbeat.json")["Body"].read())
    assert heartbeat["takes_total"] == 3 and heartbeat["uploaded"] == 3 and heartbeat["upload_backlog"]["episodes"] == 0
    assert heartbeat["hours_recorded"] > 0 and heartbeat["free_disk_bytes"] > 0 and len(heartbeat["last_verdicts"]) == 3
    assert done.returncode == 0, report_err
    page = report.read_text()
    assert page.count("<svg") >= 6 and "hours per day" in page and "simulated-rig" in page
    assert "<script" not in page


# --- smaller parts, on a file:// destination -----------------------------------------------------------
def _fake_episodes(folder: Path, sizes: list[int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, size in enumerate(sizes):
        path = folder / f"ep{k}.h5"
        path.write_bytes(os.urandom(size))
        os.utime(path, (time.time() - 100 + k, time.time() - 100 + k))  # settled, oldest first
        paths.append(path)
    return paths


def test_policy_keeps_the_newest_within_the_limit_and_never_an_unverified_file(tmp_path):
    paths = _fake_episodes(tmp_path / "eps", [4000, 4000, 4000])
    config = UploadConfig(destination=f"file://{tmp_path / 'dest'}", keep_local_gb=9000 / 1e9, chunk_mb=0.001)
    result = Uploader(tmp_path / "eps", config, "rig-a", progress=False).run()
    assert sorted(result["uploaded"]) == ["ep0.h5", "ep1.h5", "ep2.h5"] and result["deleted"] == ["ep0.h5"]
    assert [p.exists() for p in paths] == [False, True, True]
    for p in paths[1:]:
        assert (tmp_path / f"dest/rig-a/episodes/{p.stem}/{p.name}").read_bytes() == p.read_bytes()
    # an uploaded file changed afterwards (a resync) is sent again, and not deleted before that
    paths[1].write_bytes(os.urandom(5000))
    os.utime(paths[1], (time.time() - 50, time.time() - 50))
    uploader = Uploader(tmp_path / "eps", UploadConfig(destination=config.destination, keep_local_gb=0), "rig-a",
                        progress=False)
    assert uploader.scan() == ["ep1.h5"]
    result = uploader.run()
    assert result["uploaded"] == ["ep1.h5"] and sorted(result["deleted"]) == ["ep1.h5", "ep2.h5"]


def test_a_corrupt_object_is_refused_and_sent_again(tmp_path, monkeypatch):
    _fake_episodes(tmp_path / "eps", [3000])
    config = UploadConfig(destination=f"file://{tmp_path / 'dest'}")
    uploader = Uploader(tmp_path / "eps", config, "rig-a", progress=False)
    real_put = Destination.put_file

    def corrupting_put(self, local, key, *args, **kwargs):
        real_put(self, local, key, *args, **kwargs)
        with open(self.path(key), "r+b") as f:
            first = f.read(1)
            f.seek(0)
            f.write(bytes([first[0] ^ 0xFF]))                 # one byte flipped on the way (writing a fixed
            #                                                   byte left 1 random file in 256 intact)
    monkeypatch.setattr(Destination, "put_file", corrupting_put)
    result = uploader.run()
    assert result["failed"] == ["ep0.h5"] and "SHA-256" in uploader.state.entries["ep0.h5"]["error"]
    assert not (tmp_path / "dest/rig-a/episodes/ep0/manifest.json").exists()   # no manifest for a bad copy
    monkeypatch.setattr(Destination, "put_file", real_put)
    result = Uploader(tmp_path / "eps", config, "rig-a", progress=False).run()
    assert result["uploaded"] == ["ep0.h5"] and (tmp_path / "dest/rig-a/episodes/ep0/manifest.json").exists()


def test_state_file_refuses_another_destination_and_another_version(tmp_path):
    state = UploadState(tmp_path, "s3://a/b")
    state.entry("x.h5")["status"] = "verified"
    state.save()
    assert UploadState(tmp_path, "s3://a/b").entries["x.h5"]["status"] == "verified"
    assert not list(tmp_path.glob(".*.tmp-*"))  # the temporary file was renamed over the state
    with pytest.raises(CaptureError, match="not 's3://other/b'"):
        UploadState(tmp_path, "s3://other/b")
    data = json.loads((tmp_path / STATE_FILE).read_text())
    data["version"] = 99
    (tmp_path / STATE_FILE).write_text(json.dumps(data))
    with pytest.raises(CaptureError, match="not a version 1 upload state"):
        UploadState(tmp_path, "s3://a/b")


def test_upload_config_round_trips_and_refuses_bad_values():
    text = small_sim_text('\n[upload]\ndestination = "s3://b/p"\nkeep_local_gb = 50\n'
                          'storage_options = { client_kwargs = { endpoint_url = "http://127.0.0.1:9" } }\n')
    config = parse_config(text, "<rig>")
    assert config.upload.destination == "s3://b/p" and config.upload.keep_local_gb == 50
    assert parse_config(to_toml(config), "<again>").upload == config.upload
    assert parse_config(small_sim_text(), "<rig>").upload == UploadConfig()
    for bad, field in (('verify = "md5"', "verify"), ("interval_s = 0", "interval_s"), ("chunk_mb = true", "chunk_mb"),
                       ("nope = 1", "unknown field")):
        with pytest.raises(ConfigError, match=field):
            parse_config(small_sim_text(f'\n[upload]\ndestination = "s3://b/p"\n{bad}\n'), "<rig>")


def test_background_uploads_never_run_during_a_take():
    busy = [False]
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    uploads = BackgroundUploads(command, interval_s=0.1, busy=lambda: busy[0], poll_s=0.02).start()
    try:
        deadline = time.monotonic() + 30
        while not uploads.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert uploads.running() and uploads.passes == 1
        busy[0] = True                                       # a take starts: the pass is stopped
        deadline = time.monotonic() + 30
        while uploads.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not uploads.running() and uploads.stopped_for_take == 1
        time.sleep(0.5)                                      # many intervals while recording: no new pass
        assert uploads.passes == 1 and not uploads.running()
        busy[0] = False
        deadline = time.monotonic() + 30
        while uploads.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert uploads.passes == 2
    finally:
        uploads.close()
    assert not uploads.running()


@pytest.mark.timeout(600)
def test_serve_uploads_between_takes_and_stops_for_a_take(s3, tmp_path):
    from capture_app.monitor.client import RecorderClient
    dest = f"s3://{BUCKET}/serve"
    # a 1 s take of this rig is ~4 MB: ~4 s of upload at 1 MB/s, so the second take starts mid-upload
    text = small_sim_text('\n[upload]\ndestination = "%s"\ninterval_s = 0.2\nchunk_mb = 0.0625\nmax_mb_per_s = 1.0\n'
                          % dest)
    config_path, out = tmp_path / "rig.toml", tmp_path / "episodes"
    config_path.write_text(text)
    control = tmp_path / "control"
    serve = _cli("serve", "--config", str(config_path), "--control", f"ipc://{control}", "--out", str(out),
                 "--wait", "60", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        deadline = time.monotonic() + 120
        while not control.exists() and time.monotonic() < deadline and serve.poll() is None:
            time.sleep(0.05)
        client = RecorderClient(f"ipc://{control}", connect_timeout_s=60)

        def state() -> dict:
            return _state(out)["files"] if (out / STATE_FILE).exists() else {}

        def wait_for(condition, what: str) -> None:
            deadline = time.monotonic() + 300  # the passes run at niceness 19: a loaded machine starves them
            while not condition() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert condition(), what
        client.call("start", {"name": "first", "task": "pour", "operator": "ana"})
        time.sleep(1.0)
        client.call("stop", {})
        wait_for(lambda: state().get("first.h5", {}).get("bytes_sent", 0) > 0, "serve never started the upload")
        client.call("start", {"name": "second", "task": "pour", "operator": "ana"})     # mid-upload
        t_start = time.time()
        wait_for(lambda: state()["first.h5"]["status"] == "pending", "the upload went on during the take")
        sent = state()["first.h5"]["bytes_sent"]
        time.sleep(1.0)
        assert state()["first.h5"]["status"] == "pending" and state()["first.h5"]["bytes_sent"] == sent
        client.call("stop", {})
        t_stop = time.time()
        wait_for(lambda: {n: e["status"] for n, e in state().items()} == {"first.h5": "verified",
                                                                        "second.h5": "verified"},
                 f"both takes were not uploaded after the take: {state()}")
        files = state()
        assert files["first.h5"]["verified_at"] > t_stop and files["first.h5"]["started_at"] > t_start
        assert files["first.h5"]["sha256"] == _sha(out / "first.h5")   # no deletion policy: kept
        assert Destination(dest).sha256("simulated-rig/episodes/second/second.h5") == _sha(out / "second.h5")
        wait_for(lambda: "2 uploaded and verified" in (out / ".upload.log").read_text()
                 or "1 uploaded and verified" in (out / ".upload.log").read_text(), "no pass summary in .upload.log")
    finally:
        if client is not None:
            client.close()
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def test_calibration_and_rig_checks_are_uploaded_and_never_deleted(tmp_path):
    _fake_episodes(tmp_path / "eps", [2000])
    check = tmp_path / "eps" / "rig-check-20261205.json"
    check.write_text(json.dumps({"result": "ok"}))
    calibration = tmp_path / "cal.json"
    calibration.write_text('{"calibration_id": "c1"}')
    for path in (check, calibration):
        os.utime(path, (time.time() - 60, time.time() - 60))
    config = UploadConfig(destination=f"file://{tmp_path / 'dest'}", keep_local_gb=0)
    result = Uploader(tmp_path / "eps", config, "rig-a", progress=False, calibration=calibration).run()
    assert sorted(result["uploaded"]) == ["@calibration", "ep0.h5", "rig-check-20261205.json"]
    assert result["deleted"] == ["ep0.h5"] and check.exists() and calibration.exists()
    digest = _sha(calibration)
    assert (tmp_path / f"dest/rig-a/calibration/{digest[:16]}/cal.json").read_bytes() == calibration.read_bytes()
    manifest = json.loads((tmp_path / f"dest/rig-a/calibration/{digest[:16]}/manifest.json").read_text())
    assert manifest["files"] == [{"path": "cal.json", "size": calibration.stat().st_size, "sha256": digest}]
    assert (tmp_path / "dest/rig-a/rig-checks/rig-check-20261205/rig-check-20261205.json").exists()
    beat = json.loads((tmp_path / "dest/rig-a/heartbeat.json").read_text())
    assert beat["last_rig_check"]["result"] == "ok" and beat["takes_total"] == 1


@pytest.mark.timeout(300)
def test_a_large_file_resumes_from_its_last_part_on_s3(s3, tmp_path):
    """Parts of 5 MiB (S3's minimum): killed after the first part, the next run sends only the rest."""
    out = tmp_path / "episodes"
    (path,) = _fake_episodes(out, [12 << 20])   # 3 parts
    digest = _sha(path)
    config_path = tmp_path / "rig.toml"
    config_path.write_text(small_sim_text('\n[upload]\ndestination = "s3://%s/big"\nchunk_mb = 5\nmax_mb_per_s = 4\n'
                                          % BUCKET))
    first = _cli("upload", "--config", str(config_path), "--out", str(out), "--no-progress",
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and first.poll() is None:
        if (out / STATE_FILE).exists():
            entry = _state(out)["files"].get(path.name, {})
            if entry.get("multipart", {}).get("upload_id") and (5 << 20) <= entry.get("bytes_sent", 0) < (12 << 20):
                os.kill(first.pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.02)
    first.wait(30)
    assert killed, "the uploader was never seen between parts"
    second = _cli("upload", "--config", str(config_path), "--out", str(out), "--no-progress",
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    entry = _state(out)["files"][path.name]
    assert entry["status"] == "verified" and entry["resumed_at_bytes"] >= 5 << 20 and entry["multipart"] == {}
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"big/simulated-rig/episodes/ep0/ep0.h5")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest and len(body) == 12 << 20
