"""What the field panel costs the recorder, how fast it shows a loss, and whether a page grows over a day.

On the real process layout: a recorder (`capture-app serve --sim`, full-size simulated cameras, drivers in
their own process), and for the panel phases two `capture-app panel` processes, each with a headless
Chromium page open on it (phone viewport, as tests/test_panel_browser.py).

1. Recorder CPU per tick and tick lateness (the `view` messages' lateness_ns), without panels, with two
   panels and their pages, and without again (the spread of the two runs without is the noise); the ratio
   with / without is printed.
2. Latency from a stream going lost to the page showing it: the recorder's driver process is stopped
   (SIGSTOP) until the state feed reports a stream lost, then continued; the page records when it first
   drew a lost row (window.panelProbe.lostSince, wall clock); latency = that - when this script's own
   subscriber got the first status saying lost. Repeated --cycles times: p50, p95, max.
3. A page open for --page-seconds (default 3600): its JS heap, DOM nodes and documents (Chromium's
   Performance.getMetrics) and the panel process's RSS at the start and the end.

    python bench/panel.py [--phase-seconds 60] [--cycles 20] [--page-seconds 3600]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402
import zmq  # noqa: E402

from bench._util import machine, pct, process_cpu_seconds, rss_mb  # noqa: E402
from capture_app.bus import control_protocol as protocol  # noqa: E402
from capture_app.monitor.client import RecorderClient  # noqa: E402
from capture_app.rig.child_process import child_env, cli_command  # noqa: E402
from tests.panel_browser import PanelProcess, fresh_profile, phone_browser  # noqa: E402


class StateWatch:
    """This script's own subscriber: tick lateness and count from `view`, when a stream first reads lost."""

    def __init__(self, state_endpoint: str):
        self.lateness_ms: list[float] = []
        self.ticks = 0
        self.lost_at: float | None = None   # wall clock (s) of the first status with a lost stream
        self.any_lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(state_endpoint,), daemon=True)
        self._thread.start()

    def _run(self, endpoint: str) -> None:
        socket = zmq.Context.instance().socket(zmq.SUB)
        socket.linger = 0
        for topic in (b"view", b"status"):
            socket.setsockopt(zmq.SUBSCRIBE, topic)
        socket.connect(endpoint)
        while not self._stop.is_set():
            if not socket.poll(100):
                continue
            topic, frame = socket.recv_multipart()
            payload = msgpack.unpackb(frame)  # numpy arrays stay packed: only scalars are read here
            if topic == b"view":
                self.ticks += 1
                self.lateness_ms.append(payload["lateness_ns"] / 1e6)
            else:
                lost = any(s["state"] in ("lost", "waiting") for n, s in payload["streams"].items() if n != "ground_truth")
                if lost and not self.any_lost:
                    self.lost_at = time.time()
                self.any_lost = lost
        socket.close(0)

    def reset(self) -> None:
        self.lateness_ms, self.ticks = [], 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def measure(recorder: subprocess.Popen, watch: StateWatch, seconds: float) -> dict:
    """Recorder process CPU (its own, and its driver processes') per tick, and tick lateness, over ``seconds``."""
    drivers = children(recorder.pid)
    cpu0, dcpu0 = process_cpu_seconds(recorder.pid), sum(process_cpu_seconds(p) for p in drivers)
    watch.reset()
    time.sleep(seconds)
    cpu, dcpu = process_cpu_seconds(recorder.pid) - cpu0, sum(process_cpu_seconds(p) for p in drivers) - dcpu0
    ticks, lateness = watch.ticks, np.array(watch.lateness_ms)
    return {"ticks": ticks, "cpu_ms_per_tick": 1000 * cpu / max(ticks, 1), "driver_cpu_ms_per_tick": 1000 * dcpu / max(ticks, 1),
            "lateness_p50": pct(lateness, 50), "lateness_p99": pct(lateness, 99), "lateness_max": float(lateness.max()) if len(lateness) else float("nan")}


