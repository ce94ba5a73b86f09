"""An episode in Rerun (rerun-sdk): the world in 3D, the unified action as time series, subtasks on
the timeline. Time is the timeline ``episode``: seconds since the episode started (host clock).

Entities (all poses in the lighthouse world frame):
- ``world/head_tracker``, ``world/left_wrist``, ``world/right_wrist``: the synced poses; each wrist's
  ``hand`` child holds its 25 keypoints (wrist frame) as points and a skeleton.
- ``world/ego_camera``: ``T_world_cam`` with a pinhole (calibrated intrinsics) and its JPEG frame.
- ``world/top_camera``: its calibrated pose, pinhole, colour frame and depth (a point cloud in 3D).
- ``action/<name>`` (48 scalars), ``valid/<part>`` (0/1), ``subtasks`` (a text log), ``quality``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calibration.model import calibration_from_json
from capture_app.core.action_space import PART_COLUMNS, PART_NAMES
from capture_app.episode.file import open_episode
from capture_app.core.errors import EpisodeFormatError
from capture_app.episode.frames import FrameReader
from capture_app.core.hand import HANDS, KEYPOINT_PARENTS

BONES = [(parent, child) for child, parent in enumerate(KEYPOINT_PARENTS) if parent >= 0]  # the hand model's tree
POSES = {"head_tracker": "T_world_headtracker", "left_wrist": "T_world_left_wrist", "right_wrist": "T_world_right_wrist",
         "ego_camera": "T_world_cam"}
DEPTH_EVERY = 10  # log the depth image of every 10th row (2 Hz at 20 Hz): raw depth is 600 kB a frame


def _transform(rr, pose: np.ndarray):
    """A pose (x, y, z, qw, qx, qy, qz) as a Rerun transform."""
    return rr.Transform3D(translation=pose[:3], quaternion=rr.Quaternion(xyzw=[pose[4], pose[5], pose[6], pose[3]]))


def _matrix_transform(rr, T: np.ndarray):
    return rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3])


def _hand(rr, points: np.ndarray) -> list:
    """25 keypoints (wrist frame, metres) as points and their bones."""
    return [rr.Points3D(points, radii=0.004), rr.LineStrips3D([points[[a, b]] for a, b in BONES])]


def _log_static(rec, rr, calibration) -> None:
    """The world's axes and the ego camera's pinhole (calibrated intrinsics)."""
    k = calibration.ego_intrinsics
    rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    rec.log("world/ego_camera/image", rr.Pinhole(image_from_camera=k.K, resolution=[k.width, k.height]), static=True)


def log_episode(path: str | Path, rec, depth_every: int = DEPTH_EVERY) -> dict[str, int]:
    """Log the episode at ``path`` into the Rerun recording stream ``rec``; returns rows logged per entity."""
    import rerun as rr
    counts: dict[str, int] = {}
    def log(entity, *items, static=False):
        rec.log(entity, *items, static=static)
        counts[entity] = counts.get(entity, 0) + 1
    with open_episode(path) as f:
        if "synced/t_eval_ns" not in f:
            raise EpisodeFormatError(f"{path} has no synced table to show (interrupted before its first tick); "
                                     f"`capture-app inspect {path}` says what it holds")
        synced = f["synced"]
        t0 = int(f.attrs["start_monotonic_ns"])
        seconds = (synced["t_eval_ns"][:] - t0) / 1e9
        streams = json.loads(synced.attrs["streams"])
        index = synced["stream_index"][:]
        calibration = calibration_from_json(str(f["calibration"].attrs["json"]), f"{path}:/calibration")
        _log_static(rec, rr, calibration)
        log("world/top_camera", _matrix_transform(rr, np.asarray(calibration.T_world_topcam)), static=True)
        k = calibration.top_intrinsics
        log("world/top_camera/image", rr.Pinhole(image_from_camera=k.K, resolution=[k.width, k.height]), static=True)
        if "quality" in f.attrs:
            log("quality", rr.TextDocument(json.dumps(json.loads(f.attrs["quality"]), indent=2),
                                           media_type="text/markdown"), static=True)
        poses = {entity: synced[column][:] for entity, column in POSES.items()}
        keypoints = synced["keypoints"][:]
        valid = synced["action_valid"][:]
        frames = {name: FrameReader(f, name) for name in ("ego_camera", "top_camera") if f"streams/{name}/color" in f}
        for row, t in enumerate(seconds):
            rec.set_time("episode", duration=float(t))
            for entity, pose in poses.items():
                if np.isfinite(pose[row]).all():
                    log(f"world/{entity}", _transform(rr, pose[row]))
            for hand, side in enumerate(HANDS):
                points = keypoints[row, hand]
                if valid[row, 2 + hand] and np.isfinite(points).all():
                    log(f"world/{side}_wrist/hand", *_hand(rr, points))
            for name in ("ego_camera", "top_camera"):
                if name in frames and name in streams and index[row, streams.index(name)] >= 0:
                    stream_row = int(index[row, streams.index(name)])
                    if frames[name].encoding == "jpeg":  # logged as the JPEG it is: no decoding
                        blob = f[f"streams/{name}/color"][stream_row]
                        log(f"world/{name}/image", rr.EncodedImage(contents=np.asarray(blob).tobytes(),
                                                                   media_type="image/jpeg"))
                    elif (image := frames[name].frame(stream_row)) is not None:
                        log(f"world/{name}/image", rr.Image(image))
            if "top_camera" in streams and row % depth_every == 0 and index[row, streams.index("top_camera")] >= 0:
                depth = f["streams/top_camera/depth"][index[row, streams.index("top_camera")]]
                scale = float(f["streams/top_camera"].attrs["depth_scale_m"])
                log("world/top_camera/image/depth", rr.DepthImage(depth, meter=1.0 / scale))
        timeline = rr.TimeColumn("episode", duration=seconds)
        action = synced["action"][:]
        for j, name in enumerate(json.loads(synced.attrs["action_names"])):
            rec.send_columns(f"action/{name}", indexes=[timeline], columns=rr.Scalars.columns(scalars=action[:, j]))
            counts[f"action/{name}"] = len(seconds)
        for j, name in enumerate(json.loads(synced.attrs["action_valid_names"])):
            rec.send_columns(f"valid/{name}", indexes=[timeline],
                             columns=rr.Scalars.columns(scalars=valid[:, j].astype(np.float64)))
            counts[f"valid/{name}"] = len(seconds)
        if "annotations/subtasks/label" in f:
            g = f["annotations/subtasks"]
            for label, description, hand, start, end in zip(g["label"][:], g["description"][:], g["hand"][:],
                                                            g["start_ns"][:], g["end_ns"][:]):
                text = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
                rec.set_time("episode", duration=(int(start) - t0) / 1e9)
                log("subtasks", rr.TextLog(f"start {text(label)} ({text(hand)}): {text(description)}", level="INFO"))
                if end >= 0:
                    rec.set_time("episode", duration=(int(end) - t0) / 1e9)
                    log("subtasks", rr.TextLog(f"end {text(label)}", level="INFO"))
    return counts


def view_episode(path: str | Path, save: str | None = None) -> dict[str, int]:
    """Show an episode in the Rerun viewer (spawned), or save it to ``save`` (.rrd) for later."""
    import rerun as rr
    rec = rr.RecordingStream("capture_app", recording_id=Path(path).stem)
    if save:
        rec.save(save)
    else:
        rec.spawn()
    try:
        return log_episode(path, rec)
    finally:
        rec.flush()
        if save:
            rec.disconnect()


def rrd_entity_rows(path: str | Path) -> dict[str, int]:
    """Rows per entity path in a saved .rrd (what a viewer would show), read back with Rerun's reader."""
    from rerun.chunk import RrdReader
    counts: dict[str, int] = {}
    for chunk in RrdReader(str(path)).stream():
        if not chunk.is_static:
            counts[chunk.entity_path] = counts.get(chunk.entity_path, 0) + chunk.num_rows
        else:
            counts.setdefault(chunk.entity_path, 0)
    return counts


