"""Helpers shared by the benchmarks: machine description, CPU of a process, percentiles."""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} vCPU, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def process_cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds of a process, or of a thread as "self/task/TID" (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values, q) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.percentile(values, q)) if len(values) else float("nan")


def stopwatch():
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def thread_cpu_seconds() -> dict[str, float]:
    """User + system CPU seconds of each live Python thread of this process, by thread name (Linux /proc)."""
    import threading
    out = {}
    for thread in threading.enumerate():
        try:
            out[thread.name] = process_cpu_seconds(f"self/task/{thread.native_id}")
        except OSError:  # the thread ended
            pass
    return out
