"""The canonical 25-keypoint hand used on the bus and in episode files.

Keypoints are 3-D positions in metres in that hand's wrist frame (see
``docs/episode-format.md``). Index 0 is the wrist itself; then the thumb with four
joints (it has no distal phalanx) and the four fingers with five joints each, from
the metacarpal to the tip. Drivers map their SDK's nodes into this order by finger
and joint type, never by the SDK's raw index.
"""

from __future__ import annotations

FINGERS = ("thumb", "index", "middle", "ring", "pinky")
THUMB_JOINTS = ("metacarpal", "proximal", "intermediate", "tip")
FINGER_JOINTS = ("metacarpal", "proximal", "intermediate", "distal", "tip")


def _names() -> tuple[str, ...]:
    names = ["wrist"]
    for finger in FINGERS:
        joints = THUMB_JOINTS if finger == "thumb" else FINGER_JOINTS
        names.extend(f"{finger}_{joint}" for joint in joints)
    return tuple(names)


KEYPOINT_NAMES: tuple[str, ...] = _names()
NUM_KEYPOINTS = len(KEYPOINT_NAMES)  # 25
KEYPOINT_INDEX = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
FINGERTIP_INDICES: tuple[int, ...] = tuple(KEYPOINT_INDEX[f"{f}_tip"] for f in FINGERS)  # (4, 9, 14, 19, 24)

# Parent of each keypoint, for drawing the skeleton (-1 for the wrist).
def _parents() -> tuple[int, ...]:
    parents = [-1]
    for finger in FINGERS:
        joints = THUMB_JOINTS if finger == "thumb" else FINGER_JOINTS
        for j, joint in enumerate(joints):
            parents.append(0 if j == 0 else KEYPOINT_INDEX[f"{finger}_{joints[j - 1]}"])
    return tuple(parents)


KEYPOINT_PARENTS: tuple[int, ...] = _parents()
HANDS = ("left", "right")
