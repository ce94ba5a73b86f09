"""Where episodes are: a folder, a file, a ``file://`` URL, or any fsspec URL (``s3://``, ``gs://``...
through the fsspec backend installed for it). Workers get a local path to open with h5py."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from capture_app.core.errors import CaptureError

EPISODE_SUFFIX = ".h5"  # finished episodes; a .partial is an interrupted one (`capture-app recover`)


def is_local(source: str) -> bool:
    """Whether ``source`` is a path or a file:// URL (else an fsspec URL)."""
    return "://" not in source or source.startswith("file://")


def local_path_of(source: str) -> Path:
    """The path of a local ``source`` (a path or a file:// URL)."""
    return Path(urlparse(source).path) if source.startswith("file://") else Path(source)


def list_episodes(sources: list[str]) -> list[str]:
    """Every finished episode under ``sources`` (files or folders, searched recursively), sorted, as
    local paths or URLs."""
    found: list[str] = []
    for source in sources:
        if is_local(source):
            path = local_path_of(source)
            if path.is_file():
                found.append(str(path))
            elif path.is_dir():
                found += [str(p) for p in sorted(path.rglob(f"*{EPISODE_SUFFIX}"))]
            else:
                raise CaptureError(f"{source}: no such episode file or folder")
        else:
            import fsspec
            fs, root = fsspec.core.url_to_fs(source)
            protocol = source.split("://", 1)[0]
            paths = [root] if fs.isfile(root) else sorted(fs.glob(f"{root.rstrip('/')}/**/*{EPISODE_SUFFIX}"))
            found += [f"{protocol}://{p}" for p in paths]
    return sorted(dict.fromkeys(found))


@contextlib.contextmanager
def local_copy(source: str):
    """A local path to the episode at ``source``: the file itself, or a temporary download."""
    if is_local(source):
        yield str(local_path_of(source))
        return
    import fsspec
    with tempfile.TemporaryDirectory(prefix="capture-episode-") as tmp:
        target = Path(tmp) / Path(urlparse(source).path).name
        with fsspec.open(source, "rb") as remote, open(target, "wb") as local:
            while chunk := remote.read(16 << 20):
                local.write(chunk)
        yield str(target)


def file_identity(source: str) -> tuple[int, float]:
    """(size in bytes, modification time in s) of an episode, to tell whether the catalog row is current."""
    if is_local(source):
        st = local_path_of(source).stat()
        return st.st_size, st.st_mtime
    import fsspec
    fs, path = fsspec.core.url_to_fs(source)
    info = fs.info(path)
    mtime = info.get("mtime") or info.get("LastModified") or 0
    return int(info.get("size", 0)), float(mtime.timestamp() if hasattr(mtime, "timestamp") else mtime)