def page_metrics(browser) -> dict:
    browser.execute_cdp_cmd("Performance.enable", {})
    metrics = {m["name"]: m["value"] for m in browser.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
    return {"js_heap_mb": metrics.get("JSHeapUsedSize", 0) / 2**20, "nodes": int(metrics.get("Nodes", 0)),
            "documents": int(metrics.get("Documents", 0)), "listeners": int(metrics.get("JSEventListeners", 0))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase-seconds", type=float, default=60.0, help="seconds per CPU phase (default 60)")
    parser.add_argument("--cycles", type=int, default=20, help="lost-stream cycles for the latency (default 20)")
    parser.add_argument("--page-seconds", type=float, default=3600.0, help="how long the page stays open (default 3600)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    work = Path(tempfile.mkdtemp(prefix="capture-bench-panel-"))
    control = f"ipc://{work / 'control'}"
    recorder = subprocess.Popen(cli_command("serve", "--sim", "--control", control, "--out", str(work / "episodes")),
                                stdout=open(work / "recorder.log", "wb"), stderr=subprocess.STDOUT, env=child_env())
    panels, browsers, profiles = [], [], []
    client = watch = None
    try:
        client = RecorderClient(control, name="bench", connect_timeout_s=120)
        watch = StateWatch(client.state_endpoint)
        time.sleep(5)  # warm up
        without = measure(recorder, watch, args.phase_seconds)
        print(f"without panels: {without}", flush=True)
        for i in range(2):
            panels.append(PanelProcess(control, work / f"panel-{i}.log"))
        for panel in panels:
            profiles.append(fresh_profile())
            browser = phone_browser(profiles[-1])
            browser.get(panel.url)
            browsers.append(browser)
        time.sleep(5)
        with_panels = measure(recorder, watch, args.phase_seconds)
        print(f"with two panels and their pages: {with_panels}", flush=True)
        probe = [b.execute_script("return window.panelProbe") for b in browsers]
        print(f"  pages received: {probe}")
        for panel in panels:  # detach, measure again: the spread of the two runs without is the noise
            panel.stop()
        time.sleep(3)
        without_again = measure(recorder, watch, args.phase_seconds)
        print(f"without panels again: {without_again}", flush=True)
        base = (without["cpu_ms_per_tick"] + without_again["cpu_ms_per_tick"]) / 2
        print(f"recorder CPU per tick with / without two panels: {with_panels['cpu_ms_per_tick'] / base:.3f} "
              f"(without: {without['cpu_ms_per_tick']:.2f} and {without_again['cpu_ms_per_tick']:.2f} ms; with: "
              f"{with_panels['cpu_ms_per_tick']:.2f} ms)")

        # 2. lost stream -> page
        panels = [PanelProcess(control, work / f"panel-{i}-b.log") for i in range(2)]
        for browser, panel in zip(browsers, panels):
            browser.get(panel.url)
        time.sleep(3)
        drivers = [p for p in children(recorder.pid) if b"driver" in open(f"/proc/{p}/cmdline", "rb").read()]
        assert drivers, "no driver process under the recorder (drivers_in must be 'process')"
        latencies, from_stop = [], []
        for cycle in range(args.cycles):
            watch.lost_at = None
            stopped = time.time()
            for pid in drivers:
                os.kill(pid, signal.SIGSTOP)
            deadline = time.monotonic() + 30
            shown = [None] * len(browsers)
            while time.monotonic() < deadline and (watch.lost_at is None or None in shown):
                for i, browser in enumerate(browsers):
                    if shown[i] is None:
                        shown[i] = browser.execute_script("return window.panelProbe.lostSince")
                time.sleep(0.02)
            for pid in drivers:
                os.kill(pid, signal.SIGCONT)
            if watch.lost_at is None or None in shown:
                print(f"  cycle {cycle}: not seen within 30 s (feed {watch.lost_at}, pages {shown})")
                continue
            for value in shown:
                latencies.append(value / 1000 - watch.lost_at)
                from_stop.append(value / 1000 - stopped)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (watch.any_lost or any(
                    b.execute_script("return window.panelProbe.lostSince") is not None for b in browsers)):
                time.sleep(0.1)
            time.sleep(1.0)
        lat = np.array(latencies) * 1000
        print(f"lost -> page (from the state feed's first lost status), {len(lat)} samples: p50 {pct(lat, 50):.0f} ms, "
              f"p95 {pct(lat, 95):.0f} ms, max {lat.max():.0f} ms")
        stop_lat = np.array(from_stop) * 1000
        print(f"  (from stopping the drivers, the recorder's own 0.5 s lost rule included: p50 {pct(stop_lat, 50):.0f} ms, "
              f"p95 {pct(stop_lat, 95):.0f} ms)")

        # 3. a page over time
        start = [page_metrics(b) for b in browsers]
        rss0 = [rss_mb(p.process.pid) for p in panels]
        print(f"page at start: {start}; panel RSS {[f'{r:.0f}' for r in rss0]} MB", flush=True)
        t_end = time.monotonic() + args.page_seconds
        while time.monotonic() < t_end:
            time.sleep(min(60.0, max(0.0, t_end - time.monotonic())))
            print(f"  t+{args.page_seconds - (t_end - time.monotonic()):.0f} s: {page_metrics(browsers[0])}, "
                  f"panel RSS {rss_mb(panels[0].process.pid):.0f} MB", flush=True)
        end = [page_metrics(b) for b in browsers]
        rss1 = [rss_mb(p.process.pid) for p in panels]
        print(f"page after {args.page_seconds:.0f} s: {end}; panel RSS {[f'{r:.0f}' for r in rss1]} MB")
        print(f"  pages received: {[b.execute_script('return window.panelProbe') for b in browsers]}")
        return 0
    finally:
        for browser in browsers:
            browser.quit()
        for panel in panels:
            panel.stop()
        if watch is not None:
            watch.close()
        if client is not None:
            client.close()
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(120)
        for directory in profiles + [work]:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
