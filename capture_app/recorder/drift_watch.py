"""Live drift alarms: mount slips and latency drift, computed on a thread of their own from data already received.

The intake hands every accepted sample to ``offer`` (a bounded per-stream deque append, ``drift_inbox.Inbox``:
nothing else happens on the bus thread, and nothing at all on the synchronizer's; ego frames beyond the analysed
rate are not even queued). The ``drift-watch`` thread wakes twice a second, turns what arrived into numpy arrays
in one pass per stream, and:

- the ego camera mount: analyses up to ``visual_rate_hz`` ego frames a second, small (``drift_visual.EgoChain``),
  chains their rotations and watches the mount ``T_headtracker_cam``'s rotation against the head tracker
  (``core.mount_slip``);
- each wrist: the glove's IMU orientation ``wrist_quat`` against its wrist tracker (same detector), both
  resampled at ``WRIST_RATE_HZ``;
- latency: every ``LATENCY_EVERY_S`` over the last ``LATENCY_WINDOW_S``, the ego camera's and each glove's lag
  against their tracker from angular speeds (``core.latency_drift``).

Its cost is bounded by data time, not by the streams' rates (docs/performance.md, "Drift watch CPU"); when its
thread still falls behind by its inboxes' bounds (20 s of poses, 12 s of frames), newer samples are shed,
counted per stream in ``summary()["shed"]`` and logged, never silently.

Each alarm goes to ``on_alarm(alarm)`` (the session logs it in ``/events`` and shows it in the state feed) and into
``summary()``, stored in the episode as the root attribute ``drift`` (docs/episode-format.md, "Drift"). Times are
stamps with the calibration's latency offsets removed, as the synchronizer uses them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

from calibration.model import Calibration
from capture_app.core.clock import now_ns
from capture_app.core.geometry import make_transform
from capture_app.core.latency_drift import estimate_lag
from capture_app.core.mount_slip import DEFAULT_THRESHOLD_DEG, SlipDetector
from capture_app.core.rotation_series import QuatTrack, exp_rotvec, rotvec
from capture_app.recorder.drift_inbox import Inbox, Series, sampled_at, stack
from capture_app.recorder.drift_visual import MAX_FRAME_GAP_S, EgoChain

log = logging.getLogger(__name__)

VISUAL_RATE_HZ = 5.0
# The wrists are compared at 10 Hz, not at the gloves' 120 Hz: the slip detector compares 1.5 s window means
# (15 instants each at 10 Hz; it needs 3) and sizes a slip from the track's increments around it, and the strap's
# rotation is constant between slips, so more instants only average IMU noise the means already average away
# (bench/rig_faults.py: a 3 deg slip sized within 0.01 deg at 10 Hz).
WRIST_RATE_HZ = 10.0
LATENCY_EVERY_S = 4.0
LATENCY_WINDOW_S = 10.0
# The gloves' speeds for the lag are taken over 1/30 s intervals (the motion they follow is far slower), and the
# lag scan steps 10 ms before its finer scan (bench/rig_faults.py: +20 ms estimated within 0.1 ms).
LATENCY_RATE_HZ = 30.0
LATENCY_SCAN_STEP_S = 0.01
LATENCY_THRESHOLD_MS = 8.0
LATENCY_AGREE_MS = 3.0
CADENCE_S = 0.5  # the thread wakes this often
# how far the thread may fall behind before its inboxes shed (a loaded machine stalls a normal thread for seconds)
INBOX_POSES = 5000  # per pose stream: 20 s at 250 Hz
INBOX_FRAMES = 60  # ego frames at the analysed rate: 12 s (JPEG ~100 KB each)
DRIFT_VERSION = 1  # additive keys since: "shed" (samples the inboxes refused), "analysed", "behind"
TRACKERS = {"head": "head_tracker", "left": "left_wrist_tracker", "right": "right_wrist_tracker"}
MOUNT_NAMES = {"head": "ego camera mount", "left": "left wrist tracker", "right": "right wrist tracker"}


class DriftWatch:
    """Watches the rig's mounts and latencies while it runs; see the module docstring."""

    def __init__(self, calibration: Calibration, on_alarm: Callable[[dict], None] | None = None,
                 threshold_deg: float = DEFAULT_THRESHOLD_DEG, visual_rate_hz: float = VISUAL_RATE_HZ,
                 latency_threshold_ms: float = LATENCY_THRESHOLD_MS):
        self.calibration = calibration
        self.on_alarm = on_alarm or (lambda alarm: None)
        self.threshold_deg = threshold_deg
        self.latency_threshold_ms = latency_threshold_ms
        self.visual_period_s = 1.0 / visual_rate_hz
        self._offsets = {s: calibration.latency_offset_ns(s) for s in
                         ("ego_camera", "left_glove", "right_glove", *TRACKERS.values())}
        self._inbox = Inbox({s: INBOX_FRAMES if s == "ego_camera" else INBOX_POSES for s in self._offsets},
                            {"ego_camera": int(self.visual_period_s * 0.95e9)})
        self._trackers = {body: Series(LATENCY_WINDOW_S + 5, (7,)) for body in TRACKERS}  # pose vectors
        self._imu = {hand: Series(LATENCY_WINDOW_S + 5, (4,)) for hand in ("left", "right")}  # wxyz
        self._ego = EgoChain(calibration.ego_intrinsics, LATENCY_WINDOW_S + 5)
        self._detectors: dict[str, SlipDetector] = {}
        self._wrist_done = {"left": -np.inf, "right": -np.inf}
        self._next_latency_s = 0.0
        self._lag_alarmed: dict[str, float] = {}
        self._lag_previous: dict[str, float] = {}
        self.analysed = {"wrist_instants": 0}
        self.alarms: list[dict] = []
        self.latency: dict[str, list[dict]] = {}
        self._lock = threading.Lock()  # alarms, latency and detectors, read by the state feed and the summary
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._passes = 0  # process() calls finished by the thread (catch_up waits on it)
        self._passes_changed = threading.Condition()
        self._shed_logged = 0
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.offer = self._inbox.offer  # the bus thread calls the inbox directly: one Python call less a sample

    # --- the bus thread's side: one append -------------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        """The streams whose samples it watches (``offer``)."""
        return tuple(self._offsets)

    def offer(self, message) -> None:
        """Take an accepted sample or SampleBlock (called by the intake, outside its locks): a bounded deque
        append."""
        self._inbox.offer(message)

    @property
    def shed(self) -> dict[str, int]:
        """Samples per stream refused because the thread had fallen behind by a whole inbox."""
        return {s: n for s, n in self._inbox.shed.items() if n}

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "DriftWatch":
        self._thread = threading.Thread(target=self._run, name="drift-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(CADENCE_S)
            self._wake.clear()
            try:
                self.process()
            except Exception:  # a bug here must never stop the recorder
                self.errors += 1
                log.exception("drift watch: step failed")
            with self._passes_changed:
                self._passes += 1
                self._passes_changed.notify_all()

    # --- the work ------------------------------------------------------------------------------------
    def process(self) -> None:
        """Take what arrived and update every estimate (the thread calls this; tests may call it directly)."""
        self._ingest()
        self._ego_frames()
        for hand in ("left", "right"):
            self._wrist(hand)
        latest = max((s.last_t for s in self._trackers.values() if s.last_t is not None), default=None)
        if latest is not None and latest >= self._next_latency_s:
            self._next_latency_s = latest + LATENCY_EVERY_S
            self._latencies(latest)
        shed = self._inbox.total_shed()
        if shed > self._shed_logged:
            log.warning("drift watch: fell behind, %d samples shed so far (%s)", shed, self.shed)
            self._shed_logged = shed

    def _ingest(self) -> None:
        """Every waiting sample into the series, one numpy batch per stream; the waiting ego frames decoded."""
        for body, stream in TRACKERS.items():
            t, poses = stack(self._inbox.take(stream), "pose", self._offsets[stream], 7, tracked=True)
            self._trackers[body].add_many(t, poses)
        for hand in ("left", "right"):
            stream = f"{hand}_glove"
            t, q = stack(self._inbox.take(stream), "wrist_quat", self._offsets[stream], 4)
            good = np.linalg.norm(q, axis=1) > 0.5
            self._imu[hand].add_many(t[good], q[good])
        self._ego.decode(self._inbox.take("ego_camera"), self._offsets["ego_camera"])

    def _detector(self, key: str, mount: np.ndarray) -> SlipDetector:
        if key not in self._detectors:
            self._detectors[key] = SlipDetector(mount, threshold_deg=self.threshold_deg, max_gap_s=MAX_FRAME_GAP_S)
        return self._detectors[key]

    def _ego_frames(self) -> None:
        """The camera mount: the waiting frames the head tracker covers, chained (``EgoChain``)."""
        X = self.calibration.T_headtracker_cam
        detector = self._detector("head", X[:3, :3])
        for slip in self._ego.advance(self._trackers["head"], detector, X):
            self._slip_alarm("head", slip, detector)

    def _wrist(self, hand: str) -> None:
        imu, tracker = self._imu[hand], self._trackers[hand]
        t, _ = imu.arrays(since=self._wrist_done[hand] + 1e-9)
        if len(t) == 0 or tracker.last_t is None:
            return
        step = 1.0 / WRIST_RATE_HZ
        grid = np.arange(max(t[0], self._wrist_done[hand] + step), min(imu.last_t, tracker.last_t), step)
        if len(grid) == 0:
            return
        self._wrist_done[hand] = grid[-1]
        R_ref, covered = sampled_at(tracker, grid)
        R_obs, covered_imu = sampled_at(imu, grid)
        ok = covered & covered_imu
        if not ok.any():
            return
        grid, R_ref, R_obs = grid[ok], R_ref[ok], R_obs[ok]
        if hand not in self._detectors:  # the strap's rotation as found (the IMU shares the trackers' world)
            self._detector(hand, R_ref[0].T @ R_obs[0])
        detector = self._detectors[hand]
        self.analysed["wrist_instants"] += len(grid)
        for slip in detector.add(grid, R_ref, R_obs):
            self._slip_alarm(hand, slip, detector)

    def _latencies(self, latest: float) -> None:
        since = latest - LATENCY_WINDOW_S
        pairs = [("ego_camera", "head", None)] + [(f"{h}_glove", h, h) for h in ("left", "right")]
        for stream, body, hand in pairs:
            t_ref, poses = self._trackers[body].arrays(since=since - 1.0)
            if len(t_ref) < 50:
                continue
            if hand is None:
                t_v, values = self._ego.speeds.arrays(since=since)
                if len(t_v) < 20:
                    continue
                speeds, starts = values[:, 0], values[:, 1]
                instants = np.empty(len(t_v) + 1)  # consecutive intervals only: gaps get a NaN speed
                instants[1:], instants[0] = t_v, starts[0]
                speeds = np.where(np.isclose(starts[1:], t_v[:-1]), speeds[1:], np.nan)
                speeds = np.concatenate([[values[0, 0]], speeds])
            else:
                t_i, q_i = self._imu[hand].arrays(since=since)
                if len(t_i) < 50:
                    continue
                instants = np.arange(t_i[0], t_i[-1], 1.0 / LATENCY_RATE_HZ)
                track = QuatTrack(t_i, q_i)
                speeds = track.angle_between(instants[:-1], instants[1:]) * LATENCY_RATE_HZ
            estimate = estimate_lag(t_ref, poses[:, 3:7], instants, speeds, scan_step_s=LATENCY_SCAN_STEP_S)
            if estimate is None:
                continue
            with self._lock:
                self.latency.setdefault(stream, []).append({"t_ns": int(latest * 1e9), "lag_ms": round(float(estimate.lag_ms), 2)})
            alarmed = self._lag_alarmed.get(stream, 0.0)
            previous, self._lag_previous[stream] = self._lag_previous.get(stream), estimate.lag_ms
            # an alarm when two windows in a row agree (a window across the change mixes both latencies)
            if (abs(estimate.lag_ms - alarmed) > self.latency_threshold_ms and previous is not None
                    and abs(previous - estimate.lag_ms) < LATENCY_AGREE_MS):
                self._lag_alarmed[stream] = estimate.lag_ms
                offset = self.calibration.latency_offsets_ms.get(stream, 0.0) + estimate.lag_ms
                self._alarm({"kind": "latency", "subject": stream, "lag_ms": round(float(estimate.lag_ms), 1),
                             "t_ns": int(latest * 1e9), "suggested_offset_ms": round(float(offset), 1),
                             "spoken": f"{stream.replace('_', ' ')} latency off by {abs(estimate.lag_ms):.0f} "
                                       f"milliseconds, recalibrate",
                             "text": f"{stream} stamps are {estimate.lag_ms:+.1f} ms off the trackers (from motion): "
                                     f"set latency_offsets_ms.{stream} to {offset:.1f} in the calibration "
                                     f"(`capture-app calibrate`), then `capture-app resync` this take"})

    def _slip_alarm(self, body: str, slip, detector: SlipDetector) -> None:
        what = MOUNT_NAMES[body]
        fix = ("re-seat the camera mount and recalibrate (`capture-app calibrate`); this take can be repaired: "
               "`capture-app drift EPISODE --write-calibration fixed.json` then `capture-app resync EPISODE "
               "--calibration fixed.json`") if body == "head" else (
            f"re-seat the {hand_of(body)} tracker on its strap and recalibrate the wrist (`capture-app calibrate`), "
            f"or redo the take")
        self._alarm({"kind": "mount_slip", "subject": f"{body}_mount" if body == "head" else f"{body}_wrist_mount",
                     "size_deg": round(slip.size_deg, 3), "rotvec_deg": [round(v, 4) for v in slip.rotvec_deg],
                     "t_ns": int(slip.at_s * 1e9), "detected_t_ns": int(slip.detected_s * 1e9),
                     "text": f"{what} slipped {slip.size_deg:.1f} deg: {fix}",
                     "spoken": f"{what} slipped {slip.size_deg:.0f} degrees, re-seat it"})

    def _alarm(self, alarm: dict) -> None:
        alarm["raised_ns"] = now_ns()
        with self._lock:
            self.alarms.append(alarm)
        log.warning("drift: %s", alarm["text"])
        try:
            self.on_alarm(alarm)
        except Exception:
            log.exception("drift watch: alarm handler failed")

    # --- what others read ----------------------------------------------------------------------------
    def mounts(self) -> dict:
        """Per watched mount: its net change since the calibration (deg), the slips seen, and for the camera the
        corrected ``T_headtracker_cam`` (4x4 nested lists)."""
        out = {}
        with self._lock:
            detectors = dict(self._detectors)
        for body, detector in detectors.items():
            change = np.eye(3)  # the slips' product (the track's slow wander between them is noise, not mount)
            for slip in list(detector.slips):
                change = change @ slip.delta
            net = np.degrees(rotvec(change))
            entry = {"net_rotvec_deg": [round(float(v), 4) for v in net], "net_deg": round(float(np.linalg.norm(net)), 3),
                     "slips": len(detector.slips), "unresolved": bool(np.linalg.norm(net) > self.threshold_deg)}
            if body == "head":
                X = np.array(self.calibration.T_headtracker_cam, dtype=float)
                corrected = X @ make_transform(exp_rotvec(np.radians(net)), np.zeros(3))
                entry["T_headtracker_cam_corrected"] = corrected.tolist()
            out[body] = entry
        return out

    def state(self) -> dict:
        """The state feed's ``drift`` field (docs/control.md): the last alarms, mounts, last lag per stream."""
        with self._lock:
            alarms = [{k: a[k] for k in ("kind", "subject", "text", "spoken", "raised_ns")} for a in self.alarms[-10:]]
            count = len(self.alarms)
            lags = {s: v[-1]["lag_ms"] for s, v in self.latency.items() if v}
        return {"alarms": alarms, "alarm_count": count, "mounts": self.mounts(), "lag_ms": lags,
                "shed": sum(self.shed.values())}

    def alarms_after(self, seen: int) -> tuple[list[dict], int]:
        """(the alarms raised after the first ``seen``, how many have been raised): for a cue speaker."""
        with self._lock:
            return list(self.alarms[seen:]), len(self.alarms)

    def catch_up(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until the thread has processed what arrived before this call (a loaded
        machine lets it fall behind); False when it has not (or its thread is not running)."""
        if self._thread is None or not self._thread.is_alive():
            return False
        with self._passes_changed:
            target = self._passes + 2  # the pass running now may have taken its inbox before this call
            self._wake.set()
            deadline = time.monotonic() + timeout_s
            while self._passes < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                if self._passes == target - 1:
                    self._wake.set()
                self._passes_changed.wait(min(left, 0.1))
        return True

    def summary(self, since_ns: int = 0, catch_up_s: float = 0.0) -> dict:
        """What the episode stores (attribute ``drift``): alarms raised since ``since_ns``, mounts, lag history,
        samples shed and what was analysed; with ``catch_up_s``, after waiting that long at most for the thread
        to process what arrived."""
        caught_up = self.catch_up(catch_up_s) if catch_up_s > 0 else None
        with self._lock:
            alarms = [a for a in self.alarms if a["raised_ns"] >= since_ns]
            latency = {s: [e for e in v if e["t_ns"] >= since_ns - int(LATENCY_WINDOW_S * 1e9)]
                       for s, v in self.latency.items()}
        shed = self.shed
        out = {"version": DRIFT_VERSION, "threshold_deg": self.threshold_deg, "alarms": alarms,
               "mounts": self.mounts(), "latency": latency, "errors": self.errors, "shed": shed,
               "analysed": {**self.analysed, **self._ego.analysed}}
        if shed:
            out["shed_text"] = (f"the drift watch fell behind and shed {sum(shed.values())} samples "
                                f"({', '.join(f'{s} {n}' for s, n in sorted(shed.items()))}): a slip or latency "
                                f"change in those stretches may have gone unseen")
        if caught_up is False:
            out["behind"] = True
        return out


def hand_of(body: str) -> str:
    return {"left": "left wrist", "right": "right wrist"}.get(body, body)
