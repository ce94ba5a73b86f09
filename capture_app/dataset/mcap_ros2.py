"""Episodes -> ROS 2 bags (``capture-app export mcap --ros2``, docs/datasets.md "MCAP"): a rosbag2 folder
(MCAP storage, ``metadata.yaml`` version 9) whose messages are ROS 2 standard messages in CDR, so
``ros2 bag play`` republishes them and any rosbag2 reader (rosbags, rosbag2_py) deserializes them; the
message definitions are in the file, so Foxglove opens it too. Written with ``rosbags`` (pure Python, no
ROS install). The default export (``mcap_export``) uses Foxglove's protobuf schemas, which ROS 2 cannot
deserialize.

Times are the episode's own, as in ``mcap_export``: a message's bag timestamp and its ``header.stamp`` are
the sample's ``t_capture_ns`` (host monotonic ns; the wall-clock start is the episode's
``created_wall_time``). Topics (frames as in docs/episode-format.md; ``world`` is the lighthouse frame):

- ``/tf`` ``tf2_msgs/msg/TFMessage``: per tracker sample ``world`` -> ``<tracker stream>`` (T_world_tracker)
- ``/tf_static`` ``tf2_msgs/msg/TFMessage`` (once, at the start, latched QoS): the calibration's mounts
- ``/<camera>/image/compressed`` ``sensor_msgs/msg/CompressedImage`` (``format`` "jpeg", bytes as stored);
  a camera stored as H.264 has no ROS 2 standard message and is left out, and said so in the returned notes
- ``/<glove>/skeleton`` ``visualization_msgs/msg/Marker`` (LINE_LIST of the 24 bones, in ``<side>_wrist``)
- ``/action`` ``std_msgs/msg/Float64MultiArray``: per ``/synced`` row at ``t_eval_ns``, the 48-D action (NaN
  where invalid, ``/synced`` ``action_names`` order); ``/action_valid`` ``std_msgs/msg/UInt8MultiArray``:
  the four validity flags (1 valid) in ``action_valid_names`` order
- ``/subtasks`` ``std_msgs/msg/String``: ``start LABEL: DESCRIPTION (HAND)`` / ``end ...`` at each segment edge
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from capture_app.core.errors import CaptureError
from capture_app.core.hand import KEYPOINT_PARENTS
from capture_app.dataset.mcap_export import GLOVE_FRAMES, KEYPOINTS_KIND, POSE_KIND, _matrix_pose, _text
from capture_app.episode.file import open_episode


def _latched_qos():
    """Reliable, transient local, keep last 1: a subscriber that starts after /tf_static was played still gets it."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    never = QosTime(sec=2147483647, nsec=4294967295)
    return Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL, deadline=never, lifespan=never,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never,
               avoid_ros_namespace_conventions=False)


