"""Simulated devices: gloves, trackers, ego and top cameras, and a ground-truth stream.

Every device samples the one ``MotionModel`` at its own schedule. Per sample k:

    t_true    = t_start + k / rate + U(-jitter, +jitter)     the physical instant
    t_arrival = t_true + latency + Exp(arrival_jitter) (+ U(0, burst) in burst spells)
    t_device  = t_true * (1 + drift) + offset, quantised     the device's own clock
    published at t_capture + U(0, delivery_jitter)           bus delay, not in any stamp

and ``t_capture``, the stamp the driver publishes, depends on how the real device is stamped
(option ``stamp``): ``exact`` = t_true + latency (a perfect stamp); ``arrival`` = t_arrival
(stamped on arrival, as OpenVR polls, the ZED SDK and UVC cameras are; with ``dejitter`` the
driver maps the frame count onto the host clock, removing the arrival jitter); ``device_clock``
= the device time mapped onto the host clock from (t_device, t_arrival) pairs, as the RealSense
and MANUS drivers do (``capture_app.core.clock_mapping``). Cameras may also repeat a frame
(``duplicate_probability``: the previous image again, under a new stamp). The calibration's
latency offset for the stream (the sim default: the true latency) removes the constant part. Drop-outs skip a sequence number (a gap the
recorder counts); tracking-loss spells send the last pose with tracking "lost".
All random draws come from generators seeded by (seed, stream), so a seed gives the
same motion, jitter, drops and spells every run.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, fields

import numpy as np

from capture_app.core.clock import NS_PER_S, now_ns, sleep_until_ns, stamp_skew_ns
from capture_app.core.clock_mapping import ClockMapper
from calibration.board import BoardConfig
from capture_app.core.geometry import axis_angle_to_matrix, invert_transform, matrix_to_quat, transform_to_pose
from drivers.base import Driver, Sample
from drivers.sim.calibration import EGO_INTRINSICS_720P, TOP_INTRINSICS_480P
from drivers.sim.gestures import apply_script, parse_script
from drivers.sim.faults import apply_slip, check_fault_options, glove_hand, latency_ns, tracker_body
from drivers.sim.motion import MODEL_VERSION, MotionModel, true_rig_geometry
from drivers.sim.render import SceneRenderer


@dataclass(frozen=True)
class SimOptions:
    """Options of every simulated device (times in ms unless named _s; spells relative to driver start)."""

    seed: int = 0
    speed: float = 1.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    delivery_jitter_ms: float = 0.0
    drop_probability: float = 0.0
    drop_spells_s: tuple = ()
    tracking_loss_spells_s: tuple = ()
    tracking_loss_every_s: float = 0.0
    tracking_loss_duration_s: float = 0.5
    epoch_ns: int = 0                   # motion time = (host time - epoch): the session sets it at start
    device_clock_offset_s: float = 1000.0
    device_clock_drift_ppm: float = 0.0
    device_clock_resolution_ms: float = 0.0  # the device clock's tick (MANUS publishTime: 1 ms)
    stamp: str = "exact"                # exact | arrival | device_clock (see the module docstring)
    arrival_jitter_ms: float = 0.0      # mean of the exponential extra delay of each arrival
    burst_every_s: float = 0.0          # mean interval of arrival bursts (0 = none)
    burst_ms: float = 0.0               # extra delay of up to this much during a 0.2 s burst
    dejitter: bool = False              # stamp = arrival: map the frame count onto the host clock
    duplicate_probability: float = 0.0  # cameras: the previous frame repeated under a new stamp
    queue_frames: int = 15              # cameras: frames the device holds for a late reader; older ones are lost
    frame_loss_probability: float = 0.0  # realistic timing: frames the device loses (adds to drop_probability)
    width: int = 0
    height: int = 0
    head_motion: str = "work"           # "survey": circle the table looking at it (calibration)
    board_motion: str = "static"        # "handheld": the board is held and tilted above the table
    hand_motion: str = "work"           # "on_board": hands resting on the board's wrist marks
    board: bool = False                 # cameras: draw the calibration board on the table
    mount: str = ""                     # trackers: "board" = fixed on the board's tracker mount
    move_only_s: tuple = ()             # trackers: still except in these [start_s, end_s] after the epoch
    position_noise_mm: float = 0.0      # trackers: Gaussian measurement noise (std)
    rotation_noise_deg: float = 0.0
    gestures: tuple = ()                # gloves: scripted hand shapes [[t_s, name, duration_s], ...] (drivers/sim/gestures.py)
    mount_slip_deg: tuple = ()          # faults (drivers/sim/faults.py): trackers slip on their mount by this
    mount_slip_at_s: float = 0.0        # rotation vector (deg, body frame) at this motion time
    latency_change_ms: float = 0.0      # the latency grows by this much at latency_change_at_s (motion time)
    latency_change_at_s: float = 0.0
    worn_on: str = ""                   # trackers: head, left_wrist, right_wrist (default: from the stream)
    hand: str = ""                      # gloves: left, right (default: from the stream)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("spells_s") or f.name == "move_only_s":
                try:
                    spells = tuple((float(a), float(b)) for a, b in value)
                except (TypeError, ValueError):
                    raise ValueError(f"option {f.name} = {value!r}: expected a list of [start_s, end_s] pairs") from None
                if any(b <= a for a, b in spells):
                    raise ValueError(f"option {f.name} = {value!r}: each spell needs end_s > start_s")
                object.__setattr__(self, f.name, spells)
            elif f.name == "gestures":
                object.__setattr__(self, f.name, parse_script(value))
            elif f.name in ("head_motion", "board_motion", "hand_motion", "board", "mount", "stamp", "dejitter",
                            "mount_slip_deg", "worn_on", "hand", "latency_change_ms"):
                continue
            elif f.name not in ("seed", "epoch_ns", "device_clock_offset_s", "device_clock_drift_ppm") and (
                    not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"option {f.name} = {value!r}: expected a number >= 0")
        if not self.drop_probability + self.frame_loss_probability < 1.0:
            raise ValueError(f"option drop_probability = {self.drop_probability!r}: expected 0 <= p < 1")
        if not self.duplicate_probability + self.drop_probability + self.frame_loss_probability < 1.0:
            raise ValueError(f"option duplicate_probability = {self.duplicate_probability!r}: expected 0 <= p < 1")
        if self.speed <= 0:
            raise ValueError(f"option speed = {self.speed!r}: expected > 0")
        if self.head_motion not in ("work", "survey", "shake", "check"):
            raise ValueError(f"option head_motion = {self.head_motion!r}: expected work, survey, shake or check")
        check_fault_options(self)
        if self.mount not in ("", "board"):
            raise ValueError(f"option mount = {self.mount!r}: expected '' or 'board'")
        if self.stamp not in ("exact", "arrival", "device_clock"):
            raise ValueError(f"option stamp = {self.stamp!r}: expected exact, arrival or device_clock")


def _in_spells(t_s: float, spells) -> bool:
    return any(a <= t_s < b for a, b in spells)


class SimDevice(Driver):
    """Schedules samples and injects faults; subclasses say what a sample holds."""

    Options = SimOptions
    model_name = "simulated device"

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        o = self.options
        self.motion = MotionModel(o.seed, o.speed, o.head_motion, o.board_motion, o.hand_motion)
        self.geometry = true_rig_geometry()
        stream_key = zlib.crc32(config.stream.encode())
        self._rng = np.random.default_rng([o.seed, stream_key])
        self._loss_rng = np.random.default_rng([o.seed, stream_key, 1])
        self._random_spells: list[tuple[float, float]] = []
        self._period_ns = NS_PER_S / float(config.rate_hz)
        self._k = 0
        self._start_ns: int | None = None
        self._pending: deque = deque()
        self._burst_rng = np.random.default_rng([o.seed, stream_key, 2])
        self._bursts: list[tuple[float, float]] = []
        self._clock = ClockMapper()
        self._previous_content: Sample | None = None
        self._late_ns = 0  # how late the last sample was read, after its scheduled time
        self._scheduled_ns = 0
        self.device_info.update({"model": self.model_name, "simulated": True, "seed": o.seed,
                                 "timestamp_domain": f"sim:{o.stamp}" + (" (dejittered)" if o.dejitter else "")})

    def open(self) -> None:
        if self._start_ns is None:
            self._start_ns = now_ns()

    def _tracking_lost(self, t_s: float) -> bool:
        o = self.options
        if _in_spells(t_s, o.tracking_loss_spells_s):
            return True
        if o.tracking_loss_every_s > 0:
            while not self._random_spells or self._random_spells[-1][1] < t_s:
                previous_end = self._random_spells[-1][1] if self._random_spells else 0.0
                start = previous_end + self._loss_rng.exponential(o.tracking_loss_every_s)
                self._random_spells.append((start, start + o.tracking_loss_duration_s))
                self._random_spells = self._random_spells[-4:]
            return _in_spells(t_s, self._random_spells)
        return False

    def _burst_delay_ns(self, t_rel_s: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """Extra arrival delay inside random 0.2 s burst spells (a USB or scheduler hiccup)."""
        o = self.options
        if o.burst_every_s <= 0 or o.burst_ms <= 0:
            return np.zeros(len(t_rel_s), np.int64)
        while not self._bursts or self._bursts[-1][1] < t_rel_s[-1]:
            previous_end = self._bursts[-1][1] if self._bursts else 0.0
            start = previous_end + self._burst_rng.exponential(o.burst_every_s)
            self._bursts.append((start, start + 0.2))
            self._bursts = self._bursts[-8:]
        inside = np.array([_in_spells(t, self._bursts) for t in t_rel_s])
        return (inside * draws * o.burst_ms * 1e6).astype(np.int64)

    batch_seconds = 0.25  # samples are computed this far ahead in one vectorised call

    def _generate(self) -> None:
        """Compute the next batch of samples (vectorised: the GIL is held once per batch, not per sample)."""
        o = self.options
        n = max(1, int(round(self.batch_seconds * self.config.rate_hz))) if self.batch_seconds else 1
        ks = np.arange(self._k, self._k + n)
        draws = self._rng.uniform(0.0, 1.0, size=(n, 5))
        t_true_ns = (self._start_ns + ks * self._period_ns + (2 * draws[:, 0] - 1) * o.jitter_ms * 1e6).astype(np.int64)
        t_rel_s = (t_true_ns - self._start_ns) / NS_PER_S
        exponential = -np.log1p(-draws[:, 3] * 0.999999)  # Exp(1) from a uniform draw
        latency = latency_ns(o, (t_true_ns - o.epoch_ns) / NS_PER_S)
        t_arrival_ns = (t_true_ns + latency + (exponential * o.arrival_jitter_ms * 1e6).astype(np.int64)
                        + self._burst_delay_ns(t_rel_s, draws[:, 4]))
        # a late sample holds back the ones behind it; stamps still differ (a driver reads one at a time)
        previous = getattr(self, "_last_arrival_ns", None)
        if previous is not None:
            t_arrival_ns = np.maximum(t_arrival_ns, previous + 1000)
        t_arrival_ns = np.maximum.accumulate(t_arrival_ns - 1000 * np.arange(n)) + 1000 * np.arange(n)
        self._last_arrival_ns = int(t_arrival_ns[-1])
        t_capture_ns = t_true_ns + latency if o.stamp == "exact" else t_arrival_ns
        t_publish_ns = np.maximum(t_capture_ns, t_arrival_ns) + (draws[:, 1] * o.delivery_jitter_ms * 1e6).astype(np.int64)
        lose = o.drop_probability + o.frame_loss_probability
        dropped = [d < lose or _in_spells(t, o.drop_spells_s) for d, t in zip(draws[:, 2], t_rel_s)]
        lost = np.array([self._tracking_lost(t) for t in t_rel_s], dtype=bool)
        contents = self.make_samples((t_true_ns - o.epoch_ns) / NS_PER_S, lost)
        device_ns = (t_true_ns * (1.0 + o.device_clock_drift_ppm * 1e-6) + o.device_clock_offset_s * NS_PER_S).astype(np.int64)
        if o.device_clock_resolution_ms > 0:
            tick = int(o.device_clock_resolution_ms * 1e6)
            device_ns = device_ns // tick * tick
        duplicated = draws[:, 2] > 1.0 - o.duplicate_probability  # independent of drops (those use the low end)
        for i in range(n):
            content = contents[i]
            if duplicated[i] and self._previous_content is not None:
                content = Sample(0, dict(self._previous_content.arrays), meta=self._previous_content.meta)
            self._previous_content = contents[i]
            self._pending.append((int(ks[i]), int(t_capture_ns[i]), int(t_publish_ns[i]), int(device_ns[i]),
                                  dropped[i], bool(lost[i]), content))
        self._k += n

    def read(self) -> Sample | None:
        if not self._pending:
            self._generate()
        k, t_capture_ns, t_publish_ns, device_ns, dropped, lost, sample = self._pending[0]
        if not sleep_until_ns(t_publish_ns, self._stop):
            return None
        # how far this reader is behind its device's schedule (a sample held back by an earlier late one is not)
        self._scheduled_ns = max(self._scheduled_ns, t_publish_ns)
        self._late_ns = now_ns() - self._scheduled_ns
        self._pending.popleft()
        if dropped:
            return None  # lost on purpose: sequence number k is never sent
        t_capture_ns = self._driver_stamp(k, t_capture_ns, device_ns)
        sample.seq, sample.t_capture_ns, sample.t_device_ns = k, t_capture_ns + stamp_skew_ns(), device_ns
        if lost:
            sample.tracking = "lost"
        return sample

    def _driver_stamp(self, k: int, t_arrival_ns: int, device_ns: int) -> int:
        """What the real driver would publish as the capture time, given the arrival (or exact) stamp."""
        o = self.options
        if o.stamp == "device_clock":
            self._clock.add(device_ns, t_arrival_ns)
            self.device_info["clock"] = self._clock.describe()
            return self._clock.to_host(device_ns)
        if o.stamp == "arrival" and o.dejitter:  # the frame count is a clock: nominal period * k
            nominal = int(round(k * self._period_ns))
            self._clock.add(nominal, t_arrival_ns)
            return self._clock.to_host(nominal)
        return t_arrival_ns

    def make_samples(self, t_s: np.ndarray, tracking_lost: np.ndarray) -> list[Sample]:
        """Samples at true times ``t_s`` (host clock, seconds, shape (n,)); ``tracking_lost`` (n,) bool."""
        raise NotImplementedError


def _hold_last_valid(values: np.ndarray, lost: np.ndarray, last: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Replace values where ``lost`` by the last valid one before them (what a real device repeats)."""
    values = values.copy()
    for i in range(len(values)):
        if lost[i] and last is not None:
            values[i] = last
        elif not lost[i]:
            last = values[i]
    return values, last


