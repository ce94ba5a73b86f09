"""A flood of valid messages on one stream while the full simulated rig records: what the others lose.

The flooding publisher owns ``left_wrist_tracker`` (an ipc endpoint in the rig config), so its
messages pass every check and reach the writer; the writer's per-stream share must make the
flooding stream lose its own samples only.

    python bench/flood.py [--messages 100000] [--seconds 8]
    python bench/flood.py --load 5 [--seconds 10]    # sustained: the bus at 5x the rig's normal message load

``--load X`` replaces the burst by a sustained flood: version-1 messages (one sample each, the costliest
kind) at (X - 1) times the rig's normal sample rate, on top of the rig, for ``--seconds``; it prints what
the live path showed meanwhile (each stream's receive latency p95 and the age of its newest sample, sampled
every 0.25 s), what was shed and counted, and the writer's queue against its budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import machine  # noqa: E402
from capture_app.episode.file import open_episode
from capture_app.rig.config import DriverConfig, load_config, with_changes  # noqa: E402
from capture_app.recorder.session import CaptureSession  # noqa: E402


def frames(seq: int, t_ns: int) -> list:
    header = {"v": 1, "stream": "left_wrist_tracker", "seq": seq, "t_capture_ns": t_ns, "t_device_ns": None,
              "t_publish_ns": time.monotonic_ns(), "tracking": "ok", "sender": 4242, "meta": {},
              "buffers": [["pose", "<f8", [7], "raw"]]}
    return [b"left_wrist_tracker", msgpack.packb(header), np.array([0.1, 1.5, 0, 1, 0, 0, 0.0]).tobytes()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--load", type=float, default=None, help="sustained flood: X times the normal message load")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="flood-"))
    endpoint = f"ipc://{out}/wrist.sock"
    base = load_config()
    drivers = [d for d in base.drivers if d.stream != "left_wrist_tracker"]
    drivers.append(DriverConfig("left_wrist_tracker", "sim_tracker", "left_wrist_tracker", 250, endpoint=endpoint))
    context = zmq.Context()
    owner = context.socket(zmq.PUB)
    owner.setsockopt(zmq.SNDHWM, 0)  # the flood leaves whole; the receiver's high-water mark decides
    owner.bind(endpoint)
    with CaptureSession(with_changes(base, drivers=tuple(drivers))) as session:
        session.wait_for_streams(5)
        session.start_episode(out, name="flood")
        time.sleep(1.0)
        t = time.monotonic_ns()
        start = time.monotonic()
        live = []
        if args.load is None:
            for k in range(args.messages):
                owner.send_multipart(frames(k, t + k * 1000))
        else:
            normal = sum(d.rate_hz * len(d.streams) for d in base.drivers)
            rate = max(250.0, (args.load - 1) * normal)
            args.messages, k, next_look = 0, 0, start
            while time.monotonic() - start < args.seconds:
                due = int((time.monotonic() - start) * rate)
                while k < due:
                    owner.send_multipart(frames(k, time.monotonic_ns()))
                    k += 1
                if time.monotonic() >= next_look:
                    live.append((time.monotonic() - start, session.stream_status(), session.writer.stats()))
                    next_look += 0.25
                time.sleep(0.002)
            args.messages = k
        sent_s = time.monotonic() - start
        time.sleep(max(0.0, args.seconds - sent_s))
        path = session.stop_episode()
    owner.close()
    context.term()
    print(f"machine: {machine()}")
    print(f"{args.messages} messages sent in {sent_s:.2f} s on left_wrist_tracker; episode {path}")
    if live:
        print(f"live, sampled every 0.25 s over the flood ({args.messages / sent_s:.0f} flood messages/s):")
        for stream in live[0][1]:
            latency = [status[stream].latency_p95_ms or 0.0 for _, status, _ in live]
            age = [status[stream].age_s or 0.0 for _, status, _ in live]
            print(f"  {stream:<22} latency p95 median {np.median(latency):7.1f} ms, max {max(latency):7.1f} ms; "
                  f"newest sample age median {np.median(age):.2f} s, max {max(age):.2f} s")
        backlog = [stats.backlog_bytes / 1e6 for _, _, stats in live]
        print(f"  writer queue: max {max(backlog):.1f} MB")
    with open_episode(path) as f:
        print(f"{'stream':<22}{'stored':>8}{'seq gaps':>10}{'overflow':>10}  rejected")
        for name, group in f["streams"].items():
            print(f"{name:<22}{len(group['seq']):>8}{int(group.attrs['seq_gaps']):>10}"
                  f"{int(group.attrs['writer_overflow']):>10}  {json.loads(group.attrs.get('rejected', '{}'))}")


if __name__ == "__main__":
    main()
