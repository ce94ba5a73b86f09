"""The streams of the rig: their names (= bus topics) and what each carries.

Buffers per kind (all arrays little-endian; poses are ``T_world_device`` in the
lighthouse world frame, metres, quaternion wxyz):

- ``pose``      ``pose`` float64 (7,) = (x, y, z, qw, qx, qy, qz)
- ``keypoints`` ``keypoints`` float32 (25, 3), canonical order (capture_app.core.hand), wrist frame
- ``image``     ``color`` uint8 (H, W, 3) RGB, raw or jpeg
- ``rgbd``      ``color`` as above + ``depth`` uint16 (H, W), raw, scale in meta["depth_scale_m"]
- ``truth``     simulated ground truth: ``head`` (7,), ``left_wrist`` (7,), ``right_wrist`` (7,)
                wrist *frames* (not trackers) in world, ``left_keypoints``/``right_keypoints`` (25, 3)
"""

from __future__ import annotations

STREAM_KINDS: dict[str, str] = {
    "left_glove": "keypoints",
    "right_glove": "keypoints",
    "left_wrist_tracker": "pose",
    "right_wrist_tracker": "pose",
    "head_tracker": "pose",
    "ego_camera": "image",
    "top_camera": "rgbd",
    "ground_truth": "truth",
}
POSE_STREAMS = ("head_tracker", "left_wrist_tracker", "right_wrist_tracker")
GLOVE_STREAMS = ("left_glove", "right_glove")
CAMERA_STREAMS = ("ego_camera", "top_camera")
SYNCED_STREAMS = POSE_STREAMS + GLOVE_STREAMS + CAMERA_STREAMS
