"""The synchronizer: what every sensor saw at each tick, in the frames of the action space.

Ticks at ``t0 + k * period`` (host monotonic clock). Tick k is evaluated at
``t_eval = t_tick - delay``: the delay lets late samples arrive, so that poses and
keypoints can be interpolated between the samples bracketing t_eval (capture times
minus each stream's calibrated latency offset) and images take the nearest frame.

Determinism: a sample is visible to tick k exactly when its receive stamp is <= t_tick.
Receive stamps are taken under the same lock that the tick holds while it reads the
buffers, so running ``compute_tick`` later over the recorded raw streams (offline
resync) gives the same rows as live.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from calibration.model import Calibration
from capture_app.core.action_space import ACTION_DIM, ACTION_NAMES, fingertip_state, wrist_state
from capture_app.bus.message import Message, SampleBlock
from capture_app.core.clock import NS_PER_S, now_ns, sleep_until_ns
from capture_app.rig.config import SyncConfig
from capture_app.episode.format import TRACKING_CODES
from capture_app.core.geometry import invert_transform, pose_to_transform, transform_to_pose
from capture_app.core.hand import NUM_KEYPOINTS
from capture_app.core.interpolation import STATUS_NAMES, Evaluation, Limits, evaluate, nearest
from capture_app.rig.priority import make_this_thread_realtime
from capture_app.core.streams import CAMERA_STREAMS, STREAM_KINDS, SYNCED_STREAMS

log = logging.getLogger(__name__)

SYNC_VERSION = 1
BUFFER_SECONDS = 4.0
VALIDITY_NAMES = ("left_wrist", "right_wrist", "left_fingers", "right_fingers")
_VALUE_SHAPE = {"pose": (7,), "keypoints": (NUM_KEYPOINTS, 3)}


class StreamBuffer:
    """Recent samples of one stream, sorted by corrected capture time. Not thread-safe by itself."""

    def __init__(self, kind: str, capacity: int):
        self.kind = kind
        self.capacity = max(16, int(capacity))
        size = 2 * self.capacity
        self.times = np.zeros(size, np.int64)      # capture time minus latency offset
        self.receive = np.zeros(size, np.int64)
        self.seq = np.zeros(size, np.int64)
        self.tracking = np.zeros(size, np.uint8)
        shape = _VALUE_SHAPE.get(kind)
        self.values = np.zeros((size, *shape)) if shape else None
        self.frames: dict[int, Message] = {}      # images: seq -> message, the newest few
        self.start = 0
        self.end = 0
        self.rejected = 0
        self.sender: int | None = None

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, t_ns: int, receive_ns: int, seq: int, tracking: int, value: np.ndarray | None,
               frame: Message | None = None, sender: int = 0) -> bool:
        """Add a sample; False (and counted) when its time, or its seq from the same sender, does not
        increase (the writer rejects the same samples)."""
        same_sender = sender == self.sender
        self.sender = sender
        if self.end > self.start and (t_ns <= self.times[self.end - 1] or
                                      (same_sender and seq <= self.seq[self.end - 1])):
            self.rejected += 1
            return False
        if self.end == len(self.times):  # compact: keep the newest `capacity` samples at the front
            keep = slice(self.end - self.capacity, self.end)
            for array in (self.times, self.receive, self.seq, self.tracking, self.values):
                if array is not None:
                    array[: self.capacity] = array[keep]
            self.start, self.end = max(0, self.start - (self.end - self.capacity)), self.capacity
        i = self.end
        self.times[i], self.receive[i], self.seq[i], self.tracking[i] = t_ns, receive_ns, seq, tracking
        if self.values is not None:
            self.values[i] = value
        if frame is not None:
            self.frames[seq] = frame
            while len(self.frames) > 8:
                self.frames.pop(next(iter(self.frames)))
        self.end += 1
        if self.end - self.start > self.capacity:
            self.start = self.end - self.capacity
        return True

    def append_many(self, times: np.ndarray, receive_ns: int, seq: np.ndarray, tracking: np.ndarray,
                    values: np.ndarray | None, sender: int) -> None:
        """Add one sender's consecutive samples (one receive stamp) as ``append`` one by one would, in array
        copies when each would be accepted; sample by sample otherwise (the refusals counted there)."""
        n = len(times)
        same_sender = sender == self.sender
        if (n > self.capacity or (self.end > self.start and (times[0] <= self.times[self.end - 1] or
                                                              (same_sender and seq[0] <= self.seq[self.end - 1])))
                or (n > 1 and (bool((times[1:] <= times[:-1]).any()) or bool((seq[1:] <= seq[:-1]).any())))):
            for i in range(n):
                self.append(int(times[i]), receive_ns, int(seq[i]), int(tracking[i]),
                            None if values is None else values[i], sender=sender)
            return
        self.sender = sender
        if self.end + n > len(self.times):  # compact: keep the newest `capacity` samples at the front
            keep = slice(self.end - self.capacity, self.end)
            for array in (self.times, self.receive, self.seq, self.tracking, self.values):
                if array is not None:
                    array[: self.capacity] = array[keep]
            self.start, self.end = max(0, self.start - (self.end - self.capacity)), self.capacity
        new = slice(self.end, self.end + n)
        self.times[new], self.receive[new], self.seq[new], self.tracking[new] = times, receive_ns, seq, tracking
        if self.values is not None:
            self.values[new] = values
        self.end += n
        self.start = max(self.start, self.end - self.capacity)

    def extend(self, times: np.ndarray, receive: np.ndarray, seq: np.ndarray, tracking: np.ndarray,
               values: np.ndarray | None, senders: np.ndarray) -> None:
        """Add many samples in order, as ``append`` one by one would (same acceptance, same result), in one
        array copy when they fit and every one would be accepted (a recorded stream: the writer refused the
        rest); sample by sample otherwise. Images keep no frames this way (offline tables need none)."""
        n = len(times)
        in_order = (self.end == self.start == 0 and n <= self.capacity and
                    bool(np.all(np.diff(times) > 0)) and
                    bool(np.all((np.diff(seq) > 0) | (np.diff(senders) != 0))))
        if not in_order:
            for i in range(n):
                self.append(int(times[i]), int(receive[i]), int(seq[i]), int(tracking[i]),
                            None if values is None else values[i], sender=int(senders[i]))
            return
        self.times[:n], self.receive[:n], self.seq[:n], self.tracking[:n] = times, receive, seq, tracking
        if self.values is not None:
            self.values[:n] = values
        self.end = n
        if n:
            self.sender = int(senders[-1])

    def visible(self, receive_cutoff_ns: int, receive_floor_ns: int = 0) -> slice:
        """The slice of samples received in [floor, cutoff]."""
        received = self.receive[self.start:self.end]
        first = int(np.searchsorted(received, receive_floor_ns, side="left"))
        cut = int(np.searchsorted(received, receive_cutoff_ns, side="right"))
        return slice(self.start + first, self.start + max(first, cut))


@dataclass
class SyncedTick:
    """One synchronizer tick. Poses are 4x4 ``T_a_b`` (None when invalid); see docs/episode-format.md."""

    t_tick_ns: int
    t_eval_ns: int
    t_computed_ns: int
    evaluations: dict[str, Evaluation]
    stream_seq: dict[str, int]
    T_world_headtracker: np.ndarray | None
    T_world_cam: np.ndarray | None
    T_world_wrist: dict[str, np.ndarray | None]
    T_cam_wrist: dict[str, np.ndarray | None]
    keypoints: dict[str, np.ndarray | None]
    action: np.ndarray
    action_valid: np.ndarray
    frames: dict[str, Message | None] = field(default_factory=dict)
    # for cameras sending H.264: the recent frames up to the chosen one, in seq order (a frame decodes
    # only after those before it; the monitor feed forwards the ones it has not sent yet)
    video_packets: dict[str, list[Message]] = field(default_factory=dict)

    @property
    def lateness_ns(self) -> int:
        return self.t_computed_ns - self.t_tick_ns

    def row(self) -> dict[str, np.ndarray]:
        """The fixed-shape row written to /synced (NaN where invalid)."""
        transforms = {"T_world_cam": self.T_world_cam, "T_world_headtracker": self.T_world_headtracker,
                      "T_world_left_wrist": self.T_world_wrist["left"], "T_world_right_wrist": self.T_world_wrist["right"]}
        poses = {name: np.full(7, np.nan) for name in transforms}
        valid = [name for name, T in transforms.items() if T is not None]
        if valid:  # one vectorised conversion: four small ones cost ~0.3 ms each on the writer's thread
            for name, pose in zip(valid, transform_to_pose(np.stack([transforms[name] for name in valid]))):
                poses[name] = pose
        keypoints = np.stack([k if k is not None else np.full((NUM_KEYPOINTS, 3), np.nan)
                              for k in (self.keypoints["left"], self.keypoints["right"])]).astype(np.float32)
        return {
            "t_tick_ns": np.int64(self.t_tick_ns),
            "t_eval_ns": np.int64(self.t_eval_ns),
            "lateness_ns": np.int64(self.lateness_ns),
            "action": self.action,
            "action_valid": self.action_valid,
            **poses,
            "keypoints": keypoints,
            "stream_status": np.array([self.evaluations[s].status for s in SYNCED_STREAMS], np.uint8),
            "stream_dt_ns": np.array([self.evaluations[s].dt_ns for s in SYNCED_STREAMS], np.int64),
            "stream_seq": np.array([self.stream_seq[s] for s in SYNCED_STREAMS], np.int64),
        }


class Synchronizer:
    """Buffers incoming samples and computes ticks; optionally runs its own ticking thread.

    ``on_tick(tick)`` is called on the synchronizer thread: keep it cheap (queue the row,
    swap a reference); never touch Qt widgets there.
    """

    def __init__(self, config: SyncConfig, calibration: Calibration,
                 on_tick: Callable[[SyncedTick], None] | None = None, rates_hz: dict[str, float] | None = None):
        self.config = config
        self.scheduling = "not started"  # how the ticking thread is scheduled (capture_app.rig.priority)
        self.calibration = calibration
        self.on_tick = on_tick
        self.period_ns = int(round(NS_PER_S / config.rate_hz))
        self.delay_ns = int(round(config.delay_ms * 1e6))
        self.limits = Limits(int(config.max_interpolation_gap_ms * 1e6), int(config.max_extrapolation_ms * 1e6),
                             int(config.max_image_offset_ms * 1e6))
        rates = rates_hz or {}
        self.buffers = {s: StreamBuffer(STREAM_KINDS[s], BUFFER_SECONDS * rates.get(s, 250.0)) for s in SYNCED_STREAMS}
        self.lock = threading.Lock()  # the ingest lock: receive stamping + buffer writes + tick reads
        self._offsets = {s: calibration.latency_offset_ns(s) for s in SYNCED_STREAMS}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0_ns = 0
        # While recording, only samples received since the episode began count, so that the
        # episode's rows depend on the episode's data alone (and offline resync matches live).
        self.receive_floor_ns = 0
        self.ticks = 0
        self.lateness_ns: list[int] = []       # tick time -> its row is ready
        self.wake_lateness_ns: list[int] = []  # tick time -> the thread woke up

    # --- input ----------------------------------------------------------------------
    def ingest(self, message: Message) -> bool:
        """Add one sample. Call with ``self.lock`` held, right after stamping its receive time."""
        buffer = self.buffers.get(message.stream)
        if buffer is None:
            return False
        t = message.t_capture_ns - self._offsets[message.stream]
        tracking = TRACKING_CODES[message.tracking]
        value = message.arrays.get({"pose": "pose", "keypoints": "keypoints"}.get(buffer.kind, ""))
        frame = message if buffer.kind in ("image", "rgbd") else None
        return buffer.append(t, message.t_receive_ns, message.seq, tracking, value, frame=frame, sender=message.sender)

    def ingest_block(self, block: SampleBlock) -> None:
        """Add a batch of samples (pose or keypoint streams) as ``ingest`` of each would. Call with
        ``self.lock`` held, right after stamping its receive time."""
        buffer = self.buffers.get(block.stream)
        if buffer is None:
            return
        if buffer.kind in ("image", "rgbd"):  # frames are kept per sample
            for message in block.messages():
                self.ingest(message)
            return
        tracking = np.array([TRACKING_CODES[state] for state in block.tracking], np.uint8)
        value = block.arrays.get({"pose": "pose", "keypoints": "keypoints"}.get(buffer.kind, ""))
        buffer.append_many(block.t_capture_ns - self._offsets[block.stream], block.t_receive_ns, block.seqs,
                           tracking, value, block.sender)

    def load_stream(self, stream: str, t_capture_ns: np.ndarray, t_receive_ns: np.ndarray, seq: np.ndarray,
                    tracking: np.ndarray, values: np.ndarray | None, senders: np.ndarray) -> None:
        """Replace ``stream``'s buffer with a recorded stream's samples (no eviction), as ``ingest`` of each
        in order would: capture times (ns, host clock) minus the stream's latency offset."""
        kind = self.buffers[stream].kind
        buffer = self.buffers[stream] = StreamBuffer(kind, len(seq) + 1)
        buffer.extend(np.asarray(t_capture_ns, np.int64) - self._offsets[stream], t_receive_ns, seq, tracking,
                      values, senders)

    # --- one tick -------------------------------------------------------------------------
    def compute_tick(self, t_tick_ns: int, receive_cutoff_ns: int | None = None) -> SyncedTick:
        """Evaluate every stream for the tick at ``t_tick_ns`` from samples received by then
        (live), or by ``receive_cutoff_ns`` (the final table of a finished episode uses every sample).

        Call with ``self.lock`` held (the thread does), or on buffers nobody else touches.
        """
        t_eval = t_tick_ns - self.delay_ns
        cutoff = t_tick_ns if receive_cutoff_ns is None else receive_cutoff_ns
        evaluations: dict[str, Evaluation] = {}
        seqs: dict[str, int] = {}
        frames: dict[str, Message | None] = {}
        video: dict[str, list[Message]] = {}
        for stream, buffer in self.buffers.items():
            visible = buffer.visible(cutoff, self.receive_floor_ns)
            times = buffer.times[visible]
            if buffer.kind in ("pose", "keypoints"):
                result = evaluate("pose" if buffer.kind == "pose" else "points", times, buffer.values[visible],
                                  buffer.tracking[visible], t_eval, self.limits)
            else:
                result = nearest(times, t_eval, self.limits)
            seqs[stream] = int(buffer.seq[visible][result.index]) if result.valid else -1
            if stream in CAMERA_STREAMS:
                frames[stream] = buffer.frames.get(seqs[stream]) if result.valid else None
                if frames[stream] is not None and frames[stream].encodings.get("color") == "h264":
                    video[stream] = [m for s, m in buffer.frames.items() if s <= seqs[stream]]
            evaluations[stream] = result
        tick = self._assemble(t_tick_ns, t_eval, evaluations, seqs, frames)
        tick.video_packets = video
        return tick

    def _assemble(self, t_tick, t_eval, evaluations, seqs, frames) -> SyncedTick:
        cal = self.calibration
        head = evaluations["head_tracker"]
        T_world_headtracker = pose_to_transform(head.value) if head.valid else None
        T_world_cam = T_world_headtracker @ cal.T_headtracker_cam if T_world_headtracker is not None else None
        T_cam_world = invert_transform(T_world_cam) if T_world_cam is not None else None
        T_world_wrist, T_cam_wrist, keypoints = {}, {}, {}
        for hand in ("left", "right"):
            tracker = evaluations[f"{hand}_wrist_tracker"]
            # T_cam_wrist = inv(T_world_headtracker @ T_headtracker_cam) @ T_world_wristtracker @ T_wristtracker_wrist
            T_world_wrist[hand] = (pose_to_transform(tracker.value) @ cal.T_wristtracker_wrist[hand]
                                   if tracker.valid else None)
            T_cam_wrist[hand] = (T_cam_world @ T_world_wrist[hand]
                                 if T_world_wrist[hand] is not None and T_cam_world is not None else None)
            glove = evaluations[f"{hand}_glove"]
            keypoints[hand] = np.asarray(glove.value).reshape(NUM_KEYPOINTS, 3) if glove.valid else None
        nan_T = np.full((4, 4), np.nan)
        nan_k = np.full((NUM_KEYPOINTS, 3), np.nan)
        action = np.concatenate([
            wrist_state(T_cam_wrist["left"] if T_cam_wrist["left"] is not None else nan_T,
                        T_cam_wrist["right"] if T_cam_wrist["right"] is not None else nan_T),
            fingertip_state(keypoints["left"] if keypoints["left"] is not None else nan_k,
                            keypoints["right"] if keypoints["right"] is not None else nan_k),
        ])
        assert action.shape == (ACTION_DIM,)
        valid = np.array([T_cam_wrist["left"] is not None, T_cam_wrist["right"] is not None,
                          keypoints["left"] is not None, keypoints["right"] is not None])
        return SyncedTick(t_tick, t_eval, now_ns(), evaluations, seqs, T_world_headtracker, T_world_cam,
                          T_world_wrist, T_cam_wrist, keypoints, action, valid, frames)

    def describe(self) -> dict:
        """Attributes of the /synced group: how its rows were computed."""
        return {
            "sync_version": SYNC_VERSION,
            "rate_hz": float(self.config.rate_hz),
            "delay_ns": self.delay_ns,
            "max_interpolation_gap_ns": self.limits.max_interpolation_gap_ns,
            "max_extrapolation_ns": self.limits.max_extrapolation_ns,
            "max_image_offset_ns": self.limits.max_image_offset_ns,
            "streams": list(SYNCED_STREAMS),
            "status_names": {str(k): v for k, v in STATUS_NAMES.items()},
            "action_names": list(ACTION_NAMES),
            "action_valid_names": list(VALIDITY_NAMES),
            "calibration_id": self.calibration.calibration_id,
            "receive_floor_ns": self.receive_floor_ns,
            "latency_offsets_ns": {s: self._offsets[s] for s in SYNCED_STREAMS},
            "scheduling": self.scheduling,
        }

    # --- the ticking thread ----------------------------------------------------------
    def start(self, t0_ns: int | None = None) -> "Synchronizer":
        """Start ticking at ``t0_ns`` (default: the next whole period from now)."""
        now = now_ns()
        self.t0_ns = t0_ns if t0_ns is not None else (now // self.period_ns + 1) * self.period_ns
        self._thread = threading.Thread(target=self._run, name="synchronizer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        # a real-time thread wakes on time however busy the machine is; it sleeps between ticks, and its
        # children (none) would inherit the policy
        self.scheduling = make_this_thread_realtime(self.config.realtime_priority, reset_on_fork=True)
        k = 0
        while not self._stop.is_set():
            t_tick = self.t0_ns + k * self.period_ns
            if not sleep_until_ns(t_tick, self._stop):
                break
            self.wake_lateness_ns.append(now_ns() - t_tick)
            try:
                with self.lock:
                    tick = self.compute_tick(t_tick)
                self.ticks += 1
                self.lateness_ns.append(tick.lateness_ns)
                if len(self.lateness_ns) > 100_000:
                    del self.lateness_ns[:50_000]
                    del self.wake_lateness_ns[:50_000]
                if self.on_tick is not None:
                    self.on_tick(tick)
            except Exception:  # keep ticking; the error is logged with its traceback
                log.exception("synchronizer tick %d failed", k)
            k += 1