class LiveRerun:
    """The live counterpart for ``capture-app record --rerun``: each new synced tick's poses, hands, ego
    frame and action. Called from the recording loop's thread (never the synchronizer's)."""

    def __init__(self, target: str, episode_start_ns: int, calibration):
        import rerun as rr
        self._rr = rr
        self.rec = rr.RecordingStream("capture_app")
        if target.endswith(".rrd"):
            self.rec.save(target)
        elif target == "spawn":
            self.rec.spawn()
        else:
            self.rec.connect_grpc(target)
        self._t0 = episode_start_ns
        self._last_tick = -1
        self.ticks = 0
        _log_static(self.rec, rr, calibration)

    def log_tick(self, tick) -> None:
        """Log ``tick`` (a SyncedTick) once; later calls with the same tick do nothing."""
        rr, rec = self._rr, self.rec
        if tick is None or tick.t_tick_ns == self._last_tick:
            return
        self._last_tick = tick.t_tick_ns
        self.ticks += 1
        rec.set_time("episode", duration=(tick.t_eval_ns - self._t0) / 1e9)
        for entity, T in (("head_tracker", tick.T_world_headtracker), ("ego_camera", tick.T_world_cam),
                          ("left_wrist", tick.T_world_wrist.get("left")), ("right_wrist", tick.T_world_wrist.get("right"))):
            if T is not None:
                rec.log(f"world/{entity}", _matrix_transform(rr, T))
        for side in HANDS:
            points = tick.keypoints.get(side)
            if points is not None and np.isfinite(points).all():
                rec.log(f"world/{side}_wrist/hand", *_hand(rr, points))
        frame = tick.frames.get("ego_camera")
        if frame is not None and "color" in frame.arrays and frame.encodings.get("color") != "h264":
            # an H.264 frame does not decode alone: a camera stored as video shows no live image here
            color = frame.arrays["color"]
            image = rr.EncodedImage(contents=np.asarray(color).tobytes(), media_type="image/jpeg") if color.ndim == 1 \
                else rr.Image(color)
            rec.log("world/ego_camera/image", image)
        for part, (name, columns) in enumerate(zip(PART_NAMES, PART_COLUMNS)):
            rec.log(f"action/{name}", rr.Scalars(np.nan_to_num(tick.action[columns])))
            rec.log(f"valid/{name}", rr.Scalars([float(tick.action_valid[part])]))

    def close(self) -> None:
        self.rec.flush()
        self.rec.disconnect()
