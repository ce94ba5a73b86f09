"""Values from outside (control commands, driver status, task files, the command line): checked at the
boundary, and made storable where they must be kept whatever they are. Pure: no I/O, no threads.

Two kinds of function:

* ``checked_*`` refuse a value that does not fit (``ValueError`` naming the field, what was wrong and what
  is allowed): for commands and settings, where a clear refusal is the right answer.
* ``storable_*`` turn any value into one HDF5 can store (text without NUL bytes or lone surrogates, of a
  bounded length; an int64): for what must be recorded whatever it is (a driver's error text, an event).
  They say whether they had to change it, so the caller can count it.
"""

from __future__ import annotations

import math

import numpy as np

INT64_MAX = 2 ** 63 - 1
MAX_TEXT_CHARS = 4096      # an event message, a note, a driver's error text
MAX_NAME_CHARS = 200       # a label, a hand, an operator, a ``by``
TRUNCATED = " [... {} characters cut]"


def _escaped(text: str) -> str:
    """NUL and other C0 control characters (but tab and newline) as \\xNN, lone surrogates as \\udNNN."""
    if text.isprintable() or all(c >= " " or c in "\t\n" for c in text):
        out = text
    else:
        out = "".join(c if c >= " " or c in "\t\n" else f"\\x{ord(c):02x}" for c in text)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        out = out.encode("utf-8", "backslashreplace").decode("utf-8")
    return out


def storable_text(value, limit: int = MAX_TEXT_CHARS) -> tuple[str, bool]:
    """(text HDF5 stores as it reads, whether it had to change): anything not a str is shown by ``repr``,
    control characters and lone surrogates escaped, and the text cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    out = _escaped(text)
    if len(out) > limit:
        out = out[:limit] + TRUNCATED.format(len(out) - limit)
    return out, out != value


def storable_t_ns(value) -> int | None:
    """``value`` as an int64 time in ns (0 <= t <= 2**63 - 1), or None when it is not one."""
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= INT64_MAX else None


def checked_text(field: str, value, *, limit: int = MAX_TEXT_CHARS, required: bool = False) -> str:
    """A text argument: a str of at most ``limit`` characters without NUL or other control characters
    (tab and newline allowed) or lone surrogates; non-empty when ``required``."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text, not {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"{field} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{field} is {len(value)} characters long; at most {limit} are accepted")
    bad = next((c for c in value if c < " " and c not in "\t\n"), None)
    if bad is not None:
        raise ValueError(f"{field} contains the control character {bad!r} (NUL bytes and other control "
                         f"characters are refused)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} is not valid Unicode (a lone surrogate)") from None
    return value


def checked_t_ns(field: str, value) -> int:
    """A time in ns on the recorder's monotonic clock: an integer, 0 <= t < 2**63 - 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be an integer time in ns, not {type(value).__name__} {value!r:.40}")
    if not 0 <= value < INT64_MAX:
        raise ValueError(f"{field} = {value} is outside 0 .. 2**63 - 2 ns")
    return value


def checked_choice(field: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{field} {value!r:.60}: use one of {', '.join(choices)}")
    return value


def checked_number(field: str, value, low: float, high: float) -> float:
    """A finite number (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{field} = {value!r}: give a number from {low:g} to {high:g}")
    return float(value)


MAX_IPC_PATH = 107  # a Unix socket path (sun_path) holds at most 107 bytes and a NUL


def checked_endpoint(field: str, value, *, inproc: bool = True) -> str:
    """A ZeroMQ endpoint of this application: ``ipc://PATH`` (a non-empty path of at most 107 bytes),
    ``tcp://HOST:PORT`` (PORT 1..65534: the next port is the state feed or the clock service) or, where
    ``inproc``, ``inproc://NAME``."""
    schemes = "ipc://PATH, tcp://HOST:PORT or inproc://NAME" if inproc else "ipc://PATH or tcp://HOST:PORT"
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError(f"{field} {value!r:.80}: use {schemes}")
    if value.startswith("ipc://"):
        path = value[len("ipc://"):]
        if not path or path.endswith("/"):
            raise ValueError(f"{field} {value!r}: an ipc:// endpoint needs a socket path, e.g. ipc:///run/capture/x.sock")
        if len(path.encode()) > MAX_IPC_PATH:
            raise ValueError(f"{field} {value!r}: the socket path is {len(path.encode())} bytes; at most "
                             f"{MAX_IPC_PATH} fit in a Unix socket address")
        return value
    if value.startswith("tcp://"):
        host, sep, port = value[len("tcp://"):].rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65534:
            raise ValueError(f"{field} {value!r}: use {schemes}, with PORT a number from 1 to 65534 (the next "
                             f"port is used too)")
        return value
    if inproc and value.startswith("inproc://") and len(value) > len("inproc://"):
        return value
    raise ValueError(f"{field} {value!r:.80}: use {schemes}")
