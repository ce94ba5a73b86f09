"""``capture-app upload``: every finished episode of a rig's episodes folder to the ``[upload]``
destination (docs/upload.md). Per episode: hash it (SHA-256), stream it, read it back and compare,
write the manifest, mark it ``verified`` in the state file; then delete local copies only as
``keep_local_gb`` says, and write the rig's heartbeat. A killed or failed run resumes where the state
file says: verified episodes are never sent again, an interrupted file is sent again from its start
(unless the destination already holds it, verified by hash)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

from capture_app import __version__
from capture_app.core.errors import CaptureError
from capture_app.fleet.destination import MIN_PART_BYTES, Destination, file_sha256, folder_bytes
from capture_app.fleet.heartbeat import RIG_CHECK_GLOB
from capture_app.fleet.manifest import MANIFEST_NAME, build_manifest, episode_prefix
from capture_app.fleet.state import UploadState
from capture_app.rig.config import UploadConfig

log = logging.getLogger(__name__)
EPISODE_SUFFIX = ".h5"
CALIBRATION_KEY = "@calibration"  # the state entry of the rig's calibration file ([calibration] path)
SETTLE_S = 2.0  # an episode file modified less than this long ago may still be finishing: next pass


def episode_info(path: Path) -> dict:
    """What the heartbeat and the fleet report need of an episode, read once (the local copy may go)."""
    from capture_app.dataset.catalog import catalog_row
    try:
        row = catalog_row(str(path))
    except Exception as exc:  # an unreadable episode is still uploaded: it is the rig's data
        return {"validation": "unreadable", "problem": f"{type(exc).__name__}: {exc}"[:300]}
    keys = ("created", "operator", "task", "instruction", "duration_s", "rig", "calibration_id", "status",
            "verdict", "left_valid", "right_valid", "validation", "synced_rows", "subtasks")
    return {k: (None if isinstance(row[k], float) and row[k] != row[k] else row[k]) for k in keys}


class UploadInterrupted(Exception):
    """The pass was asked to stop (a take starts, SIGTERM) in the middle of a file."""


class Uploader:
    """One rig's upload queue over ``folder`` (its episodes) to ``config.destination``."""

    def __init__(self, folder: str | Path, config: UploadConfig, rig: str, progress: bool = True,
                 should_stop=lambda: False, calibration: str | Path | None = None):
        self.folder, self.config, self.rig = Path(folder), config, rig
        self.calibration = Path(calibration) if calibration else None
        self.dest = Destination(config.destination, config.storage_options)
        self.state = UploadState(self.folder, config.destination)
        self.progress, self.should_stop = progress, should_stop

    # --- the queue ---------------------------------------------------------------------------
    def _local(self, name: str) -> Path:
        """The local file of a state entry: ``CALIBRATION_KEY`` is the rig's calibration file."""
        return self.calibration if name == CALIBRATION_KEY else self.folder / name

    def _candidates(self) -> list[tuple[str, Path]]:
        found = [(p.relative_to(self.folder).as_posix(), p) for p in sorted(self.folder.rglob(f"*{EPISODE_SUFFIX}"))]
        found += [(p.name, p) for p in sorted(self.folder.glob(RIG_CHECK_GLOB))]
        if self.calibration is not None and self.calibration.is_file():
            found.append((CALIBRATION_KEY, self.calibration))
        return found

    def scan(self) -> list[str]:
        """Add new and changed finished episodes (and rig-check reports, the calibration file) to the state
        as pending; returns the pending names."""
        now = time.time()
        for name, path in self._candidates():
            st = path.stat()
            if now - st.st_mtime < SETTLE_S:
                continue
            entry = self.state.entry(name)
            if entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
                if entry["status"] in ("verified", "deleted"):
                    log.warning("%s changed after it was uploaded (resync?): uploading it again", name)
                entry.update(status="pending", size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=None, bytes_sent=0,
                             multipart={})  # a changed file starts a new upload
        self.state.save()
        return self.state.with_status("pending", "uploading")

    def run(self) -> dict:
        """One pass: upload what is pending, apply the deletion policy, write the heartbeat. Returns counts."""
        done, failed = [], []
        for name in self.scan():
            if self.should_stop():
                break
            try:
                self.upload_episode(name)
                done.append(name)
            except UploadInterrupted:
                self.state.entry(name)["status"] = "pending"
                self.state.save()
                break
            except Exception as exc:  # noted in the state, tried again next pass
                entry = self.state.entry(name)
                entry.update(status="pending", error=f"{type(exc).__name__}: {exc}"[:500])
                self.state.save()
                failed.append(name)
                log.error("upload of %s failed (retried next pass): %s", name, exc)
        deleted = self.apply_policy()
        from capture_app.fleet.heartbeat import write_heartbeat
        write_heartbeat(self.dest, self.rig, self.folder, self.state)
        return {"uploaded": done, "failed": failed, "deleted": deleted,
                "backlog": self.state.with_status("pending", "uploading")}

    def upload_episode(self, name: str) -> None:
        """Upload, verify and mark one episode (see the module docstring)."""
        local = self._local(name)
        entry = self.state.entry(name)
        entry["attempts"] = entry.get("attempts", 0) + 1
        if not entry.get("sha256"):
            entry["sha256"] = file_sha256(local)
        if name.endswith(EPISODE_SUFFIX):
            if "info" not in entry:
                entry["info"] = episode_info(local)
            episode = Path(name).name.removesuffix(EPISODE_SUFFIX)
            prefix = episode_prefix(self.rig, episode)
        else:  # a calibration or a rig-check report: <rig>/calibration/<sha256 prefix>/, <rig>/rig-checks/<stem>/
            episode = Path(local).stem
            kind = "calibration" if name == CALIBRATION_KEY else "rig-checks"
            prefix = f"{self.rig}/{kind}/{entry['sha256'][:16] if name == CALIBRATION_KEY else episode}"
        key = f"{prefix}/{Path(local).name}"
        if self.dest.size(key) == entry["size"] and self.dest.sha256(key) == entry["sha256"]:
            log.info("%s: already complete on the destination (an interrupted run's), not sent again", name)
        else:
            entry.update(status="uploading", bytes_sent=0, started_at=time.time())
            self.state.save()
            self._send(local, key, entry)
        self._verify(key, entry)
        files = [{"path": Path(local).name, "size": entry["size"], "sha256": entry["sha256"]}]
        self.dest.write_json(f"{prefix}/{MANIFEST_NAME}",
                             build_manifest(self.rig, episode, files, entry.get("info", {}), __version__))
        st = Path(local).stat()
        if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
            raise CaptureError(f"{local} changed while it was uploaded; it is sent again next pass")
        entry.update(status="verified", verified_at=time.time(), error="", key=key)
        self.state.save()

    def _send(self, local: Path, key: str, entry: dict) -> None:
        chunk = max(int(self.config.chunk_mb * (1 << 20)), 1 << 16)
        last_save = [time.monotonic()]
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=entry["size"], desc=f"upload {Path(local).name}", unit="B", unit_scale=True,
                       unit_divisor=1024, file=sys.stderr, dynamic_ncols=True, leave=False)

        def on_chunk(sent: int) -> None:
            if self.should_stop():
                raise UploadInterrupted(f"{local}: upload stopped after {sent} bytes; resumed next pass")
            if bar is not None:
                bar.update(sent - bar.n)
            entry["bytes_sent"] = sent
            if time.monotonic() - last_save[0] > 0.5:  # progress in the state at most twice a second
                self.state.save()
                last_save[0] = time.monotonic()
        try:
            if self.dest.resumable() and entry["size"] > max(chunk, MIN_PART_BYTES):
                record = entry.setdefault("multipart", {})
                entry["resumed_at_bytes"] = self.dest.put_file_resumable(
                    local, key, chunk, record, self.state.save, self.config.max_mb_per_s * (1 << 20), on_chunk)
            else:
                self.dest.put_file(local, key, chunk, self.config.max_mb_per_s * (1 << 20), on_chunk)
        finally:
            if bar is not None:
                bar.close()

    def _verify(self, key: str, entry: dict) -> None:
        size = self.dest.size(key)
        if size != entry["size"]:
            raise CaptureError(f"{self.dest.url}/{key}: {size} bytes on the destination, {entry['size']} here")
        if self.config.verify == "sha256":
            remote = self.dest.sha256(key)
            if remote != entry["sha256"]:
                raise CaptureError(f"{self.dest.url}/{key}: SHA-256 {remote} on the destination, "
                                   f"{entry['sha256']} here; sent again next pass")

    # --- local copies ----------------------------------------------------------------------------
    def apply_policy(self) -> list[str]:
        """Delete the oldest verified local episodes while the folder holds more than ``keep_local_gb``."""
        keep = self.config.keep_local_gb
        if keep < 0:
            return []
        total = folder_bytes(self.folder, EPISODE_SUFFIX)
        deleted = []
        episodes = [n for n in self.state.with_status("verified") if n.endswith(EPISODE_SUFFIX)]  # never the rest
        for name in sorted(episodes, key=lambda n: self.state.entries[n]["mtime_ns"]):
            if total <= keep * 1e9:
                break
            local, entry = self.folder / name, self.state.entries[name]
            st = local.stat() if local.exists() else None
            if st is None or (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
                continue  # gone or changed since it was verified: never delete what was not uploaded
            entry.update(status="deleted", deleted_at=time.time())
            self.state.save()  # first the record, then the file: a crash between leaves a file, never a lie
            local.unlink()
            total -= st.st_size
            deleted.append(name)
        return deleted


def low_priority() -> None:
    """Run this process at the lowest CPU priority (and idle I/O class where the kernel allows)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except OSError:
        pass
    try:  # ioprio_set(IOPRIO_WHO_PROCESS, self, IOPRIO_CLASS_IDLE << 13); syscall 251 on x86_64 only
        import ctypes
        import platform
        if platform.machine() != "x86_64":
            return
        ctypes.CDLL(None, use_errno=True).syscall(251, 1, 0, 3 << 13)
    except Exception:
        pass


def stop_on_signals() -> list[bool]:
    """SIGTERM / SIGINT let the current file finish its chunk, then the pass stops (the state is saved)."""
    flag = [False]

    def handler(*_):
        flag[0] = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return flag
