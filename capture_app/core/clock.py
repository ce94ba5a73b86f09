"""The host clock every sample is stamped on.

One monotonic clock for the whole host (Linux CLOCK_MONOTONIC, shared by all
processes), in integer nanoseconds. Wall-clock time is only used for metadata.
"""

from __future__ import annotations

import datetime as _dt
import os
import time

NS_PER_S = 1_000_000_000


def now_ns() -> int:
    """Host monotonic time in nanoseconds."""
    return time.monotonic_ns()


def wall_clock_iso() -> str:
    """The current wall-clock time, ISO 8601 with timezone, for metadata."""
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="milliseconds")


def sleep_until_ns(deadline_ns: int, stop_event=None) -> bool:
    """Sleep until the monotonic ``deadline_ns``; return False early if ``stop_event`` is set."""
    while True:
        remaining = deadline_ns - time.monotonic_ns()
        if remaining <= 0:
            return True
        if stop_event is not None:
            if stop_event.wait(remaining / NS_PER_S):
                return False
        else:
            time.sleep(remaining / NS_PER_S)


def stamp_skew_ns() -> int:
    """Test hook: ``CAPTURE_APP_TEST_CLOCK_SKEW_NS`` shifts the stamps (and clock service) of simulated
    drivers in this process, as if they ran on a host whose clock differs. Never set in production."""
    return int(os.environ.get("CAPTURE_APP_TEST_CLOCK_SKEW_NS", "0"))
