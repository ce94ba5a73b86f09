"""Live drift alarms: mount slips and latency drift, computed on a thread of their own from data already received.

The intake hands every accepted sample to ``offer`` (a deque append: nothing else happens on the bus thread, and
nothing at all on the synchronizer's). The ``drift-watch`` thread wakes twice a second and:

- the ego camera mount: analyses up to ``VISUAL_RATE_HZ`` ego frames a second (``core.visual_rotation``, refined
  with the head tracker's translation), chains their rotations and watches the mount ``T_headtracker_cam``'s
  rotation against the head tracker (``core.mount_slip``);
- each wrist: the glove's IMU orientation ``wrist_quat`` against its wrist tracker (same detector);
- latency: every ``LATENCY_EVERY_S`` over the last ``LATENCY_WINDOW_S``, the ego camera's and each glove's lag
  against their tracker from angular speeds (``core.latency_drift``).

Each alarm goes to ``on_alarm(alarm)`` (the session logs it in ``/events`` and shows it in the state feed) and into
``summary()``, stored in the episode as the root attribute ``drift`` (docs/episode-format.md, "Drift"). Times are
stamps with the calibration's latency offsets removed, as the synchronizer uses them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

import cv2
import numpy as np

from calibration.model import Calibration
from capture_app.core.clock import now_ns
from capture_app.core.geometry import invert_transform, make_transform
from capture_app.core.latency_drift import estimate_lag
from capture_app.core.mount_slip import DEFAULT_THRESHOLD_DEG, SlipDetector
from capture_app.core.rotation_series import exp_rotvec, resample, rotvec
from capture_app.core.visual_rotation import prepare, relative_rotation, scaled_K

log = logging.getLogger(__name__)

VISUAL_RATE_HZ = 5.0
MAX_FRAME_GAP_S = 0.5  # ego frames further apart than this start a new chain
WRIST_RATE_HZ = 50.0
LATENCY_EVERY_S = 4.0
LATENCY_WINDOW_S = 10.0
LATENCY_THRESHOLD_MS = 8.0
LATENCY_AGREE_MS = 3.0
DRIFT_VERSION = 1
TRACKERS = {"head": "head_tracker", "left": "left_wrist_tracker", "right": "right_wrist_tracker"}
MOUNT_NAMES = {"head": "ego camera mount", "left": "left wrist tracker", "right": "right wrist tracker"}


class _Series:
    """Recent (t_s, value) samples of one stream in numpy arrays, at most ``seconds`` long (values of one shape)."""

    def __init__(self, seconds: float, shape: tuple, capacity: int = 8192):
        self.seconds = seconds
        self._t = np.zeros(capacity)
        self._v = np.zeros((capacity,) + shape)
        self._n = 0

    @property
    def last_t(self) -> float | None:
        return float(self._t[self._n - 1]) if self._n else None

    def add(self, t_s: float, value) -> None:
        if self._n and t_s <= self._t[self._n - 1]:
            return
        if self._n == len(self._t):  # full: keep the recent part (or grow when all of it is recent)
            keep = self._t[:self._n] >= t_s - self.seconds
            first = int(np.argmax(keep)) if keep.any() else self._n
            if first == 0:
                self._t = np.concatenate([self._t, np.zeros_like(self._t)])
                self._v = np.concatenate([self._v, np.zeros_like(self._v)])
            else:
                self._n -= first
                self._t[:self._n] = self._t[first:first + self._n]
                self._v[:self._n] = self._v[first:first + self._n]
        self._t[self._n] = t_s
        self._v[self._n] = value
        self._n += 1

    def arrays(self, since: float = -np.inf, until: float = np.inf):
        """(times, values) with since <= t <= until (views: copy before keeping them)."""
        t = self._t[:self._n]
        a, b = np.searchsorted(t, since, side="left"), np.searchsorted(t, until, side="right")
        return t[a:b], self._v[a:b]


class DriftWatch:
    """Watches the rig's mounts and latencies while it runs; see the module docstring."""

    def __init__(self, calibration: Calibration, on_alarm: Callable[[dict], None] | None = None,
                 threshold_deg: float = DEFAULT_THRESHOLD_DEG, visual_rate_hz: float = VISUAL_RATE_HZ):
        self.calibration = calibration
        self.on_alarm = on_alarm or (lambda alarm: None)
        self.threshold_deg = threshold_deg
        self.visual_period_s = 1.0 / visual_rate_hz
        self._offsets = {s: calibration.latency_offset_ns(s) for s in
                         ("ego_camera", "left_glove", "right_glove", *TRACKERS.values())}
        self._inbox: deque = deque(maxlen=50_000)
        self._trackers = {body: _Series(LATENCY_WINDOW_S + 5, (7,)) for body in TRACKERS}  # pose vectors
        self._imu = {hand: _Series(LATENCY_WINDOW_S + 5, (4,)) for hand in ("left", "right")}  # wxyz
        self._frames: deque = deque(maxlen=150)  # (t_s, grey, scale) waiting for the head tracker to cover them
        self._visual = _Series(LATENCY_WINDOW_S + 5, (2,), 1024)  # (t_s, [angular speed since the previous frame, its t_s])
        self._previous_frame: tuple | None = None
        self._last_frame_s = -np.inf
        self._ego_size = (calibration.ego_intrinsics.width, calibration.ego_intrinsics.height)
        self._ego_K = calibration.ego_intrinsics.K
        self._detectors: dict[str, SlipDetector] = {}
        self._wrist_done = {"left": -np.inf, "right": -np.inf}
        self._next_latency_s = 0.0
        self._lag_alarmed: dict[str, float] = {}
        self._lag_previous: dict[str, float] = {}
        self.alarms: list[dict] = []
        self.latency: dict[str, list[dict]] = {}
        self._lock = threading.Lock()  # alarms, latency and detectors, read by the state feed and the summary
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    # --- the bus thread's side: one append -------------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        """The streams whose samples it watches (``offer``)."""
        return tuple(self._offsets)

    def offer(self, message) -> None:
        """Take an accepted sample (called by the intake, outside its locks)."""
        if message.stream in self._offsets:
            self._inbox.append(message)

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "DriftWatch":
        self._thread = threading.Thread(target=self._run, name="drift-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.process()
            except Exception:  # a bug here must never stop the recorder
                self.errors += 1
                log.exception("drift watch: step failed")

    # --- the work ------------------------------------------------------------------------------------
    def process(self) -> None:
        """Take what arrived and update every estimate (the thread calls this; tests may call it directly)."""
        while self._inbox:
            self._take(self._inbox.popleft())
        self._ego_frames()
        for hand in ("left", "right"):
            self._wrist(hand)
        latest = max((s.last_t for s in self._trackers.values() if s.last_t is not None), default=None)
        if latest is not None and latest >= self._next_latency_s:
            self._next_latency_s = latest + LATENCY_EVERY_S
            self._latencies(latest)

    def _take(self, m) -> None:
        t_s = (m.t_capture_ns - self._offsets[m.stream]) / 1e9
        if m.stream.endswith("tracker"):
            body = {v: k for k, v in TRACKERS.items()}[m.stream]
            pose = m.arrays.get("pose")
            if m.tracking == "ok" and pose is not None and np.all(np.isfinite(pose)):
                self._trackers[body].add(t_s, pose)
        elif m.stream.endswith("glove"):
            q = m.arrays.get("wrist_quat")
            if q is not None and np.all(np.isfinite(q)) and np.linalg.norm(q) > 0.5:
                self._imu[m.stream.split("_")[0]].add(t_s, q)
        elif m.stream == "ego_camera" and "color" in m.arrays:
            if t_s - self._last_frame_s < self.visual_period_s * 0.95:
                return
            self._last_frame_s = t_s
            image = m.arrays["color"]
            if image.ndim == 1:  # JPEG
                image = cv2.imdecode(image, cv2.IMREAD_GRAYSCALE)
                if image is None:
                    return
            grey, scale = prepare(image)
            if (image.shape[1], image.shape[0]) != self._ego_size:  # intrinsics at the size the frames come in
                self._ego_size = (image.shape[1], image.shape[0])
                self._ego_K = self.calibration.ego_intrinsics.scaled(*self._ego_size).K
            self._frames.append((t_s, grey, scale))

    def _pose_at(self, body: str, t_s: np.ndarray) -> np.ndarray | None:
        t, poses = self._trackers[body].arrays(since=float(np.min(t_s)) - 0.1, until=float(np.max(t_s)) + 0.1)
        if len(t) < 2 or t[0] > np.min(t_s) or t[-1] < np.max(t_s):
            return None
        R = resample(t, poses[:, 3:7], t_s)
        p = np.stack([np.interp(t_s, t, poses[:, i]) for i in range(3)], axis=-1)
        return make_transform(R, p)

    def _detector(self, key: str, mount: np.ndarray) -> SlipDetector:
        if key not in self._detectors:
            self._detectors[key] = SlipDetector(mount, threshold_deg=self.threshold_deg, max_gap_s=MAX_FRAME_GAP_S)
        return self._detectors[key]

    def _ego_frames(self) -> None:
        X = self.calibration.T_headtracker_cam
        detector = self._detector("head", X[:3, :3])
        head = self._trackers["head"]
        while len(self._frames) > 3 and self._frames[1][0] - (self._previous_frame or self._frames[0])[0] < 0.4:
            self._frames.popleft()  # behind (a loaded machine): thin the backlog, pairs stay under MAX_FRAME_GAP_S
        while self._frames and head.last_t is not None and head.last_t >= self._frames[0][0]:
            t_s, grey, scale = self._frames.popleft()
            T_wt = self._pose_at("head", np.array([t_s]))
            if T_wt is None:
                self._previous_frame = None
                continue
            T_wc = T_wt[0] @ make_transform(detector.mount, X[:3, 3])
            previous, self._previous_frame = self._previous_frame, (t_s, grey, scale, T_wc, None)
            if previous is None or t_s - previous[0] > MAX_FRAME_GAP_S or previous[4] is None or previous[1].shape != grey.shape:
                self._previous_frame = (t_s, grey, scale, T_wc, np.eye(3))  # a new chain, in a new world
                detector.restart()
                continue
            p_t, p_grey, p_scale, p_T, p_chain = previous
            K = scaled_K(self._ego_K, scale)
            T_21 = invert_transform(T_wc) @ p_T
            seen = relative_rotation(p_grey, grey, K, prior_A=T_21[:3, :3].T, translation=T_21[:3, 3])
            if seen is None:  # a covered or blurred view: the chain restarts at the next frame
                self._previous_frame = (t_s, grey, scale, T_wc, None)
                continue
            chain = p_chain @ seen.A
            self._previous_frame = (t_s, grey, scale, T_wc, chain)
            self._visual.add(t_s, np.array([np.linalg.norm(rotvec(seen.A)) / (t_s - p_t), p_t]))
            for slip in detector.add(np.array([t_s]), T_wt[:, :3, :3], chain[None]):
                self._slip_alarm("head", slip, detector)

    def _wrist(self, hand: str) -> None:
        t, R_imu = self._imu[hand].arrays(since=self._wrist_done[hand] + 1e-9)
        tracker = self._trackers[hand]
        if len(t) < 2 or tracker.last_t is None:
            return
        grid = np.arange(t[0], min(t[-1], tracker.last_t), 1.0 / WRIST_RATE_HZ)
        if len(grid) == 0:
            return
        T_wt = self._pose_at(hand, grid)
        if T_wt is None:
            self._wrist_done[hand] = grid[-1]
            return
        R_obs = resample(t, R_imu, grid)
        key = hand
        if key not in self._detectors:  # the strap's rotation as found (the IMU shares the trackers' world)
            self._detector(key, T_wt[0, :3, :3].T @ R_obs[0])
        detector = self._detectors[key]
        for slip in detector.add(grid, T_wt[:, :3, :3], R_obs):
            self._slip_alarm(hand, slip, detector)
        self._wrist_done[hand] = grid[-1]

    def _latencies(self, latest: float) -> None:
        since = latest - LATENCY_WINDOW_S
        pairs = [("ego_camera", "head", None)] + [(f"{h}_glove", h, h) for h in ("left", "right")]
        for stream, body, hand in pairs:
            t_ref, poses = self._trackers[body].arrays(since=since - 1.0)
            if len(t_ref) < 50:
                continue
            if hand is None:
                t_v, values = self._visual.arrays(since=since)
                if len(t_v) < 20:
                    continue
                speeds, starts = values[:, 0], values[:, 1]
                instants = np.empty(len(t_v) + 1)  # consecutive intervals only: gaps get a NaN speed
                instants[1:], instants[0] = t_v, starts[0]
                speeds = np.where(np.isclose(starts[1:], t_v[:-1]), speeds[1:], np.nan)
                speeds = np.concatenate([[values[0, 0]], speeds])
            else:
                t_i, R_i = self._imu[hand].arrays(since=since)
                if len(t_i) < 50:
                    continue
                instants = np.arange(t_i[0], t_i[-1], 1.0 / 60.0)
                R = resample(t_i, R_i, instants)
                speeds = np.linalg.norm(rotvec(np.swapaxes(R[:-1], -1, -2) @ R[1:]), axis=-1) * 60.0
            estimate = estimate_lag(t_ref, poses[:, 3:7], instants, speeds)
            if estimate is None:
                continue
            with self._lock:
                self.latency.setdefault(stream, []).append({"t_ns": int(latest * 1e9), "lag_ms": round(float(estimate.lag_ms), 2)})
            alarmed = self._lag_alarmed.get(stream, 0.0)
            previous, self._lag_previous[stream] = self._lag_previous.get(stream), estimate.lag_ms
            # an alarm when two windows in a row agree (a window across the change mixes both latencies)
            if (abs(estimate.lag_ms - alarmed) > LATENCY_THRESHOLD_MS and previous is not None
                    and abs(previous - estimate.lag_ms) < LATENCY_AGREE_MS):
                self._lag_alarmed[stream] = estimate.lag_ms
                offset = self.calibration.latency_offsets_ms.get(stream, 0.0) + estimate.lag_ms
                self._alarm({"kind": "latency", "subject": stream, "lag_ms": round(float(estimate.lag_ms), 1),
                             "t_ns": int(latest * 1e9), "suggested_offset_ms": round(float(offset), 1),
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
                     "text": f"{what} slipped {slip.size_deg:.1f} deg: {fix}"})

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
            alarms = [{k: a[k] for k in ("kind", "subject", "text", "raised_ns")} for a in self.alarms[-10:]]
            lags = {s: v[-1]["lag_ms"] for s, v in self.latency.items() if v}
        return {"alarms": alarms, "mounts": self.mounts(), "lag_ms": lags}

    def catch_up(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until the thread has processed what arrived so far (a loaded machine lets it
        fall behind); False when it has not."""
        deadline = time.monotonic() + timeout_s
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            if not self._inbox and len(self._frames) <= 1:
                return True
            time.sleep(0.1)
        return not self._inbox

    def summary(self, since_ns: int = 0, catch_up_s: float = 0.0) -> dict:
        """What the episode stores (attribute ``drift``): alarms raised since ``since_ns``, mounts, lag history;
        with ``catch_up_s``, after waiting that long at most for the thread to process what arrived."""
        if catch_up_s > 0:
            self.catch_up(catch_up_s)
        with self._lock:
            alarms = [a for a in self.alarms if a["raised_ns"] >= since_ns]
            latency = {s: [e for e in v if e["t_ns"] >= since_ns - int(LATENCY_WINDOW_S * 1e9)]
                       for s, v in self.latency.items()}
        return {"version": DRIFT_VERSION, "threshold_deg": self.threshold_deg, "alarms": alarms,
                "mounts": self.mounts(), "latency": latency, "errors": self.errors}


def hand_of(body: str) -> str:
    return {"left": "left wrist", "right": "right wrist"}.get(body, body)
