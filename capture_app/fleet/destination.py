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
