"""Which local sockets other users of this host can reach: the rules of docs/protocol.md "Trust model".

An ``ipc://`` socket is a file: whoever may write its directory can bind it first (and become the
driver the app connects to) and whoever may search it can connect (and command a recorder). So an
ipc endpoint of the bus or of the control channel must lie in a *private directory*: owned by this
user, no access for group or others (0700), and every directory above it owned by root or this user
and writable by nobody else unless sticky (like ``/tmp``, whose sticky bit keeps others from
replacing a directory they do not own). A missing directory is created 0700. Sockets this process
binds are made 0600. ``tcp://`` reaches every local user (and loopback is no exception), so the
control channel takes tcp only with CurveZMQ keys (``capture_app.bus.remote``).

Only ``os.stat`` and ``mkdir``/``chmod``; no sockets here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from capture_app.core.errors import ConfigError

HOW_TO_FIX = ("put it in a directory only you can use, e.g. ipc:///run/user/UID/capture/NAME.sock "
              "($XDG_RUNTIME_DIR), or `mkdir -m 700 DIR` and use ipc://DIR/NAME.sock")


def ipc_path(endpoint: str) -> Path:
    """The socket file of an ``ipc://`` endpoint (relative paths from the current directory)."""
    return Path(os.path.abspath(endpoint[len("ipc://"):]))


def directory_problem(directory: Path, uid: int | None = None) -> str:
    """Why other local users could reach sockets in ``directory`` ("" when it is private)."""
    uid = os.getuid() if uid is None else uid
    directory = Path(os.path.realpath(directory))
    st = os.stat(directory)
    if st.st_uid != uid:
        return f"directory {directory} belongs to uid {st.st_uid}, not to this user (uid {uid})"
    if st.st_mode & 0o077:
        return f"directory {directory} has mode {stat.S_IMODE(st.st_mode):03o}: group or others can use it (needs 700)"
    for parent in directory.parents:
        st = os.stat(parent)
        if st.st_uid not in (0, uid):
            return f"directory {parent} above it belongs to uid {st.st_uid}, who could replace what is inside"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return f"directory {parent} above it is writable by others (mode {stat.S_IMODE(st.st_mode):03o})"
    return ""


def require_private_ipc(endpoint: str | None, what: str) -> None:
    """Refuse (ConfigError) an ``ipc://`` endpoint whose directory other local users can reach; a missing
    directory is created 0700. Other schemes pass (``inproc://`` stays in this process)."""
    if not endpoint or not endpoint.startswith("ipc://"):
        return
    directory = ipc_path(endpoint).parent
    if not directory.exists():
        try:
            directory.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise ConfigError(f"{what} {endpoint}: cannot create its directory ({exc}); {HOW_TO_FIX}") from None
    problem = directory_problem(directory)
    if problem:
        raise ConfigError(f"{what} {endpoint}: {problem}, so another local user could bind or reach this socket; "
                          f"{HOW_TO_FIX} (docs/protocol.md, Trust model)")


def restrict_bound_socket(endpoint: str) -> None:
    """After binding an ``ipc://`` endpoint: only this user may connect to the socket file (0600)."""
    if endpoint.startswith("ipc://"):
        os.chmod(ipc_path(endpoint), 0o600)
