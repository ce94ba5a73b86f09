"""A multi-node Ray cluster and an S3 server confined to loopback, for tests and benchmarks.

Ray's GCS and raylets listen on every interface (0.0.0.0, hard-wired in Ray) and its runtime-env agent
on the node's address, so ``--node-ip-address=127.0.0.1`` alone does not keep it off the machine's real
network. ``run_isolated`` therefore runs a script in new network and PID namespaces (``unshare``, root
or user namespaces needed): the only interface there is ``lo``, and every process the script started
(Ray nodes, the S3 server) ends with it. Inside, ``start_node`` runs ``ray start`` for a head or a
worker on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def can_isolate() -> bool:
    try:
        return subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_isolated(args: list[str], timeout_s: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python args...`` in fresh network + PID namespaces with only loopback up. Ray's token
    authentication with a token of this run's own (never ~/.ray's): every node and the driver get it."""
    import secrets
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0",
           **(env or {})}
    script = 'ip link set lo up && exec "$@"'
    # --kill-child: if this process's child (unshare) is killed, e.g. by a test's timeout, the namespace's
    # first process is SIGKILLed and with it everything in the namespace (no Ray node or S3 server left behind)
    command = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script, "sh",
               sys.executable, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                          env=dict(os.environ, **env), cwd="/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env() -> dict:
    """The nodes' environment: no PYTHONPATH (the package must come through the job's runtime_env)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def start_node(temp_dir: Path, cpus: int, head_port: int, head: bool) -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--disable-usage-stats"]
    if head:
        command = [ray, "start", "--head", f"--port={head_port}", "--include-dashboard=false",
                   f"--temp-dir={temp_dir}", *common]
    else:
        command = [ray, "start", f"--address=127.0.0.1:{head_port}", *common]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, env=node_env(), cwd="/")
    if run.returncode != 0:
        raise RuntimeError(f"ray start failed: {run.stdout[-2000:]}{run.stderr[-2000:]}")


def wait_for_nodes(address: str, count: int, timeout_s: float = 120) -> None:
    import ray
    deadline = time.monotonic() + timeout_s
    while True:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        alive = [n for n in ray.nodes() if n["Alive"]]
        ray.shutdown()
        if len(alive) >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(alive)} of {count} Ray nodes came up")
        time.sleep(1)


def listening_addresses() -> set[str]:
    """Every local address a TCP socket listens on in this namespace (from /proc/net/tcp*)."""
    found = set()
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN; addresses as 32-bit words in host (little-endian) order
                raw = bytes.fromhex(fields[1].split(":")[0])
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found


def only_loopback(addresses: set[str]) -> bool:
    """Whether every address is loopback (or unspecified, which in a namespace with only lo is loopback)."""
    for text in addresses:
        address = ipaddress.ip_address(text)
        mapped = getattr(address, "ipv4_mapped", None)
        address = mapped or address
        if not (address.is_loopback or address.is_unspecified):
            return False
    return True
