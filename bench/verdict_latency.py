"""How long after the stop the take's verdict is ready, by take length, with busy processes beside the recorder.

    python bench/verdict_latency.py [--seconds 10 120 600] [--busy 1] [--out DIR]

Records one take of each length on the embedded simulated rig (the full rig: 720p ego, 640x480 RGB-D top),
each started the moment the one before stops (as an operator would), and times, from the stop: the file closed
and renamed (``stop``), the next take started, then the final table and quality report written by the take's
follower (``verdict``, rows computed while the take recorded: capture_app.recorder.final_follower) while the next
take records, with the drift watch's summary (its catch-up, ``--drift-catch-up``) and the follower's own timings.
After the takes, on a copy of each file, the same work from the file alone (the path before the follower, and the
fallback): ``from the file``. ``--busy N`` runs N processes spinning a core each beside the recorder the whole time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine  # noqa: E402
from capture_app.episode.file import open_episode  # noqa: E402
from capture_app.recorder import episodes  # noqa: E402
from capture_app.recorder.episodes import finalize_in_child_process  # noqa: E402
from capture_app.recorder.session import CaptureSession  # noqa: E402
from capture_app.rig.config import load_config, with_changes  # noqa: E402


def _spin() -> None:
    while True:
        pass


class _Timed:
    """Wraps a method of ``episodes`` to note when it returned (s after ``t0``) and how long it took."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.original = owner, name, getattr(owner, name)
        self.t0, self.took_s, self.done_s = 0.0, 0.0, 0.0
        setattr(owner, name, self)

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.original(*args, **kwargs)
        finally:
            self.took_s, self.done_s = time.perf_counter() - t, time.perf_counter() - self.t0

    def restore(self) -> None:
        setattr(self.owner, self.name, self.original)


def stop_and_start_next(session: CaptureSession, out: Path, seconds: float, next_name: str | None) -> tuple:
    """Stop the take recording now (``seconds`` long), start the next one (``next_name``) at once, and time
    the verdict of the stopped take while the next records: (path, result dict)."""
    follower = session.writer.follower
    follower_cpu_s = _cpu_s(follower._process.pid)  # what following the take cost, up to its stop
    summary, store = _Timed(session.episodes, "drift_summary"), _Timed(session.episodes, "_store_drift")
    t0 = time.perf_counter()
    summary.t0 = store.t0 = t0
    path = session.stop_episode(finalize=False)
    closed = time.perf_counter() - t0
    started = None
    if next_name is not None:
        session.start_episode(out, name=next_name)
        started = time.perf_counter() - t0
    next_began = time.perf_counter()
    report = session.episodes.finalize(path)
    verdict = time.perf_counter() - t0
    summary.restore()
    store.restore()
    with open_episode(path) as f:
        computed = str(f["synced"].attrs.get("rows_computed", "?"))
        rows = len(f["synced/t_tick_ns"])
    return path, {"seconds": seconds, "rows": rows, "stop_s": closed, "verdict_s": verdict, "started_s": started,
                  "rows_computed": computed, "verdict": (report or {}).get("verdict", "none"),
                  "drift_wait_s": summary.took_s, "drift_stored_s": store.done_s, "follower": dict(follower.timings),
                  "load": os.getloadavg()[0], "follower_cpu_s": follower_cpu_s, "next_began": next_began}


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def from_the_file(path: Path) -> float:
    """Seconds to compute the final table and report of ``path`` from the file alone (a copy as the writer
    left it): the path before the follower, and its fallback."""
    copy = path.parent / f"copy-{path.name}"
    shutil.copy(path, copy)
    with open_episode(copy, "r+") as f:  # back to a file as the writer left it: the live table only
        del f["synced"]
        f.move("synced_live", "synced")
        del f.attrs["quality"]
    t1 = time.perf_counter()
    finalize_in_child_process(copy)
    took = time.perf_counter() - t1
    copy.unlink()
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 120.0, 600.0])
    parser.add_argument("--busy", type=int, default=1, help="processes spinning a core beside the recorder")
    parser.add_argument("--out", default=None)
    parser.add_argument("--drift-catch-up", type=float, default=None, metavar="S",
                        help="how long the stop lets the drift watch catch up before its summary is taken (default "
                             "the recorder's, capture_app.recorder.episodes.DRIFT_CATCH_UP_S)")
    parser.add_argument("--glove-silent-from", type=float, default=None, metavar="S",
                        help="the right glove delivers nothing from S seconds after the rig started (a dead battery): "
                             "the rows after it are not held back until the stop")
    args = parser.parse_args()
    config = load_config()
    if args.glove_silent_from is not None:
        config = with_changes(config, {"right_glove": {"drop_spells_s": [[args.glove_silent_from, 1e6]]}})
    if args.drift_catch_up is not None:
        episodes.DRIFT_CATCH_UP_S = args.drift_catch_up
    print(f"machine: {machine()}; busy processes beside the recorder: {args.busy}; the drift watch's catch-up at "
          f"the stop: up to {episodes.DRIFT_CATCH_UP_S:g} s" + ("" if args.glove_silent_from is None else
                                                                f"; the right glove silent from "
                                                                f"{args.glove_silent_from:g} s after the rig started"))
    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.out or tmp)
            with CaptureSession(config) as session:
                missing = session.wait_for_streams(30)
                if missing:
                    print(f"streams not delivering: {missing}")
                    return 1
                names = [f"take-{i}-{seconds:g}s" for i, seconds in enumerate(args.seconds)]
                session.start_episode(out, name=names[0])
                began = time.perf_counter()
                results = []
                for i, seconds in enumerate(args.seconds):
                    time.sleep(max(0.0, seconds - (time.perf_counter() - began)))  # it began at the last stop
                    path, r = stop_and_start_next(session, out, seconds, names[i + 1] if i + 1 < len(names) else None)
                    results.append((path, r))
                    began = r["next_began"]
                    started = "" if r["started_s"] is None else f"; next take started {r['started_s']:.2f} s after it"
                    print(f"take {r['seconds']:5.0f} s ({r['rows']} rows, verdict {r['verdict']}): file closed "
                          f"{r['stop_s']:.2f} s after the stop{started}; verdict {r['verdict_s']:.2f} s after it "
                          f"(rows computed {r['rows_computed']})", flush=True)
                    print(f"    the drift watch's summary took {r['drift_wait_s']:.2f} s (from the stop, beside the "
                          f"close; in the file {r['drift_stored_s']:.2f} s after the stop); load average "
                          f"{r['load']:.1f}; the follower used {r['follower_cpu_s']:.1f} CPU s during the take "
                          f"({100 * r['follower_cpu_s'] / seconds:.1f} % of a core)", flush=True)
                    print(f"    the follower's finish (s after it was sent): {r['follower']}", flush=True)
            for path, r in results:  # after the takes: this work would load the takes it ran beside
                took = from_the_file(path)
                finish = r["follower"].get("returned_after_s", 0.0)
                print(f"take {r['seconds']:5.0f} s from the file alone: {took:.2f} s (the follower's finish: "
                      f"{finish:.2f} s, {took / max(finish, 1e-3):.0f}x less)", flush=True)
    finally:
        for p in busy:
            p.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
