"""Episodes -> MCAP (``capture-app export mcap``, docs/datasets.md "MCAP"): every raw sample as a message
with Foxglove's well-known schemas (protobuf, ``foxglove_schemas_protobuf``), the synced action as JSON,
plus a rosbag2 ``metadata.yaml`` beside the file. Times are the episode's own: a message's log and
publish time and its ``timestamp`` are the sample's ``t_capture_ns`` (host monotonic ns), so every
message ties back to its row in the episode.

Topics (frames as in docs/episode-format.md; ``world`` is the lighthouse frame):

- ``/tf`` ``foxglove.FrameTransforms``: per tracker sample ``world`` -> ``<tracker stream>`` (``pose`` = T_world_tracker)
- ``/tf_static`` ``foxglove.FrameTransforms`` (once, at the episode start): the calibration's mounts,
  ``head_tracker`` -> ``cam``, ``<side>_wrist_tracker`` -> ``<side>_wrist``, ``world`` -> ``top_camera``
- ``/<camera>/image`` ``foxglove.CompressedImage`` (JPEG as stored) or ``foxglove.CompressedVideo``
  (H.264 Annex B packets as stored, from the first keyframe)
- ``/<glove>/skeleton`` ``foxglove.SceneUpdate``: the 25 keypoints in ``<side>_wrist`` as a line list of bones
- ``/action`` JSON (``capture_app.SyncedAction``): per ``/synced`` row at ``t_eval_ns``, the 48-D action
  (null where invalid) and the four validity flags
- ``/subtasks`` ``foxglove.Log``: one message at each annotated segment's start and end
- MCAP metadata records ``episode`` (root attributes) and ``subtasks`` (every segment)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from capture_app.core.hand import KEYPOINT_PARENTS
from capture_app.episode.file import open_episode

ACTION_SCHEMA = {
    "title": "capture_app.SyncedAction", "type": "object",
    "properties": {
        "timestamp": {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}},
                      "required": ["sec", "nsec"]},
        "row": {"type": "integer"},
        "action": {"type": "array", "minItems": 48, "maxItems": 48, "items": {"type": ["number", "null"]}},
        "valid": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
    "required": ["timestamp", "row", "action", "valid"],
}
POSE_KIND, KEYPOINTS_KIND = "pose", "keypoints"
GLOVE_FRAMES = {"left_glove": "left_wrist", "right_glove": "right_wrist"}
BONE_COLORS = {"left_glove": (0.2, 0.6, 1.0, 1.0), "right_glove": (1.0, 0.4, 0.2, 1.0)}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Out:
    """An MCAP writer with lazily registered protobuf and JSON channels."""

    def __init__(self, stream):
        from mcap.writer import CompressionType, Writer
        self.writer = Writer(stream, compression=CompressionType.ZSTD)
        self.writer.start(profile="", library="capture-app")
        self.channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.types: dict[str, str] = {}

    def _channel(self, topic: str, schema_name: str, encoding: str, schema_data: bytes, message_encoding: str) -> int:
        if topic not in self.channels:
            schema_id = self.writer.register_schema(schema_name, encoding, schema_data)
            self.channels[topic] = self.writer.register_channel(topic, message_encoding, schema_id)
            self.counts[topic], self.types[topic] = 0, schema_name
        return self.channels[topic]

    def proto(self, topic: str, message, t_ns: int) -> None:
        from mcap_protobuf.schema import build_file_descriptor_set
        descriptor = type(message).DESCRIPTOR
        channel = self.channels.get(topic)
        if channel is None:
            channel = self._channel(topic, descriptor.full_name, "protobuf",
                                    build_file_descriptor_set(type(message)).SerializeToString(), "protobuf")
        self.writer.add_message(channel, log_time=int(t_ns), publish_time=int(t_ns), data=message.SerializeToString(),
                                sequence=self.counts[topic])
        self.counts[topic] += 1

    def json(self, topic: str, schema: dict, value: dict, t_ns: int) -> None:
        channel = self._channel(topic, schema["title"], "jsonschema", json.dumps(schema).encode(), "json")
        self.writer.add_message(channel, log_time=int(t_ns), publish_time=int(t_ns),
                                data=json.dumps(value, allow_nan=False).encode(), sequence=self.counts[topic])
        self.counts[topic] += 1


def _stamp(message_timestamp, t_ns: int) -> None:
    message_timestamp.seconds, message_timestamp.nanos = divmod(int(t_ns), 1_000_000_000)


def _transform(parent: str, child: str, pose7: np.ndarray, t_ns: int):
    """A foxglove.FrameTransform from a (x, y, z, qw, qx, qy, qz) pose T_parent_child."""
    from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
    t = FrameTransform(parent_frame_id=parent, child_frame_id=child)
    _stamp(t.timestamp, t_ns)
    t.translation.x, t.translation.y, t.translation.z = (float(v) for v in pose7[:3])
    t.rotation.w, t.rotation.x, t.rotation.y, t.rotation.z = (float(v) for v in pose7[3:7])
    return t


def _matrix_pose(matrix) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    m = np.asarray(matrix, float)
    x, y, z, w = Rotation.from_matrix(m[:3, :3]).as_quat()
    return np.array([*m[:3, 3], w, x, y, z])


def _static_transforms(f, t_ns: int) -> list:
    if "calibration" not in f or "json" not in f["calibration"].attrs:
        return []
    calibration = json.loads(_text(f["calibration"].attrs["json"]))
    out = []
    if "T_headtracker_cam" in calibration:
        out.append(_transform("head_tracker", "cam", _matrix_pose(calibration["T_headtracker_cam"]), t_ns))
    for side, matrix in calibration.get("T_wristtracker_wrist", {}).items():
        out.append(_transform(f"{side}_wrist_tracker", f"{side}_wrist", _matrix_pose(matrix), t_ns))
    if "T_world_topcam" in calibration:
        out.append(_transform("world", "top_camera", _matrix_pose(calibration["T_world_topcam"]), t_ns))
    return out


def _skeleton(stream: str, points: np.ndarray, t_ns: int):
    from foxglove_schemas_protobuf.LinePrimitive_pb2 import LinePrimitive
    from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate
    update = SceneUpdate()
    entity = update.entities.add(frame_id=GLOVE_FRAMES[stream], id=stream)
    _stamp(entity.timestamp, t_ns)
    line = entity.lines.add(type=LinePrimitive.Type.LINE_LIST, thickness=0.004, scale_invariant=False)
    line.color.r, line.color.g, line.color.b, line.color.a = BONE_COLORS[stream]
    for joint, parent in enumerate(KEYPOINT_PARENTS):
        if parent < 0 or joint == parent:  # the wrist is the root
            continue
        for k in (parent, joint):
            p = line.points.add()
            p.x, p.y, p.z = (float(v) for v in points[k])
    return update


def export_episode_mcap(path: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir/<name>/<name>.mcap`` and its ``metadata.yaml``; returns the MCAP path."""
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
    from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
    from foxglove_schemas_protobuf.Log_pb2 import Log
    path = Path(path)
    name = path.name.removesuffix(".h5")
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.mcap"
    with open_episode(str(path)) as f, open(target, "wb") as stream:
        out = _Out(stream)
        attrs = {k: _text(v) if isinstance(v, (bytes, str)) else json.dumps(v.tolist() if hasattr(v, "tolist") else v)
                 for k, v in f.attrs.items()}
        out.writer.add_metadata("episode", attrs)
        start_ns = int(f.attrs.get("start_monotonic_ns", 0))
        static = _static_transforms(f, start_ns)
        if static:
            out.proto("/tf_static", FrameTransforms(transforms=static), start_ns)
        for stream_name in sorted(f["streams"]):
            group = f[f"streams/{stream_name}"]
            kind = _text(group.attrs.get("kind", ""))
            times = group["t_capture_ns"][:] if "t_capture_ns" in group else np.zeros(0, np.int64)
            if kind == POSE_KIND:
                poses = group["pose"][:]
                for t_ns, pose in zip(times, poses):
                    out.proto("/tf", FrameTransforms(transforms=[_transform("world", stream_name, pose, t_ns)]), t_ns)
            elif kind == KEYPOINTS_KIND and stream_name in GLOVE_FRAMES:
                keypoints = group["keypoints"][:]
                for t_ns, points in zip(times, keypoints):
                    out.proto(f"/{stream_name}/skeleton", _skeleton(stream_name, points, t_ns), t_ns)
            elif "color" in group:
                video = _text(group.attrs.get("color_encoding", "jpeg")) == "h264"
                keyframes = group["color_keyframe"][:] if video else None
                started = not video
                for row in range(len(times)):
                    started = started or bool(keyframes[row])
                    if not started:
                        continue
                    data = bytes(np.asarray(group["color"][row]))
                    if video:
                        message = CompressedVideo(frame_id=stream_name, data=data, format="h264")
                    else:
                        message = CompressedImage(frame_id=stream_name, data=data, format="jpeg")
                    _stamp(message.timestamp, times[row])
                    out.proto(f"/{stream_name}/image", message, times[row])
        if "synced" in f:
            valid_names = json.loads(f["synced"].attrs["action_valid_names"])
            action, valid, t_eval = f["synced/action"][:], f["synced/action_valid"][:], f["synced/t_eval_ns"][:]
            for row, (t_ns, a, v) in enumerate(zip(t_eval, action, valid)):
                sec, nsec = divmod(int(t_ns), 1_000_000_000)
                out.json("/action", ACTION_SCHEMA, {
                    "timestamp": {"sec": sec, "nsec": nsec}, "row": row,
                    "action": [None if x != x else float(x) for x in a],
                    "valid": {n: bool(b) for n, b in zip(valid_names, v)}}, t_ns)
        segments = []
        if "annotations/subtasks/label" in f:
            g = f["annotations/subtasks"]
            for label, description, hand, a, b in zip(g["label"][:], g["description"][:], g["hand"][:],
                                                      g["start_ns"][:], g["end_ns"][:]):
                segment = {"label": _text(label), "description": _text(description), "hand": _text(hand),
                           "start_ns": int(a), "end_ns": int(b)}
                segments.append(segment)
                for edge, t_ns in (("start", int(a)), ("end", int(b))):
                    if t_ns < 0:
                        continue  # an open segment has no end
                    log = Log(level=Log.Level.INFO, name="subtask", file="", line=0,
                              message=f"{edge} {segment['label']}: {segment['description']} ({segment['hand']})")
                    _stamp(log.timestamp, t_ns)
                    out.proto("/subtasks", log, t_ns)
        out.writer.add_metadata("subtasks", {"json": json.dumps(segments)})
        out.writer.finish()
        counts, types = out.counts, out.types
    _write_bag_metadata(folder, target, counts, types)
    return target


