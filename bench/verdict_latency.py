"""How long after the stop the take's verdict is ready, by take length, with busy processes beside the recorder.

    python bench/verdict_latency.py [--seconds 10 120 600] [--busy 1] [--out DIR]

Records one take of each length on the embedded simulated rig (the full rig: 720p ego, 640x480 RGB-D top)
and times, from the stop: the file closed and renamed (``stop``), then the final table and quality report
written by the take's follower (``verdict``, rows computed while the take recorded:
capture_app.recorder.final_follower). Then, on a copy of the same file, the same work from the file alone (the
path before the follower, and the fallback): ``from the file``. ``--busy N`` runs N processes spinning a core
each beside the recorder the whole time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine  # noqa: E402
from capture_app.episode.file import open_episode  # noqa: E402
from capture_app.recorder.episodes import finalize_in_child_process  # noqa: E402
from capture_app.recorder.session import CaptureSession  # noqa: E402
from capture_app.rig.config import load_config  # noqa: E402


def _spin() -> None:
    while True:
        pass


def one_take(session: CaptureSession, out: Path, seconds: float) -> dict:
    """Record ``seconds``; the times (s) from the stop to the closed file and to the verdict."""
    session.start_episode(out, name=f"take-{seconds:g}s")
    time.sleep(seconds)
    t0 = time.perf_counter()
    path = session.stop_episode(finalize=False)
    closed = time.perf_counter() - t0
    report = session.episodes.finalize(path)
    verdict = time.perf_counter() - t0
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
            "rows_computed": computed, "verdict": (report or {}).get("verdict", "none")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 120.0, 600.0])
    parser.add_argument("--busy", type=int, default=1, help="processes spinning a core beside the recorder")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    print(f"machine: {machine()}; busy processes beside the recorder: {args.busy}")
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
    finally:
        for p in busy:
            p.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
