"""The unified action space of the capture system (METIS section 3.3).

Pure functions, no I/O. Layout of the 48-D action vector, all in metres:

- ``[0:18]``  wrist state: for the left hand then the right hand, the wrist position
  (3) and 6-D rotation (6, first two columns of R) of ``T_cam_wrist``, i.e. the wrist
  frame expressed in the ego-camera frame (+z forward, +x right, +y down).
- ``[18:48]`` fingertip state: for the left hand then the right hand, the 3-D
  positions of thumb, index, middle, ring and pinky tips in that hand's wrist frame.
"""

from __future__ import annotations

import numpy as np

from capture_app.core.geometry import invert_transform, rotation_to_6d
from capture_app.core.hand import FINGERTIP_INDICES

WRIST_DIM = 18
FINGERTIP_DIM = 30
ACTION_DIM = WRIST_DIM + FINGERTIP_DIM
# the action's columns per validity flag (the order of /synced/action_valid)
PART_NAMES = ("left_wrist", "right_wrist", "left_fingers", "right_fingers")
PART_COLUMNS = (slice(0, 9), slice(9, 18), slice(18, 33), slice(33, 48))

ACTION_NAMES: tuple[str, ...] = tuple(
    [f"{hand}_wrist_{c}" for hand in ("left", "right") for c in ("x", "y", "z", "r00", "r10", "r20", "r01", "r11", "r21")]
    + [f"{hand}_{finger}_tip_{c}" for hand in ("left", "right")
       for finger in ("thumb", "index", "middle", "ring", "pinky") for c in ("x", "y", "z")]
)


def camera_from_wrist(
    T_world_headtracker: np.ndarray,
    T_headtracker_cam: np.ndarray,
    T_world_wristtracker: np.ndarray,
    T_wristtracker_wrist: np.ndarray,
) -> np.ndarray:
    """``T_cam_wrist = inv(T_world_headtracker @ T_headtracker_cam) @ T_world_wristtracker @ T_wristtracker_wrist``.

    All inputs are 4x4 (a leading batch dimension broadcasts); world is the
    lighthouse frame; the result maps points in the wrist frame to the ego-camera frame.
    """
    T_world_cam = np.asarray(T_world_headtracker) @ np.asarray(T_headtracker_cam)
    T_world_wrist = np.asarray(T_world_wristtracker) @ np.asarray(T_wristtracker_wrist)
    return invert_transform(T_world_cam) @ T_world_wrist


def wrist_state(T_cam_wrist_left: np.ndarray, T_cam_wrist_right: np.ndarray) -> np.ndarray:
    """18-D wrist state (..., 18) from the two ``T_cam_wrist`` (..., 4, 4)."""
    parts = []
    for T in (np.asarray(T_cam_wrist_left, dtype=float), np.asarray(T_cam_wrist_right, dtype=float)):
        parts.append(T[..., :3, 3])
        parts.append(rotation_to_6d(T[..., :3, :3]))
    return np.concatenate(parts, axis=-1)


def fingertip_state(keypoints_left: np.ndarray, keypoints_right: np.ndarray) -> np.ndarray:
    """30-D fingertip state (..., 30) from the two hands' 25 keypoints (..., 25, 3) in their wrist frames."""
    tips = [np.asarray(k, dtype=float)[..., FINGERTIP_INDICES, :] for k in (keypoints_left, keypoints_right)]
    return np.concatenate([t.reshape(t.shape[:-2] + (15,)) for t in tips], axis=-1)


def unified_action(
    T_cam_wrist_left: np.ndarray,
    T_cam_wrist_right: np.ndarray,
    keypoints_left: np.ndarray,
    keypoints_right: np.ndarray,
) -> np.ndarray:
    """48-D action (..., 48): the 18-D wrist state followed by the 30-D fingertip state."""
    return np.concatenate(
        [wrist_state(T_cam_wrist_left, T_cam_wrist_right), fingertip_state(keypoints_left, keypoints_right)], axis=-1
    )
