"""What the monitor draws, computed without Qt: overlay pixels and per-view data.

``ViewState`` is built from a live ``SyncedTick`` or from a row of a recorded episode,
so live and review use the same views. Pure functions, testable without a screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calibration.model import CameraIntrinsics
from capture_app.core.geometry import make_transform, rotation_from_6d, transform_points
from capture_app.core.hand import FINGERTIP_INDICES
from capture_app.episode.image_codec import decode_jpeg

AXIS_LENGTH_M = 0.04
HANDS = ("left", "right")


@dataclass
class ViewState:
    """Everything the views show for one instant. Poses 4x4 (None if invalid); images RGB uint8."""

    t_ns: int = 0
    ego_image: np.ndarray | None = None
    top_image: np.ndarray | None = None
    top_depth: np.ndarray | None = None
    T_cam_wrist: dict[str, np.ndarray | None] = field(default_factory=lambda: {h: None for h in HANDS})
    keypoints: dict[str, np.ndarray | None] = field(default_factory=lambda: {h: None for h in HANDS})
    T_world_cam: np.ndarray | None = None
    T_world_wrist: dict[str, np.ndarray | None] = field(default_factory=lambda: {h: None for h in HANDS})
    stream_status: dict[str, int] = field(default_factory=dict)
    hand_valid: dict[str, bool] = field(default_factory=lambda: {h: True for h in HANDS})  # wrist and fingers


def image_from(message) -> np.ndarray | None:
    """The RGB image of a camera message (raw, or JPEG decoded); None for an H.264 frame, which does not
    decode alone (``LiveVideo`` decodes a stream of them)."""
    if message is None:
        return None
    color = message.arrays["color"]
    encoding = message.encodings.get("color")
    if encoding == "jpeg":
        return decode_jpeg(color)
    return None if encoding == "h264" else color


def state_from_tick(tick) -> ViewState:
    """A live tick's view state."""
    top = tick.frames.get("top_camera")
    return ViewState(
        t_ns=tick.t_eval_ns,
        ego_image=image_from(tick.frames.get("ego_camera")),
        top_image=image_from(top),
        top_depth=top.arrays.get("depth") if top is not None else None,
        T_cam_wrist=dict(tick.T_cam_wrist), keypoints=dict(tick.keypoints),
        T_world_cam=tick.T_world_cam, T_world_wrist=dict(tick.T_world_wrist),
        stream_status={s: e.status for s, e in tick.evaluations.items()},
        hand_valid=hand_validity(tick.action_valid))


DISPLAY_WIDTH = 960  # live images wider than this are decoded at half size: the view shows no more pixels


class LiveVideo:
    """The monitor's decoders of cameras a recorder sends as H.264: each view carries the frames since
    the previous one (docs/control.md); they are decoded in order, and after a lost view the camera
    waits for its next keyframe (at most ``[writer] video_keyframe_interval`` frames)."""

    def __init__(self):
        self._decoders: dict = {}
        self._next_packet: dict[str, int | None] = {}   # the packet number that continues the decoded stream
        self._image: dict[str, tuple[int, np.ndarray]] = {}

    def image(self, key: str, frame: dict) -> np.ndarray | None:
        """The decoded image of ``frame["seq"]``, or None when it could not be decoded yet."""
        decoder = self._decoders.get(key)
        if decoder is None:
            from capture_app.episode.video_codec import VideoDecoder
            decoder = self._decoders[key] = VideoDecoder()
        for seq, keyframe, number, packet in frame["packets"]:
            if not keyframe and number != self._next_packet.get(key):
                self._next_packet[key] = None  # a packet is missing: wait for a keyframe
                continue
            image = decoder.decode(packet, image=seq == frame["seq"])  # only the shown frame in RGB
            self._next_packet[key] = number + 1
            if image is not None:
                self._image[key] = (seq, image)
        seq, image = self._image.get(key, (None, None))
        return image if seq == frame["seq"] else None


def _image_of_view(frame: dict | None, key: str = "", video: LiveVideo | None = None) -> np.ndarray | None:
    if frame is None:
        return None
    if frame["encoding"] == "h264":
        return video.image(key, frame) if video is not None else None
    if frame["encoding"] != "jpeg":
        return np.asarray(frame["color"])
    return decode_jpeg(frame["color"], reduce=2 if frame.get("shape", [0, 0])[1] > DISPLAY_WIDTH else 1)


def hand_validity(action_valid) -> dict[str, bool]:
    """Per hand: wrist and fingers both valid (``action_valid`` in VALIDITY_NAMES order:
    left_wrist, right_wrist, left_fingers, right_fingers)."""
    valid = [bool(v) for v in action_valid]
    return {"left": valid[0] and valid[2], "right": valid[1] and valid[3]}


def state_from_view(view: dict, video: LiveVideo | None = None) -> ViewState:
    """The view state of a recorder's ``view`` message (docs/control.md); images decoded here, in the
    monitor (H.264 cameras through ``video``, which must see every view in order)."""
    top = view.get("top")
    return ViewState(
        t_ns=int(view["t_eval_ns"]), ego_image=_image_of_view(view.get("ego"), "ego", video),
        top_image=_image_of_view(top, "top", video),
        top_depth=None if top is None else top.get("depth"),
        T_cam_wrist=dict(view["T_cam_wrist"]), keypoints=dict(view["keypoints"]), T_world_cam=view["T_world_cam"],
        T_world_wrist=dict(view["T_world_wrist"]), stream_status=dict(view["stream_status"]),
        hand_valid=hand_validity(view["action_valid"]))


def wrist_transform_from_action(action: np.ndarray, hand: str) -> np.ndarray | None:
    """``T_cam_wrist`` from the 48-D action (None when NaN)."""
    h = HANDS.index(hand)
    w = action[9 * h: 9 * h + 9]
    if np.isnan(w).any():
        return None
    return make_transform(rotation_from_6d(w[3:]), w[:3])


def intrinsics_for(intrinsics: CameraIntrinsics, image: np.ndarray) -> CameraIntrinsics:
    """The calibration's intrinsics at the resolution of ``image``."""
    h, w = image.shape[:2]
    return intrinsics if (w, h) == (intrinsics.width, intrinsics.height) else intrinsics.scaled(w, h)


def fingertip_pixels(state: ViewState, intrinsics: CameraIntrinsics) -> dict[str, np.ndarray]:
    """Per hand, the 5 fingertips' pixel positions (5, 2) where the calibration projects them (NaN if unknown)."""
    out = {}
    for hand in HANDS:
        T, k = state.T_cam_wrist[hand], state.keypoints[hand]
        if T is None or k is None:
            out[hand] = np.full((5, 2), np.nan)
        else:
            out[hand] = intrinsics.project(transform_points(T, np.asarray(k)[list(FINGERTIP_INDICES)]))
    return out


def wrist_axes_pixels(state: ViewState, intrinsics: CameraIntrinsics) -> dict[str, np.ndarray]:
    """Per hand, pixels (4, 2) of the wrist origin and the ends of its x, y, z axes (NaN if unknown)."""
    points = np.vstack([np.zeros(3), np.eye(3) * AXIS_LENGTH_M])
    out = {}
    for hand in HANDS:
        T = state.T_cam_wrist[hand]
        out[hand] = np.full((4, 2), np.nan) if T is None else intrinsics.project(transform_points(T, points))
    return out
