"""A destination is an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``file:///mnt/share`` or a path)
plus fsspec options. Files are streamed in chunks (bandwidth cap, progress, a checkpoint per chunk) and
read back to be verified; nothing here knows about episodes."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from capture_app.core.errors import CaptureError


MIN_PART_BYTES = 5 << 20  # S3's smallest part (but the last)


class Destination:
    """The root ``url`` on its filesystem. Keys are '/'-separated paths below the root."""

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec
        if not url:
            raise CaptureError("no upload destination: set [upload] destination in the rig config "
                               "(docs/upload.md) or pass --dest URL")
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise CaptureError(f"upload destination {url!r}: {exc} (install the fsspec backend for it, "
                               f"e.g. pip install s3fs for s3://)") from None
        self.url, self.root = url, root.rstrip("/")

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def size(self, key: str) -> int | None:
        try:
            return int(self.fs.info(self.path(key))["size"])
        except FileNotFoundError:
            return None

    def put_file(self, local: Path, key: str, chunk_bytes: int, max_bytes_per_s: float = 0.0,
                 on_chunk: Callable[[int], None] | None = None) -> None:
        """Stream ``local`` to ``key``, ``chunk_bytes`` at a time, at most ``max_bytes_per_s`` (0: no cap);
        ``on_chunk(bytes_sent)`` after each chunk. The object appears complete or not at all on an object
        store (a multipart upload completes at close); on a filesystem a killed copy leaves a short file
        that verification refuses and the next run replaces."""
        self.fs.makedirs(self.fs._parent(self.path(key)), exist_ok=True)
        sent, start = 0, time.monotonic()
        target = self.fs.open(self.path(key), "wb")
        try:
            with open(local, "rb") as source:
                while chunk := source.read(chunk_bytes):
                    target.write(chunk)
                    sent += len(chunk)
                    if max_bytes_per_s > 0:
                        ahead = sent / max_bytes_per_s - (time.monotonic() - start)
                        if ahead > 0:
                            time.sleep(ahead)
                    if on_chunk:
                        on_chunk(sent)  # may raise to stop: the object is then not completed
        except BaseException:
            if hasattr(target, "discard"):
                target.discard()  # an object store: abort the multipart upload, no truncated object
            else:
                target.close()  # a filesystem: a short file, refused by verification, replaced next pass
            raise
        target.close()

    def resumable(self) -> bool:
        """Whether files can be resumed part by part here (S3 multipart uploads)."""
        protocol = self.fs.protocol
        return bool({"s3", "s3a"} & set(protocol if isinstance(protocol, (tuple, list)) else (protocol,)))

    def put_file_resumable(self, local: Path, key: str, part_bytes: int, record: dict, save: Callable[[], None],
                           max_bytes_per_s: float = 0.0, on_chunk: Callable[[int], None] | None = None) -> int:
        """Upload ``local`` to ``key`` as an S3 multipart upload that survives this process: ``record`` (kept
        in the caller's durable state, ``save()`` persists it) holds the upload's id; a later call with the
        same record asks the server which parts it has (``list_parts``) and sends only the rest. Parts are
        ``part_bytes`` (at least 5 MiB, S3's minimum). ``on_chunk`` may raise to stop: the upload then stays
        open to be resumed (an object store keeps incomplete uploads until a lifecycle rule removes them).
        Returns the byte offset the upload resumed at (0: from the start)."""
        bucket, path, _ = self.fs.split_path(self.path(key))
        size = Path(local).stat().st_size
        part_bytes = max(int(part_bytes), MIN_PART_BYTES)
        parts: list[dict] = []
        upload_id = record.get("upload_id") if record.get("key") == key and record.get("part_bytes") == part_bytes else None
        if upload_id:
            try:
                listed = self.fs.call_s3("list_parts", Bucket=bucket, Key=path, UploadId=upload_id, MaxParts=10000)
                have = {p["PartNumber"]: p for p in listed.get("Parts", [])}
                while (n := len(parts) + 1) in have and have[n]["Size"] == min(part_bytes, size - (n - 1) * part_bytes):
                    parts.append({"PartNumber": n, "ETag": have[n]["ETag"]})
            except (OSError, KeyError):  # the upload is gone (expired, aborted): start a new one
                upload_id, parts = None, []
        if not upload_id:
            upload_id = self.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=path)["UploadId"]
            record.clear()
            record.update(upload_id=upload_id, key=key, part_bytes=part_bytes)
            save()
        sent = resumed = len(parts) * part_bytes
        start, first = time.monotonic(), sent
        with open(local, "rb") as source:
            source.seek(sent)
            while data := source.read(part_bytes):
                number = len(parts) + 1
                reply = self.fs.call_s3("upload_part", Bucket=bucket, Key=path, UploadId=upload_id,
                                        PartNumber=number, Body=data)
                parts.append({"PartNumber": number, "ETag": reply["ETag"]})
                sent += len(data)
                if max_bytes_per_s > 0:
                    ahead = (sent - first) / max_bytes_per_s - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                if on_chunk:
                    on_chunk(sent)
        self.fs.call_s3("complete_multipart_upload", Bucket=bucket, Key=path, UploadId=upload_id,
                        MultipartUpload={"Parts": parts})
        self.fs.invalidate_cache(self.path(key))
        record.clear()
        save()
        return resumed

    def sha256(self, key: str, chunk_bytes: int = 8 << 20) -> str:
        """SHA-256 of the object as the destination returns it (read back in full)."""
        digest = hashlib.sha256()
        with self.fs.open(self.path(key), "rb") as f:
            while chunk := f.read(chunk_bytes):
                digest.update(chunk)
        return digest.hexdigest()

    def write_json(self, key: str, value) -> None:
        self.fs.makedirs(self.fs._parent(self.path(key)), exist_ok=True)
        with self.fs.open(self.path(key), "wb") as f:
            f.write(json.dumps(value, indent=1, sort_keys=True).encode())

    def read_json(self, key: str):
        with self.fs.open(self.path(key), "rb") as f:
            return json.loads(f.read())

    def glob(self, pattern: str) -> list[str]:
        """Keys (relative to the root) matching ``pattern``."""
        prefix = f"{self.root}/" if self.root else ""
        return sorted(p[len(prefix):] if p.startswith(prefix) else p for p in self.fs.glob(self.path(pattern)))


def file_sha256(path: Path, chunk_bytes: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def folder_bytes(folder: Path, suffix: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob(f"*{suffix}") if p.is_file())
