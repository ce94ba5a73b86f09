"""Mapping MANUS raw-skeleton nodes into the canonical 25 keypoints (capture_app.core.hand).

Node order differs between SDK versions and modes, so nodes are matched by their
NodeInfo (chain type and finger joint type), never by raw index. Pure functions.
"""

from __future__ import annotations

import numpy as np

from capture_app.core.errors import DeviceError
from capture_app.core.geometry import quat_to_matrix
from capture_app.core.hand import KEYPOINT_NAMES
from drivers.manus.binding import CHAIN_FINGERS, CHAIN_HAND, JOINTS, SIDE


def canonical_indices(node_infos) -> np.ndarray:
    """For each canonical keypoint, the position of its node in the SDK's node array.

    ``node_infos``: sequence of objects with chainType, fingerJointType (the SDK's NodeInfo).
    Raises DeviceError naming the keypoints the skeleton lacks.
    """
    where = {}
    for position, info in enumerate(node_infos):
        if info.chainType == CHAIN_HAND:
            where.setdefault("wrist", position)
        elif info.chainType in CHAIN_FINGERS and info.fingerJointType in JOINTS:
            where[f"{CHAIN_FINGERS[info.chainType]}_{JOINTS[info.fingerJointType]}"] = position
    missing = [name for name in KEYPOINT_NAMES if name not in where]
    if missing:
        raise DeviceError(f"MANUS skeleton lacks {missing}: the glove's raw skeleton is not the 25-node hand "
                          f"this driver expects")
    return np.array([where[name] for name in KEYPOINT_NAMES])


def hand_side(node_infos) -> str:
    """'left' or 'right' from the nodes' Side."""
    sides = {SIDE.get(info.side, "invalid") for info in node_infos} - {"invalid", "center"}
    if len(sides) != 1:
        raise DeviceError(f"MANUS skeleton has sides {sorted(sides)}; expected one hand")
    return sides.pop()


def parent_indices(node_infos) -> np.ndarray:
    """For each node, the position of its parent in the same array (-1 for the hand root)."""
    position_of = {info.nodeId: i for i, info in enumerate(node_infos)}
    parents = []
    for i, info in enumerate(node_infos):
        parent = position_of.get(info.parentId, -1)
        parents.append(-1 if info.chainType == CHAIN_HAND or parent == i else parent)
    return np.array(parents)


def root_frame_positions(local_positions: np.ndarray, local_rotations: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Node positions (n, 3) in the hand root's frame from transforms relative to each node's parent
    (the SDK's local coordinates): forward kinematics down the NodeInfo parent chain. Rotations wxyz."""
    n = len(parents)
    R = [None] * n
    p = [None] * n

    def solve(i: int, depth: int = 0):
        if p[i] is not None:
            return
        if depth > n:
            raise DeviceError("MANUS skeleton: the node parents form a cycle")
        if parents[i] < 0:  # the root: the origin of its own frame
            R[i], p[i] = np.eye(3), np.zeros(3)
            return
        j = parents[i]
        solve(j, depth + 1)
        p[i] = p[j] + R[j] @ local_positions[i]
        R[i] = R[j] @ quat_to_matrix(local_rotations[i])

    for i in range(n):
        solve(i)
    return np.array(p)


def wrist_frame_keypoints(positions: np.ndarray, order: np.ndarray, R_wrist_sdk: np.ndarray,
                          root_rotation: np.ndarray | None = None) -> np.ndarray:
    """Canonical (25, 3) keypoints in the wrist frame (metres) from SDK node positions (n, 3).

    ``positions`` are in one frame whose orientation relative to the hand root is ``root_rotation``
    (wxyz; the SDK's world coordinates give the root node's rotation; None when the positions
    are already in the root's frame, as from ``root_frame_positions``). They are taken relative
    to the root, expressed in the root's axes, then rotated by ``R_wrist_sdk`` from the SDK's hand
    axes into the wrist frame convention (docs/episode-format.md).
    """
    ordered = positions[order]
    relative = ordered - ordered[0]
    if root_rotation is not None:
        relative = relative @ quat_to_matrix(root_rotation)  # R_world_root^T applied to each row
    return relative @ np.asarray(R_wrist_sdk, dtype=float).T