class _Bag:
    """A rosbags Writer with lazily added connections, CDR-serializing ROS 2 (Humble) messages."""

    def __init__(self, folder: Path):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
        self.store = get_typestore(Stores.ROS2_HUMBLE)
        self.t = self.store.types
        self.folder = folder
        self.writer = Writer(folder, version=9, storage_plugin=StoragePlugin.MCAP)
        self.connections: dict = {}

    def __enter__(self):
        self.writer.open()
        return self

    def __exit__(self, kind, *exc):
        self.writer.close()
        if kind is not None:  # no half bag left behind
            shutil.rmtree(self.folder, ignore_errors=True)

    def write(self, topic: str, message, t_ns: int, latched: bool = False) -> None:
        msgtype = message.__msgtype__
        connection = self.connections.get(topic)
        if connection is None:
            qos = [_latched_qos()] if latched else []
            connection = self.writer.add_connection(topic, msgtype, typestore=self.store, offered_qos_profiles=qos)
            self.connections[topic] = connection
        self.writer.write(connection, int(t_ns), self.store.serialize_cdr(message, msgtype))

    # --- message builders ---------------------------------------------------------------------------
    def header(self, frame_id: str, t_ns: int):
        sec, nanosec = divmod(int(t_ns), 1_000_000_000)
        return self.t["std_msgs/msg/Header"](stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                             frame_id=frame_id)

    def transform(self, parent: str, child: str, pose7: np.ndarray, t_ns: int):
        """geometry_msgs/TransformStamped from a (x, y, z, qw, qx, qy, qz) pose T_parent_child."""
        t = self.t
        x, y, z, qw, qx, qy, qz = (float(v) for v in pose7[:7])
        return t["geometry_msgs/msg/TransformStamped"](
            header=self.header(parent, t_ns), child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](translation=t["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                                                       rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)))

    def tf(self, transforms: list):
        return self.t["tf2_msgs/msg/TFMessage"](transforms=transforms)

    def skeleton(self, stream: str, points: np.ndarray, t_ns: int):
        t = self.t
        marker = t["visualization_msgs/msg/Marker"]
        bones = [t["geometry_msgs/msg/Point"](x=float(p[0]), y=float(p[1]), z=float(p[2]))
                 for joint, parent in enumerate(KEYPOINT_PARENTS) if parent >= 0 and joint != parent
                 for p in (points[parent], points[joint])]
        identity = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                               orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
        duration = t["builtin_interfaces/msg/Duration"](sec=0, nanosec=0)
        empty_image = t["sensor_msgs/msg/CompressedImage"](header=self.header("", 0), format="",
                                                            data=np.zeros(0, np.uint8))
        fields = marker.__dataclass_fields__
        values = dict(header=self.header(GLOVE_FRAMES[stream], t_ns), ns=stream, id=0, type=marker.LINE_LIST,
                      action=marker.ADD, pose=identity, scale=t["geometry_msgs/msg/Vector3"](x=0.004, y=0.0, z=0.0),
                      color=t["std_msgs/msg/ColorRGBA"](r=1.0, g=0.5, b=0.2, a=1.0), lifetime=duration,
                      frame_locked=False, points=bones, colors=[], texture_resource="", texture=empty_image,
                      uv_coordinates=[], text="", mesh_resource="", mesh_file=t["visualization_msgs/msg/MeshFile"](
                          filename="", data=np.zeros(0, np.uint8)) if "mesh_file" in fields else None,
                      mesh_use_embedded_materials=False)
        return marker(**{k: v for k, v in values.items() if k in fields})

    def multi_array(self, msgtype: str, label: str, values: np.ndarray):
        t = self.t
        layout = t["std_msgs/msg/MultiArrayLayout"](
            dim=[t["std_msgs/msg/MultiArrayDimension"](label=label, size=len(values), stride=len(values))],
            data_offset=0)
        return t[msgtype](layout=layout, data=values)


def export_episode_ros2(path: str | Path, out_dir: str | Path) -> tuple[Path, list[str]]:
    """Write the bag folder ``out_dir/<name>/`` (``<name>.mcap`` + ``metadata.yaml``); returns (the folder,
    notes on what a ROS 2 bag cannot hold and was left out). Refuses an existing folder."""
    path = Path(path)
    name = path.name.removesuffix(".h5")
    folder = Path(out_dir) / name
    if folder.exists():
        raise CaptureError(f"{folder} exists; a bag is never overwritten: remove it or choose another --out")
    folder.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    with open_episode(str(path)) as f, _Bag(folder) as bag:
        start_ns = int(f.attrs.get("start_monotonic_ns", 0))
        if "calibration" in f and "json" in f["calibration"].attrs:
            calibration = json.loads(_text(f["calibration"].attrs["json"]))
            static = []
            if "T_headtracker_cam" in calibration:
                static.append(bag.transform("head_tracker", "cam", _matrix_pose(calibration["T_headtracker_cam"]), start_ns))
            for side, matrix in calibration.get("T_wristtracker_wrist", {}).items():
                static.append(bag.transform(f"{side}_wrist_tracker", f"{side}_wrist", _matrix_pose(matrix), start_ns))
            if "T_world_topcam" in calibration:
                static.append(bag.transform("world", "top_camera", _matrix_pose(calibration["T_world_topcam"]), start_ns))
            if static:
                bag.write("/tf_static", bag.tf(static), start_ns, latched=True)
        for stream_name in sorted(f["streams"]):
            group = f[f"streams/{stream_name}"]
            kind = _text(group.attrs.get("kind", ""))
            times = group["t_capture_ns"][:] if "t_capture_ns" in group else np.zeros(0, np.int64)
            if kind == POSE_KIND:
                for t_ns, pose in zip(times, group["pose"][:]):
                    bag.write("/tf", bag.tf([bag.transform("world", stream_name, pose, t_ns)]), t_ns)
            elif kind == KEYPOINTS_KIND and stream_name in GLOVE_FRAMES:
                for t_ns, points in zip(times, group["keypoints"][:]):
                    bag.write(f"/{stream_name}/skeleton", bag.skeleton(stream_name, points, t_ns), t_ns)
            elif "color" in group:
                if _text(group.attrs.get("color_encoding", "jpeg")) != "jpeg":
                    notes.append(f"{stream_name}: stored as H.264, which no ROS 2 standard message holds; left out "
                                 f"(the default export writes it as foxglove.CompressedVideo)")
                    continue
                image = bag.t["sensor_msgs/msg/CompressedImage"]
                for row in range(len(times)):
                    data = np.frombuffer(bytes(np.asarray(group["color"][row])), np.uint8)
                    bag.write(f"/{stream_name}/image/compressed",
                              image(header=bag.header(stream_name, times[row]), format="jpeg", data=data), times[row])
        if "synced" in f:
            action, valid, t_eval = f["synced/action"][:], f["synced/action_valid"][:], f["synced/t_eval_ns"][:]
            for t_ns, a, v in zip(t_eval, action, valid):
                bag.write("/action", bag.multi_array("std_msgs/msg/Float64MultiArray", "action",
                                                     np.asarray(a, np.float64)), t_ns)
                bag.write("/action_valid", bag.multi_array("std_msgs/msg/UInt8MultiArray", "valid",
                                                           np.asarray(v, np.uint8)), t_ns)
        if "annotations/subtasks/label" in f:
            g = f["annotations/subtasks"]
            text = bag.t["std_msgs/msg/String"]
            for label, description, hand, a, b in zip(g["label"][:], g["description"][:], g["hand"][:],
                                                      g["start_ns"][:], g["end_ns"][:]):
                for edge, t_ns in (("start", int(a)), ("end", int(b))):
                    if t_ns >= 0:  # an open segment has no end
                        bag.write("/subtasks", text(data=f"{edge} {_text(label)}: {_text(description)} "
                                                         f"({_text(hand)})"), t_ns)
    return folder, notes
