"""Run inside tests.loopback_cluster.run_isolated (only loopback exists): an S3 server (moto) with the
episodes, a Ray head and a worker node started with `ray start`, `dataset validate` and `export lerobot`
over s3:// on that cluster (one worker SIGKILLed mid-export) and on the local pool. Prints one JSON line.

    python tests/ray_cluster_job.py EPISODES_DIR WORK_DIR RAY_TEMP_DIR   (a short path: Ray's sockets live there)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.loopback_cluster import free_port, listening_addresses, start_node, wait_for_nodes  # noqa: E402


def kill_one_worker_task(stop: threading.Event, killed: list) -> None:
    """SIGKILL the first Ray worker seen running a job task (process title ray::_call)."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if cmdline.startswith(b"ray::_call"):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.01)


_T0 = time.monotonic()


def phase(text: str) -> None:
    """When each step ended, on stderr (the test shows it when it fails; the run's time at a glance)."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {text}", file=sys.stderr, flush=True)


def main() -> int:
    episodes, work, ray_temp = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s",
                      AWS_DEFAULT_REGION="us-east-1")
    import boto3
    import fsspec
    boto3.client("s3").create_bucket(Bucket="data")
    fs = fsspec.filesystem("s3")
    for path in sorted(episodes.glob("*.h5")):
        fs.put_file(str(path), f"data/episodes/{path.name}")
    source = "s3://data/episodes"
    phase("S3 server up, episodes uploaded")

    head_port = free_port()
    start_node(ray_temp, 1, head_port, head=True)
    start_node(ray_temp, 1, head_port, head=False)
    address = f"127.0.0.1:{head_port}"
    wait_for_nodes(address, 2)
    phase("head and worker node up")

    import ray
    from capture_app.dataset.jobs import ray_runtime_env
    ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env=ray_runtime_env())
    where = ray.get([ray.remote(lambda: (__import__("capture_app").__file__, ray.get_runtime_context().get_node_id()))
                     .options(scheduling_strategy="SPREAD").remote() for _ in range(4)])
    ray.shutdown()
    phase("package shipped to both nodes")

    from capture_app.dataset.commands import export_lerobot, update_catalog
    from capture_app.dataset.lerobot_export import ExportOptions
    ray_rows, ray_validate = update_catalog([source], work / "ray-catalog.parquet", None, address, progress=False)
    phase("validate on Ray")
    local_rows, local_validate = update_catalog([source], work / "local-catalog.parquet", 2, None, progress=False)
    phase("validate on the local pool")
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_one_worker_task, args=(stop, killed), daemon=True)
    killer.start()
    _, ray_export = export_lerobot([source], work / "ray-ds", ExportOptions(), ray=address, retries=2, progress=False)
    stop.set()
    phase("export on Ray")
    _, local_export = export_lerobot([source], work / "local-ds", ExportOptions(), workers=2, progress=False)
    phase("export on the local pool")
    print(json.dumps({"where": where, "ray_validate": ray_validate, "local_validate": local_validate,
                      "ray_rows": ray_rows, "local_rows": local_rows, "ray_export": ray_export,
                      "local_export": local_export, "killed": killed, "listening": sorted(listening_addresses())},
                     default=str))
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
