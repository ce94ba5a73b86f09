"""`capture-app export mcap`, read back as a Foxglove or ROS user would: with the `mcap` reader, every
message decoded with its own schema (protobuf from the file's descriptors, JSON against its JSON Schema),
and checked against the episode: poses, keypoints, images and timestamps equal, the action row by row."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from capture_app.rig.config import parse_config
from capture_app.recorder.session import CaptureSession
from capture_app.recorder.takes import Takes
from tests.conftest import small_sim_text

mcap_reader = pytest.importorskip("mcap.reader")
pytest.importorskip("foxglove_schemas_protobuf")
decoder = pytest.importorskip("mcap_protobuf.decoder")
jsonschema = pytest.importorskip("jsonschema")
yaml = pytest.importorskip("yaml")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    out = tmp_path_factory.mktemp("episodes")
    with CaptureSession(parse_config(small_sim_text(), "<sim>")) as session:
        assert session.wait_for_streams(30) == []
        takes = Takes(session, out)
        takes.start(task="pour", instruction="pour the juice", operator="ana")
        time.sleep(0.8)
        takes.mark_start("grasp", session.latest_tick.t_eval_ns, "use right hand to grasp the bottle", "right")
        time.sleep(0.8)
        takes.mark_end(session.latest_tick.t_eval_ns)
        time.sleep(0.4)
        path = Path(takes.stop()["path"])
        takes.wait_finalized()
    return path


def _read_all(path: Path):
    """(topic, schema name, log_time, publish_time, decoded message) for every message, decoded by schema."""
    proto = decoder.DecoderFactory()
    out = []
    with open(path, "rb") as f:
        reader = mcap_reader.make_reader(f)
        for schema, channel, message in reader.iter_messages(log_time_order=False):
            if channel.message_encoding == "protobuf":
                value = proto.decoder_for("protobuf", schema)(message.data)
            else:
                assert channel.message_encoding == "json" and schema.encoding == "jsonschema"
                value = json.loads(message.data)
                jsonschema.validate(value, json.loads(schema.data))
            out.append((channel.topic, schema.name, message.log_time, message.publish_time, value))
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    return out, metadata


def test_mcap_export_decodes_and_equals_the_episode(episode, tmp_path):
    run = subprocess.run([sys.executable, "-m", "capture_app.cli", "export", "mcap", str(episode), "--out",
                          str(tmp_path / "bags"), "--no-progress"], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    name = episode.name.removesuffix(".h5")
    mcap_path = tmp_path / "bags" / name / f"{name}.mcap"
    messages, metadata = _read_all(mcap_path)
    by_topic: dict[str, list] = {}
    for topic, schema, log_time, publish_time, value in messages:
        assert log_time == publish_time
        by_topic.setdefault(topic, []).append((schema, log_time, value))
    with h5py.File(episode, "r") as f:
        for tracker in ("head_tracker", "left_wrist_tracker", "right_wrist_tracker"):
            poses, times = f[f"streams/{tracker}/pose"][:], f[f"streams/{tracker}/t_capture_ns"][:]
            got = [(t, v.transforms[0]) for s, t, v in by_topic["/tf"] if v.transforms[0].child_frame_id == tracker]
            assert {s for s, _, _ in by_topic["/tf"]} == {"foxglove.FrameTransforms"}
            assert len(got) == len(poses) > 10
            for (t, tf), pose, t_capture in zip(got, poses, times):
                assert t == t_capture and tf.timestamp.ToNanoseconds() == t_capture and tf.parent_frame_id == "world"
                assert [tf.translation.x, tf.translation.y, tf.translation.z] == pose[:3].tolist()
                assert [tf.rotation.w, tf.rotation.x, tf.rotation.y, tf.rotation.z] == pose[3:].tolist()
        static = by_topic["/tf_static"][0][2].transforms
        assert {(t.parent_frame_id, t.child_frame_id) for t in static} >= {("head_tracker", "cam"),
                                                                         ("left_wrist_tracker", "left_wrist")}
        for camera in ("ego_camera", "top_camera"):
            images, times = f[f"streams/{camera}/color"], f[f"streams/{camera}/t_capture_ns"][:]
            got = by_topic[f"/{camera}/image"]
            assert {s for s, _, _ in got} == {"foxglove.CompressedImage"} and len(got) == len(times) > 5
            for (_, t, image), row in zip(got, range(len(times))):
                assert t == times[row] and image.format == "jpeg" and image.frame_id == camera
                assert image.data == bytes(np.asarray(images[row]))
        for glove, frame in (("left_glove", "left_wrist"), ("right_glove", "right_wrist")):
            keypoints, times = f[f"streams/{glove}/keypoints"][:], f[f"streams/{glove}/t_capture_ns"][:]
            got = by_topic[f"/{glove}/skeleton"]
            assert [t for _, t, _ in got] == times.tolist()
            entity = got[len(got) // 2][2].entities[0]
            assert entity.frame_id == frame and len(entity.lines[0].points) == 2 * 24
            tip = entity.lines[0].points[-1]                      # the last bone ends at the pinky tip (24)
            assert [tip.x, tip.y, tip.z] == keypoints[len(got) // 2][24].astype(float).tolist()
        action, valid, t_eval = f["synced/action"][:], f["synced/action_valid"][:], f["synced/t_eval_ns"][:]
        got = by_topic["/action"]
        assert [t for _, t, _ in got] == t_eval.tolist()
        for (_, _, value), row_action, row_valid in zip(got, action, valid):
            assert [np.nan if v is None else v for v in value["action"]] == pytest.approx(row_action.tolist(), nan_ok=True)
            assert list(value["valid"].values()) == row_valid.astype(bool).tolist()
        start_ns = int(f["annotations/subtasks/start_ns"][0])
    logs = by_topic["/subtasks"]
    assert [(t, v.message.split()[0]) for _, t, v in logs][0] == (start_ns, "start")
    assert "grasp" in logs[0][2].message and len(logs) == 2
    assert json.loads(metadata["subtasks"]["json"])[0]["label"] == "grasp" and metadata["episode"]["operator"] == "ana"
    bag = yaml.safe_load((mcap_path.parent / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert bag["storage_identifier"] == "mcap" and bag["relative_file_paths"] == [mcap_path.name]
    assert bag["message_count"] == len(messages)
    assert {t["topic_metadata"]["name"]: t["message_count"] for t in bag["topics_with_message_count"]} == \
        {topic: len(v) for topic, v in by_topic.items()}


def test_ros2_bag_deserializes_with_a_rosbag2_reader_and_equals_the_episode(episode, tmp_path):
    """`export mcap --ros2`: a rosbag2 folder of ROS 2 standard messages in CDR, read back with rosbags (a
    rosbag2 reader that needs no ROS install): every message deserializes with its type, and poses, images,
    skeletons, the action, validity, subtasks and every timestamp equal the episode's."""
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    typesys = pytest.importorskip("rosbags.typesys")
    run = subprocess.run([sys.executable, "-m", "capture_app.cli", "export", "mcap", str(episode), "--ros2", "--out",
                          str(tmp_path / "bags"), "--no-progress"], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "LEFT OUT" not in run.stderr                                   # JPEG cameras: nothing left out
    folder = tmp_path / "bags" / episode.name.removesuffix(".h5")
    store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    by_topic: dict[str, list] = {}
    with rosbag2.Reader(folder) as reader:
        assert {c.ext.serialization_format for c in reader.connections} == {"cdr"}
        static_qos = [c.ext.offered_qos_profiles for c in reader.connections if c.topic == "/tf_static"][0]
        assert static_qos[0].durability.name == "TRANSIENT_LOCAL"            # latched, as tf_static must be
        counts = {c.topic: c.msgcount for c in reader.connections}
        for connection, t_ns, raw in reader.messages():
            by_topic.setdefault(connection.topic, []).append((t_ns, store.deserialize_cdr(raw, connection.msgtype)))
    assert counts == {topic: len(v) for topic, v in by_topic.items()}
    stamp = lambda h: h.stamp.sec * 1_000_000_000 + h.stamp.nanosec  # noqa: E731
    with h5py.File(episode, "r") as f:
        for tracker in ("head_tracker", "left_wrist_tracker", "right_wrist_tracker"):
            poses, times = f[f"streams/{tracker}/pose"][:], f[f"streams/{tracker}/t_capture_ns"][:]
            got = sorted((t, m.transforms[0]) for t, m in by_topic["/tf"] if m.transforms[0].child_frame_id == tracker)
            assert len(got) == len(poses) > 10
            for (t, tf), pose, t_capture in zip(got, poses, times):
                assert t == t_capture == stamp(tf.header) and tf.header.frame_id == "world"
                v, q = tf.transform.translation, tf.transform.rotation
                assert [v.x, v.y, v.z, q.w, q.x, q.y, q.z] == pose.tolist()
        static = by_topic["/tf_static"][0][1].transforms
        assert {(t.header.frame_id, t.child_frame_id) for t in static} >= {("head_tracker", "cam")}
        for camera in ("ego_camera", "top_camera"):
            images, times = f[f"streams/{camera}/color"], f[f"streams/{camera}/t_capture_ns"][:]
            got = sorted(by_topic[f"/{camera}/image/compressed"], key=lambda x: x[0])
            assert len(got) == len(times) > 5
            for row, (t, image) in enumerate(got):
                assert t == times[row] == stamp(image.header) and image.format == "jpeg"
                assert image.header.frame_id == camera and image.data.tobytes() == bytes(np.asarray(images[row]))
        for glove, frame in (("left_glove", "left_wrist"), ("right_glove", "right_wrist")):
            keypoints, times = f[f"streams/{glove}/keypoints"][:], f[f"streams/{glove}/t_capture_ns"][:]
            got = sorted(by_topic[f"/{glove}/skeleton"], key=lambda x: x[0])
            assert [t for t, _ in got] == times.tolist()
            marker = got[len(got) // 2][1]
            assert marker.header.frame_id == frame and marker.type == marker.LINE_LIST and len(marker.points) == 48
            tip = marker.points[-1]                                      # the last bone ends at the pinky tip (24)
            assert [tip.x, tip.y, tip.z] == keypoints[len(got) // 2][24].astype(float).tolist()
        action, valid, t_eval = f["synced/action"][:], f["synced/action_valid"][:], f["synced/t_eval_ns"][:]
        got = sorted(by_topic["/action"], key=lambda x: x[0])
        assert [t for t, _ in got] == t_eval.tolist()
        np.testing.assert_array_equal(np.stack([m.data for _, m in got]), action)   # NaN where invalid, as stored
        got_valid = sorted(by_topic["/action_valid"], key=lambda x: x[0])
        np.testing.assert_array_equal(np.stack([m.data for _, m in got_valid]), valid.astype(np.uint8))
        start_ns = int(f["annotations/subtasks/start_ns"][0])
    logs = sorted(by_topic["/subtasks"], key=lambda x: x[0])
    assert logs[0][0] == start_ns and logs[0][1].data.startswith("start grasp:") and len(logs) == 2
    with open(folder / f"{folder.name}.mcap", "rb") as stream:                # the MCAP itself: ROS 2 schemas
        summary = mcap_reader.make_reader(stream).get_summary()
    assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
    assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
    with pytest.raises(Exception, match="exists"):                            # a bag is never overwritten
        from capture_app.dataset.mcap_ros2 import export_episode_ros2
        export_episode_ros2(episode, tmp_path / "bags")
