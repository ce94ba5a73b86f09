"""The recorder's CPU per tick at two commits, alternating in one run (``bench/record_rig.py`` of each).

    python bench/layout_ab.py [--base 2853944] [--rounds 3] [--seconds 20]

Checks out ``--base`` (default: the last commit before the package layout of #25) into a temporary
worktree and runs each commit's own ``bench/record_rig.py`` in turn, ``--rounds`` times each, A B A B ...,
so both see the same machine conditions; prints each run's app CPU per 50 ms tick and the medians' ratio
(this tree / base; this tree also without its drift watch, which the base did not have). CPU time, not wall time: a loaded machine changes it less than it changes wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
CPU_LINE = re.compile(r"CPU per 50 ms tick: app process ([0-9.]+) ms")


def cpu_per_tick_ms(tree: Path, seconds: float, extra: tuple[str, ...] = ()) -> float:
    """One run of ``tree``'s bench/record_rig.py (with ``extra`` arguments); the app process's CPU ms per tick it
    printed."""
    env = dict(os.environ, PYTHONPATH=str(tree), QT_QPA_PLATFORM="offscreen")
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, str(tree / "bench" / "record_rig.py"), "--seconds", str(seconds),
                                 "--out", out, *extra], cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    match = CPU_LINE.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"{tree}: record_rig failed (rc {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="2853944")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)
        try:
            # the base has no drift watch (issue 28 came after it): this tree runs both with and without it
            trees = (("this tree", HERE, ()), ("this tree, no drift watch", HERE, ("--no-drift-watch",)),
                     (f"base {args.base}", base, ()))
            runs: dict[str, list[float]] = {name: [] for name, _, _ in trees}
            for _ in range(args.rounds):
                for name, tree, extra in trees:
                    runs[name].append(cpu_per_tick_ms(tree, args.seconds, extra))
                    print(f"  {name}: {runs[name][-1]:.2f} ms per tick", flush=True)
        finally:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(base)], capture_output=True)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    for name, value in medians.items():
        print(f"{name}: median {value:.2f} ms per tick over {args.rounds} runs of {args.seconds:.0f} s")
    this, this_bare, base_value = medians.values()
    print(f"ratio this tree / base: {this / base_value:.2f}; without the drift watch: {this_bare / base_value:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
