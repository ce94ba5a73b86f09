"""Episodes per minute for `dataset validate` and the LeRobot export, on a local process pool and on a
local Ray instance, over the same episodes in one process (figures in docs/performance.md).

    python bench/dataset_jobs.py [--episodes 20] [--distinct 2] [--seconds 10] [--workers 2] [--repeats 2]
    python bench/dataset_jobs.py --cluster [...]   # local pool vs a `ray start` cluster of 1 and 2 nodes

``--cluster`` runs the whole benchmark again inside private network and PID namespaces (only loopback;
tests/loopback_cluster.py says why) and compares the local pool with Ray clusters started with
``ray start``: a head node alone, then with a worker node added (``--node-cpus`` CPUs each).

``--distinct`` episodes of ``--seconds`` are recorded from the full simulated rig (720p ego camera,
640x480 top camera) and copied to make ``--episodes`` files (copies cost the jobs exactly what the
originals do). The merge step of the export is timed on its own: it is the part that does not scale out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine  # noqa: E402
from capture_app.rig.config import load_config  # noqa: E402
from capture_app.dataset.catalog import catalog_row  # noqa: E402
from capture_app.dataset.commands import export_item  # noqa: E402
from capture_app.dataset.jobs import run_jobs  # noqa: E402
from capture_app.dataset.lerobot_export import ExportOptions, merge_shards  # noqa: E402
from capture_app.dataset.sources import list_episodes  # noqa: E402
from capture_app.recorder.session import CaptureSession  # noqa: E402
from capture_app.recorder.takes import Takes  # noqa: E402


def record_episodes(folder: Path, distinct: int, seconds: float, total: int) -> list[str]:
    config = load_config()
    with CaptureSession(config) as session:
        if session.wait_for_streams(30):
            raise SystemExit("the simulated rig did not start")
        takes = Takes(session, folder)
        for k in range(distinct):
            takes.start(task="pour", instruction="pour the juice into the cup", operator="bench")
            time.sleep(seconds / 2)
            takes.mark_start("pour", session.latest_tick.t_eval_ns, "use right hand to pour the juice", "right")
            time.sleep(seconds / 2)
            takes.stop()
        takes.wait_finalized()
    originals = list_episodes([str(folder)])
    for k in range(total - len(originals)):
        shutil.copy(originals[k % len(originals)], folder / f"copy-{k:04d}.h5")
    return list_episodes([str(folder)])


def load_average() -> str:
    """The 1, 5 and 15 min load averages (runnable processes; this machine has os.cpu_count() cores)."""
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's ended children (the local pool's workers, once it is shut
    down): the cores an export really used, whatever else the machine ran meanwhile."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--distinct", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cluster", action="store_true", help="Ray clusters of 1 and 2 nodes instead of Ray local")
    parser.add_argument("--node-cpus", type=int, default=1, help="with --cluster: CPUs per Ray node (default 1)")
    args = parser.parse_args()
    if args.cluster and os.environ.get("CAPTURE_APP_ISOLATED") != "1":
        from tests.loopback_cluster import run_isolated
        run = run_isolated([str(Path(__file__).resolve()), *sys.argv[1:]], timeout_s=7200,
                           env={"CAPTURE_APP_ISOLATED": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        print(run.stdout, end="")
        print(run.stderr[-3000:] if run.returncode else "", end="", file=sys.stderr)
        return run.returncode
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        folder = Path(tmp) / "episodes"
        folder.mkdir()
        episodes = record_episodes(folder, args.distinct, args.seconds, args.episodes)
        print(f"{len(episodes)} episodes of {args.seconds:.0f} s ({args.distinct} recorded, the rest copies)")
        source_bytes = sum(os.path.getsize(e) for e in episodes)
        rows, spread, loads = {}, {}, {}
        backends = [("local pool", None), ("Ray local", "local")]
        if args.cluster:
            backends = [("local pool", None), ("Ray 1 node", "node1"), ("Ray 2 nodes", "node2")]
        ray_temp = tempfile.mkdtemp(prefix="bray-", dir="/tmp")
        head_port = None
        for backend, ray in backends:
            if ray in ("node1", "node2"):
                from tests.loopback_cluster import free_port, start_node, wait_for_nodes
                head_port = head_port or free_port()
                start_node(Path(ray_temp), args.node_cpus, head_port, head=(ray == "node1"))
                ray = f"127.0.0.1:{head_port}"
                wait_for_nodes(ray, 1 if backend == "Ray 1 node" else 2)
            load_before = load_average()
            for job in ("validate", "export"):
                times, cpu = [], []
                for repeat in range(args.repeats):
                    staging = Path(tmp) / f"staging-{backend}-{repeat}".replace(" ", "")
                    if job == "validate":
                        work = lambda: run_jobs(catalog_row, episodes, workers=args.workers, ray_address=ray,  # noqa: E731
                                                progress=False)
                    else:
                        work = lambda: run_jobs(export_item, list(enumerate(episodes)), workers=args.workers,  # noqa: E731
                                                ray_address=ray, progress=False,
                                                kwargs={"staging": str(staging), "options": ExportOptions()})
                    results: list = []
                    cpu_before = children_cpu_s()
                    times.append(timed(lambda: results.extend(work())))
                    cpu.append(children_cpu_s() - cpu_before)
                    failed = [r for r in results if not r.ok]
                    if failed:
                        raise SystemExit(f"{job} failed: {failed[0].error}")
                    if job == "export" and repeat == 0:
                        out = Path(tmp) / f"ds-{backend}".replace(" ", "")
                        merge_s = timed(lambda: merge_shards([r.value for r in results], out))
                        rows[(backend, "merge")] = merge_s
                    shutil.rmtree(staging, ignore_errors=True)
                rows[(backend, job)] = statistics.median(times)
                spread[(backend, job)] = (min(times), max(times))
                if ray is None:
                    rows[(backend, f"{job} cpu")] = statistics.median(cpu)
            loads[backend] = (load_before, load_average())
        print(f"\n{'job':<10}{'backend':<13}{'median s':>10}{'episodes/min':>14}  (min-max s of {args.repeats} runs)")
        for (backend, job), seconds in rows.items():
            if job not in ("merge", "validate cpu", "export cpu"):
                low, high = spread[(backend, job)]
                print(f"{job:<10}{backend:<13}{seconds:>10.1f}{len(episodes) / seconds * 60:>14.1f}  "
                      f"({low:.1f}-{high:.1f})")
        for backend, _ in backends:
            print(f"merge     {backend:<13}{rows[(backend, 'merge')]:>10.2f}  ({rows[(backend, 'merge')] / len(episodes) * 1000:.0f} ms per episode)")
        for backend, _ in backends[1:]:
            ratio = rows[(backend, "export")] / rows[("local pool", "export")]
            print(f"{backend} / local pool, export: {ratio:.2f}x the time")
        if args.cluster:
            print(f"(Ray nodes: {args.node_cpus} CPU each, started with `ray start` on loopback; local pool: "
                  f"{args.workers} workers)")
        for job in ("validate", "export"):
            cpu_s = rows[("local pool", f"{job} cpu")]
            print(f"{job}: the local pool's workers used {cpu_s:.1f} CPU s (median), {cpu_s / len(episodes):.2f} "
                  f"core-seconds per episode, {cpu_s / (args.seconds * len(episodes)):.3f} per second recorded")
        exported = Path(tmp) / "ds-localpool"
        export_bytes = sum(p.stat().st_size for p in exported.rglob("*") if p.is_file())
        per_hour = 3600 / (args.seconds * len(episodes))
        print(f"storage: episodes {source_bytes / len(episodes) / 1e6:.1f} MB each ({source_bytes * per_hour / 1e9:.2f} "
              f"GB per recorded hour), LeRobot export {export_bytes / len(episodes) / 1e6:.2f} MB per episode "
              f"({export_bytes * per_hour / 1e9:.2f} GB per hour)")
        for backend, (before, after) in loads.items():
            print(f"load average (1/5/15 min) {backend}: {before} before, {after} after "
                  f"({os.cpu_count()} cores)")
        shutil.rmtree(ray_temp, ignore_errors=True)
        video_s = args.seconds * len(episodes)
        print(f"export speed: {video_s / rows[('local pool', 'export')]:.1f}x real time on {args.workers} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
