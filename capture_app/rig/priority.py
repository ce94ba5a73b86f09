"""CPU priority of the recorder: a lower niceness for its process, real-time scheduling for the
synchronizer's ticking thread. Both need permission (README, "Priority"); without it the recorder
runs at normal priority and says so once in its log. No other effect: the data is the same.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

RECORDER_NICENESS = -5


def raise_priority(niceness: int = RECORDER_NICENESS) -> bool:
    """Give this process (and the threads it starts from now on) priority over ordinary work on the machine,
    so a busy machine delays the monitor and the simulated devices, not the synchronizer's ticks. Needs
    CAP_SYS_NICE or a nice limit (README: "Priority"); without it the recorder runs at normal priority
    and says so once."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current <= niceness:
        return True
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
        return True
    except OSError as exc:
        log.info("recorder runs at normal priority (could not set niceness %d: %s); ticks may be late on a busy "
                 "machine. README, 'Priority', says how to allow it", niceness, exc.strerror)
        return False


def make_this_thread_realtime(priority: int, reset_on_fork: bool = False) -> str:
    """Run the calling thread under SCHED_FIFO at ``priority`` (1..99; 0 leaves it as it is), so it
    preempts ordinary processes the moment it wakes; other threads keep their policy. Returns how the
    thread is scheduled, e.g. ``"SCHED_FIFO 10"`` or ``"normal (...why...)"``, for the episode's record.
    Threads it starts later inherit the policy; processes it starts do not when ``reset_on_fork``.
    Linux only; needs CAP_SYS_NICE or an rtprio limit (README: "Priority")."""
    if priority <= 0:
        return "normal (realtime_priority = 0)"
    if not hasattr(os, "sched_setscheduler"):
        return "normal (no real-time scheduling on this platform)"
    try:  # on Linux a thread id names the thread alone
        policy = os.SCHED_FIFO | (os.SCHED_RESET_ON_FORK if reset_on_fork else 0)
        os.sched_setscheduler(threading.get_native_id(), policy, os.sched_param(priority))
    except OSError as exc:
        log.info("synchronizer ticks at normal priority (SCHED_FIFO %d refused: %s); ticks may be late on a busy "
                 "machine. README, 'Priority', says how to allow it", priority, exc.strerror)
        return f"normal (SCHED_FIFO {priority} refused: {exc.strerror})"
    return f"SCHED_FIFO {priority}"


# Threads of the recorder that hold its GIL (dispatcher, writer, state publisher...) run real-time just
# below the ticks once ``enable_recorder_threads`` was called: a tick that wakes on time still waits for
# the GIL, and a GIL holder preempted by ordinary work (or by the monitor's display thread) makes it late.
_recorder_thread_priority = 0


def enable_recorder_threads(priority: int) -> None:
    """From now on ``prioritise_recorder_thread`` makes its caller SCHED_FIFO ``priority`` (0: not)."""
    global _recorder_thread_priority
    _recorder_thread_priority = priority


def prioritise_recorder_thread() -> str:
    """Call first thing in a recorder thread that takes the GIL often; returns how it is scheduled."""
    if _recorder_thread_priority <= 0:
        return "normal"
    # processes these threads start (the take finalizer's child computing the final table) stay ordinary
    return make_this_thread_realtime(_recorder_thread_priority, reset_on_fork=True)