class SimTracker(SimDevice):
    """A VIVE tracker: ``T_world_tracker`` as a pose vector; the last pose is repeated while lost."""

    model_name = "simulated VIVE Tracker 3.0"

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        g = self.geometry
        if self.options.mount == "board":  # on the calibration board's tracker mount
            board = BoardConfig()
            T_board_tracker = invert_transform(np.array(board.T_tracker_board))
            self._T_world_tracker = lambda t: self.motion.T_world_board(t, board.width_m, board.height_m) @ T_board_tracker
        elif tracker_body(config.stream, self.options) == "head":
            self._T_tracker_body = g["T_headtracker_cam"]
            T_cam_tracker = invert_transform(g["T_headtracker_cam"])
            self._T_world_tracker = lambda t: self.motion.T_world_cam(t) @ T_cam_tracker
        else:
            hand = tracker_body(config.stream, self.options).split("_")[0]
            self._T_tracker_body = g[f"T_wristtracker_wrist_{hand}"]
            T_wrist_tracker = invert_transform(self._T_tracker_body)
            self._T_world_tracker = lambda t: self.motion.T_world_wrist(t, hand) @ T_wrist_tracker
        self._last_pose: np.ndarray | None = None
        self._noise_rng = np.random.default_rng([self.options.seed, zlib.crc32(config.stream.encode()), 2])

    def make_samples(self, t_s, tracking_lost):
        if self.options.move_only_s:  # motion time advances only inside the spells (seconds after the epoch)
            t_s = sum(np.clip(np.asarray(t_s), a, b) - a for a, b in self.options.move_only_s)
        o = self.options
        T = np.array(self._T_world_tracker(t_s))
        if o.mount_slip_deg and o.mount != "board":
            T = apply_slip(T, np.asarray(t_s), o, self._T_tracker_body)
        if o.position_noise_mm or o.rotation_noise_deg:
            noise = self._noise_rng.normal(size=(len(t_s), 6))
            T[..., :3, 3] += noise[:, :3] * o.position_noise_mm / 1000.0
            T[..., :3, :3] = T[..., :3, :3] @ axis_angle_to_matrix(noise[:, 3:] * np.radians(o.rotation_noise_deg))
        poses, self._last_pose = _hold_last_valid(transform_to_pose(T), tracking_lost, self._last_pose)
        return [Sample(0, {"pose": pose}) for pose in poses]


