"""Mapping MANUS raw-skeleton nodes into the canonical 25 keypoints (capture_app.hand).

Node order differs between SDK versions and modes, so nodes are matched by their
NodeInfo (chain type and finger joint type), never by raw index. Pure functions.
"""

from __future__ import annotations

import numpy as np

from capture_app.errors import DeviceError
from capture_app.hand import KEYPOINT_NAMES
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


def wrist_frame_keypoints(positions: np.ndarray, order: np.ndarray, R_wrist_sdk: np.ndarray) -> np.ndarray:
    """Canonical (25, 3) keypoints in the wrist frame (metres) from SDK node positions (n, 3).

    Positions are taken relative to the wrist node, then rotated by ``R_wrist_sdk`` from the
    SDK's hand axes into the wrist frame convention (docs/episode-format.md).
    """
    ordered = positions[order]
    return (ordered - ordered[0]) @ np.asarray(R_wrist_sdk, dtype=float).T
