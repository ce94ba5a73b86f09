"""How long after the stop the take's verdict is ready, by take length, with busy processes beside the recorder.

    python bench/verdict_latency.py [--seconds 10 120 600] [--busy 1] [--out DIR]

Records one take of each length on the embedded simulated rig (the full rig: 720p ego, 640x480 RGB-D top)
and times, from the stop: the file closed and renamed (``stop``), then the final table and quality report
written by the take's follower (``verdict``, rows computed while the take recorded:
capture_app.recorder.final_follower), with the drift watch's summary (its catch-up, ``--drift-catch-up``) and
the follower's own timings. Then, on a copy of the same file, the same work from the file alone (the
path before the follower, and the fallback): ``from the file``. ``--busy N`` runs N processes spinning a core
each beside the recorder the whole time.
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
from capture_app.rig.config import load_config  # noqa: E402


def _spin() -> None:
    while True:
        pass


def one_take(session: CaptureSession, out: Path, seconds: float) -> dict:
    """Record ``seconds``; the times (s) from the stop to the closed file and to the verdict."""
    writer = session.start_episode(out, name=f"take-{seconds:g}s")
    follower = writer.follower
    time.sleep(seconds)
    drift_wait = {}
    summary = session.episodes.drift_summary

    def timed_summary(*args, **kwargs):
        t = time.perf_counter()
        try:
            return summary(*args, **kwargs)
        finally:
            drift_wait["s"] = time.perf_counter() - t
    session.episodes.drift_summary = timed_summary
    t0 = time.perf_counter()
    path = session.stop_episode(finalize=False)
    closed = time.perf_counter() - t0
    session.episodes.drift_summary = summary
    store_drift = session.episodes._store_drift
    drift_stored = {}

    def timed_store(*args):
        store_drift(*args)
        drift_stored.setdefault("s", time.perf_counter() - t0)
    session.episodes._store_drift = timed_store
    startable = session.recording is False  # the next take could start now: nothing holds the episodes
    report = session.episodes.finalize(path)
    verdict = time.perf_counter() - t0
    session.episodes._store_drift = store_drift
    with open_episode(path) as f:
        computed = str(f["synced"].attrs.get("rows_computed", "?"))
        rows = len(f["synced/t_tick_ns"])
    copy = out / f"copy-{path.name}"
    shutil.copy(path, copy)
    with open_episode(copy, "r+") as f:  # back to a file as the writer left it: the live table only
        del f["synced"]
        f.move("synced_live", "synced")
        del f.attrs["quality"]
    t1 = time.perf_counter()
    finalize_in_child_process(copy)
    from_file = time.perf_counter() - t1
    copy.unlink()
    return {"seconds": seconds, "rows": rows, "stop_s": closed, "verdict_s": verdict, "from_file_s": from_file,
            "rows_computed": computed, "verdict": (report or {}).get("verdict", "none"), "startable": startable,
            "drift_wait_s": drift_wait.get("s", 0.0), "drift_stored_s": drift_stored.get("s", 0.0),
            "follower": dict(follower.timings)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 120.0, 600.0])
    parser.add_argument("--busy", type=int, default=1, help="processes spinning a core beside the recorder")
    parser.add_argument("--out", default=None)
    parser.add_argument("--drift-catch-up", type=float, default=None, metavar="S",
                        help="how long the stop lets the drift watch catch up before its summary is taken (default "
                             "the recorder's, capture_app.recorder.episodes.DRIFT_CATCH_UP_S)")
    args = parser.parse_args()
    if args.drift_catch_up is not None:
        episodes.DRIFT_CATCH_UP_S = args.drift_catch_up
    print(f"machine: {machine()}; busy processes beside the recorder: {args.busy}; the drift watch's catch-up at "
          f"the stop: up to {episodes.DRIFT_CATCH_UP_S:g} s")
    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.out or tmp)
            with CaptureSession(load_config()) as session:
                missing = session.wait_for_streams(30)
                if missing:
                    print(f"streams not delivering: {missing}")
                    return 1
                for seconds in args.seconds:
                    r = one_take(session, out, seconds)
                    print(f"take {r['seconds']:5.0f} s ({r['rows']} rows, verdict {r['verdict']}): file closed "
                          f"{r['stop_s']:.2f} s after the stop, verdict {r['verdict_s']:.2f} s after it (rows "
                          f"computed {r['rows_computed']}); from the file alone {r['from_file_s']:.2f} s "
                          f"({r['from_file_s'] / max(r['verdict_s'] - r['stop_s'], 1e-3):.1f}x)", flush=True)
                    print(f"    the drift watch's summary took {r['drift_wait_s']:.2f} s (from the stop, beside the "
                          f"close; in the file {r['drift_stored_s']:.2f} s after the stop); next take startable at "
                          f"the close: {r['startable']}; load average {os.getloadavg()[0]:.1f}; follower (s after "
                          f"the finish was sent): {r['follower']}", flush=True)
    finally:
        for p in busy:
            p.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