def _write_bag_metadata(folder: Path, mcap_path: Path, counts: dict[str, int], types: dict[str, str]) -> None:
    """rosbag2's ``metadata.yaml`` (version 5) for the bag folder, from the file's own summary."""
    import yaml
    from mcap.reader import make_reader
    with open(mcap_path, "rb") as f:
        stats = make_reader(f).get_summary().statistics
    start, end = int(stats.message_start_time), int(stats.message_end_time)
    encoding = {t: "json" if types[t] == ACTION_SCHEMA["title"] else "protobuf" for t in counts}
    info = {"rosbag2_bagfile_information": {
        "version": 5, "storage_identifier": "mcap", "relative_file_paths": [mcap_path.name],
        "duration": {"nanoseconds": end - start}, "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": int(stats.message_count), "compression_format": "", "compression_mode": "",
        "topics_with_message_count": [
            {"topic_metadata": {"name": topic, "type": types[topic].replace("foxglove.", "foxglove_msgs/msg/"),
                                "serialization_format": encoding[topic], "offered_qos_profiles": ""},
             "message_count": count} for topic, count in sorted(counts.items())],
        "files": [{"path": mcap_path.name, "starting_time": {"nanoseconds_since_epoch": start},
                   "duration": {"nanoseconds": end - start}, "message_count": int(stats.message_count)}],
    }}
    (folder / "metadata.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
