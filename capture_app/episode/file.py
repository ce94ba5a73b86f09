"""Opening an episode file. Every reader and editor of an episode opens it here.

The writer stores depth with the Blosc filter of ``hdf5plugin``; an HDF5 library that has not
loaded it reads every depth chunk as an error (and searches a plugin directory that does not
exist). A filter that is not loaded is not damage, so this module loads the filters before
any episode is opened, and says clearly when a file is not an episode at all.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers Blosc and the other filters the writer may use)

from capture_app.episode.format import FORMAT_NAME
from capture_app.core.errors import EpisodeFormatError


def open_hdf5(path: str | Path, mode: str = "r", **kwargs) -> h5py.File:
    """Any HDF5 file (``h5py.File`` arguments) with the episode filters loaded: for creating an episode, or
    reading a file that may not be one (``inspect`` reports what is wrong with it)."""
    return h5py.File(path, mode, **kwargs)


def open_episode(path: str | Path, mode: str = "r", hint: str = "") -> h5py.File:
    """An existing episode file, opened with its filters loaded; ``mode`` "r" or "r+".

    Raises EpisodeFormatError (never creates or changes anything) when the file is missing, empty,
    not HDF5 or an HDF5 file that is not a capture-app episode (root attribute ``format``); ``hint`` is
    added to the message when HDF5 cannot open it."""
    if mode not in ("r", "r+"):
        raise ValueError(f"open_episode opens existing episodes only (mode 'r' or 'r+', not {mode!r})")
    path = Path(path)
    if not path.is_file():
        raise EpisodeFormatError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise EpisodeFormatError(f"{path} is empty (0 bytes): not an episode; nothing was ever flushed to it")
    try:
        f = h5py.File(path, mode)
    except OSError as exc:
        raise EpisodeFormatError(f"cannot open {path} as an HDF5 episode: {exc}{hint}") from None
    found = f.attrs.get("format")
    if found != FORMAT_NAME:
        f.close()
        raise EpisodeFormatError(f"{path} is an HDF5 file but not a capture-app episode (root attribute format is "
                                 f"{found!r}, expected {FORMAT_NAME!r}); it was left unchanged")
    return f
