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
    """User + system CPU seconds of each live thread of this process (Linux /proc): Python threads by their
    name, the others (ZeroMQ's I/O threads, HDF5/Blosc workers) by their kernel name in brackets."""
    import threading
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            name = names.get(int(tid)) or f"[{open(f'/proc/self/task/{tid}/comm').read().strip()}]"
            out[name] = out.get(name, 0.0) + process_cpu_seconds(f"self/task/{tid}")
        except OSError:  # the thread ended
            pass
    return out
