"""Run with a Python that has lerobot installed: load an exported dataset with lerobot's own
LeRobotDataset and print what it sees as one JSON line (used by tests/test_dataset_export.py)."""
import json
import os
import sys

from lerobot.datasets.lerobot_dataset import LeRobotDataset

root = sys.argv[1]
# pyav needs torchvision < 0.26 (its VideoReader); with a newer torchvision use torchcodec (FFmpeg's libraries)
BACKEND = os.environ.get("CAPTURE_APP_LEROBOT_VIDEO_BACKEND", "pyav")
ds = LeRobotDataset("local/capture-export", root=root, video_backend=BACKEND)
chunked = LeRobotDataset("local/capture-export", root=root, video_backend=BACKEND,
                         delta_timestamps={"action": [i / ds.fps for i in range(10)],
                                           "observation.images.ego": [-1 / ds.fps, 0.0]})
chunk = chunked[len(chunked) // 2]
first = ds[0]
middle = ds[len(ds) // 2]
last = ds[len(ds) - 1]
print(json.dumps({
    "frames": len(ds), "episodes": ds.num_episodes, "fps": ds.fps,
    "ego_shape": list(first["observation.images.ego"].shape), "top_shape": list(first["observation.images.top"].shape),
    "state_len": int(first["observation.state"].shape[0]), "task": first["task"],
    "subtask": middle.get("subtask"), "last_episode": int(last["episode_index"]),
    "action_chunk": list(chunk["action"].shape), "ego_pair": list(chunk["observation.images.ego"].shape),
    "stats_keys": sorted(ds.meta.stats["observation.state"]),
    "state_first": [float(v) for v in first["observation.state"][:3]],
}))
