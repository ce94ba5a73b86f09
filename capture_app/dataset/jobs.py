"""Run one function over many episodes: on a local process pool (the default) or on a Ray cluster
(``ray_address``: ``local`` starts one on this machine, else ``ray://HOST:PORT`` or ``auto``). The
same top-level function runs in both; failed items are retried, and every failure is returned with
its error, never dropped."""

from __future__ import annotations

import multiprocessing
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable



@dataclass
class JobResult:
    item: Any
    value: Any = None
    error: str = ""        # the last attempt's error; empty on success
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return not self.error


class Progress:
    """A progress bar on stderr (tqdm): done/total, failures, episodes per minute."""

    def __init__(self, label: str, total: int, enabled: bool = True):
        self.label, self.total, self.enabled = label, total, enabled
        self.done = self.failed = 0
        self._t0 = time.monotonic()
        self._bar = None
        if enabled and total:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=label, unit="episode", file=sys.stderr, dynamic_ncols=True)

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self._bar is not None:
            rate = self.done / max(time.monotonic() - self._t0, 1e-9) * 60
            self._bar.set_postfix_str(f"{self.failed} failed, {rate:.1f}/min", refresh=False)
            self._bar.update(1)
            if self.done >= self.total:
                self._bar.close()


def _call(fn: Callable, item, kwargs: dict):
    """Run in a worker: the value, or the error as text (a worker's exception type may not unpickle)."""
    try:
        return True, fn(item, **kwargs)
    except Exception as exc:  # reported per item, with where it happened
        return False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"


def run_jobs(fn: Callable, items: list, *, kwargs: dict | None = None, workers: int | None = None,
             ray_address: str | None = None, retries: int = 1, label: str = "job",
             progress: bool = True) -> list[JobResult]:
    """``fn(item, **kwargs)`` for every item, in item order; up to ``retries`` more attempts for one that fails."""
    kwargs = kwargs or {}
    results = [JobResult(item) for item in items]
    bar = Progress(label, len(items), progress)
    if not items:
        return results
    if ray_address:
        _run_on_ray(fn, results, kwargs, ray_address, workers, retries, bar)
    else:
        _run_on_pool(fn, results, kwargs, workers, retries, bar)
    return results


def _finish(result: JobResult, ok: bool, value, retries: int, bar: Progress) -> bool:
    """Record one attempt; True when the item should be tried again."""
    result.attempts += 1
    if ok:
        result.value, result.error = value, ""
    else:
        result.error = value
        if result.attempts <= retries:
            return True
    bar.update(ok)
    return False


def _run_on_pool(fn, results, kwargs, workers, retries, bar) -> None:
    context = multiprocessing.get_context("spawn")  # no inherited threads or open HDF5 handles
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {pool.submit(_call, fn, r.item, kwargs): r for r in results}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = pending.pop(future)
                try:
                    ok, value = future.result()
                except Exception as exc:  # the worker process died (killed, out of memory)
                    ok, value = False, f"worker died: {exc}"
                if _finish(result, ok, value, retries, bar):
                    pending[pool.submit(_call, fn, result.item, kwargs)] = result


def ray_runtime_env() -> dict:
    """Ray ships this package's code (capture_app, calibration, drivers) to every worker with the job
    (``py_modules``): the nodes need its dependencies installed, not this package nor a path on this host."""
    import importlib
    modules = [importlib.import_module(name) for name in ("capture_app", "calibration", "drivers")]
    return {"py_modules": modules, "excludes": ["__pycache__", "*.pyc"]}


def _run_on_ray(fn, results, kwargs, address, workers, retries, bar) -> None:
    import ray
    started = not ray.is_initialized()
    temp_dir = None
    if started:
        runtime_env = ray_runtime_env()
        if address == "local":  # its session files in a folder of its own, removed when it stops
            temp_dir = tempfile.mkdtemp(prefix="capture-ray-")
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env=runtime_env, _temp_dir=temp_dir)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env=runtime_env)
    try:
        remote_call = ray.remote(max_retries=0)(_call)
        pending = {remote_call.remote(fn, r.item, kwargs): r for r in results}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                result = pending.pop(ref)
                try:
                    ok, value = ray.get(ref)
                except Exception as exc:  # a worker or node lost
                    ok, value = False, f"ray task failed: {exc}"
                if _finish(result, ok, value, retries, bar):
                    pending[remote_call.remote(fn, result.item, kwargs)] = result
    finally:
        if started:
            ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def summary(results: list[JobResult], label: str) -> str:
    """What a job did: successes, failures with their first error line, retries."""
    failed = [r for r in results if not r.ok]
    retried = sum(r.attempts > 1 for r in results)
    lines = [f"{label}: {len(results) - len(failed)} of {len(results)} episodes done, {len(failed)} failed"
             + (f", {retried} needed a retry" if retried else "")]
    lines += [f"  FAILED {r.item}: {r.error.splitlines()[0]}" for r in failed]
    return "\n".join(lines)