class SimGlove(SimDevice):
    """A Manus glove: 25 keypoints in the wrist frame (float32, metres)."""

    model_name = "simulated Manus Quantum Metaglove"

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        self.hand = glove_hand(config.stream, self.options)
        self._last: np.ndarray | None = None

    def make_samples(self, t_s, tracking_lost):
        keypoints = self.motion.keypoints(t_s, self.hand)
        # the glove's own IMU orientation of the hand (here: the world rotation of the wrist frame)
        rotations = self.motion.T_world_wrist(t_s, self.hand)[..., :3, :3]
        if self.options.gestures:  # scripted command poses and look-alikes (drivers/sim/gestures.py)
            keypoints, rotations = apply_script(self.options.gestures, t_s, keypoints, rotations, self.hand,
                                                lambda t: self.motion.T_world_wrist(t, self.hand)[:3, :3])
        keypoints, self._last = _hold_last_valid(keypoints.astype(np.float32), tracking_lost, self._last)
        imu = matrix_to_quat(rotations)
        return [Sample(0, {"keypoints": k, "wrist_quat": q}) for k, q in zip(keypoints, imu)]


class _SimCamera(SimDevice):
    base_intrinsics = EGO_INTRINSICS_720P
    batch_seconds = 0.0  # one frame at a time: rendering is per frame anyway

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        w = self.options.width or self.base_intrinsics.width
        h = self.options.height or self.base_intrinsics.height
        self.intrinsics = self.base_intrinsics.scaled(w, h)
        self.renderer = SceneRenderer(self.intrinsics, self.motion, self.options.seed,
                                      board=BoardConfig() if self.options.board else None)
        k = self.intrinsics
        self.device_info.update({"width": w, "height": h, "intrinsics": [k.fx, k.fy, k.cx, k.cy]})

    def read(self) -> Sample | None:
        """As a real camera under load: the device holds the newest ``queue_frames`` frames (option) for a late
        reader and overwrites older ones, so a reader more than that behind its schedule loses frames (their
        sequence numbers are never sent: gaps, counted as losses) instead of publishing ever older frames ever
        later."""
        behind = int(self._late_ns // self._period_ns)
        if not self._pending and behind > self.options.queue_frames:
            self._k += behind - self.options.queue_frames
            self._late_ns = 0
        return super().read()


class SimEgoCamera(_SimCamera):
    """The head-mounted ZED Mini's left image (RGB), rendered through the true head calibration."""

    model_name = "simulated ZED Mini (left image)"

    def make_samples(self, t_s, tracking_lost):
        return [Sample(0, {"color": self.renderer.render(t, self.motion.T_world_cam(t))}) for t in t_s]


class SimTopCamera(_SimCamera):
    """The RealSense D435 over the table: RGB plus depth (uint16, millimetres)."""

    model_name = "simulated RealSense D435"
    base_intrinsics = TOP_INTRINSICS_480P

    def make_samples(self, t_s, tracking_lost):
        samples = []
        for t in t_s:
            color, depth = self.renderer.render(t, self.geometry["T_world_topcam"], with_depth=True)
            samples.append(Sample(0, {"color": color, "depth": depth}, meta={"depth_scale_m": 0.001}))
        return samples


class SimGroundTruth(SimDevice):
    """The truth at exact instants (no latency, jitter or loss): camera and wrist frames in the world, keypoints."""

    model_name = "simulated ground truth"

    def __init__(self, config, bus_endpoint, **kwargs):
        super().__init__(config, bus_endpoint, **kwargs)
        self.device_info.update({"model_version": MODEL_VERSION, "speed": self.options.speed})

    def make_samples(self, t_s, tracking_lost):
        m = self.motion
        columns = {
            "world_cam": transform_to_pose(m.T_world_cam(t_s)),
            "world_left_wrist": transform_to_pose(m.T_world_wrist(t_s, "left")),
            "world_right_wrist": transform_to_pose(m.T_world_wrist(t_s, "right")),
            "left_keypoints": m.keypoints(t_s, "left"),
            "right_keypoints": m.keypoints(t_s, "right"),
        }
        return [Sample(0, {name: values[i] for name, values in columns.items()}) for i in range(len(t_s))]
