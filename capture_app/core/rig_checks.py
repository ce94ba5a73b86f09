"""The rig check's judgements: pure functions from a scripted check's recorded arrays to verdict lines.

Each function takes arrays (times in seconds of one clock, poses as 4x4, keypoints in metres in the wrist frame,
orientations as 3x3) and returns a ``CheckLine``: ``passed``, a one-line ``text`` with the figures, and ``fix``,
what to do when it fails. No I/O, no threads; ``capture_app/recorder/rig_check.py`` runs the script and feeds
these from the check's own episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from capture_app.core.hand import FINGERTIP_INDICES, KEYPOINT_PARENTS
from capture_app.core.rotation_series import rotvec

JITTER_LIMIT_MM = 1.0
JITTER_LIMIT_DEG = 0.2
BONE_STD_LIMIT_MM = 2.0
HAND_SIZE_M = (0.12, 0.26)  # wrist to the middle fingertip of an open hand
HAND_EYE_LIMIT_DEG = 0.5
LATENCY_LIMIT_MS = 8.0
TABLE_TILT_LIMIT_DEG = 2.0

# The scripted check: (step, start_s, end_s after the check's start, the prompt shown, sent and spoken)
CHECK_STEPS = (
    ("hold_still", 0.0, 5.0),
    ("turn_head", 5.0, 11.0),
    ("rotate_left_wrist", 11.0, 15.0),
    ("rotate_right_wrist", 15.0, 19.0),
    ("open_close_left", 19.0, 22.0),
    ("open_close_right", 22.0, 25.0),
    ("hands_on_table", 25.0, 30.0),
)
PROMPTS = {
    "hold_still": "Hold still: head and hands, five seconds.",
    "turn_head": "Turn your head slowly left and right, and nod.",
    "rotate_left_wrist": "Rotate your left wrist back and forth. Keep the right hand still.",
    "rotate_right_wrist": "Rotate your right wrist back and forth. Keep the left hand still.",
    "open_close_left": "Open and close your left hand.",
    "open_close_right": "Open and close your right hand.",
    "hands_on_table": "Put both hands flat on the table, in view of the top camera, and slide them left and right "
                      "(about 5 cm).",
}


@dataclass
class CheckLine:
    """One verdict line of the rig check."""

    name: str
    passed: bool
    text: str
    fix: str = ""
    figures: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<22} {self.text}" + ("" if self.passed else f"  -> {self.fix}")


def tracker_jitter(name: str, T: np.ndarray) -> CheckLine:
    """Jitter of a tracker held still: RMS distance of positions from their mean (mm) and of rotations from
    their mean (deg). ``T`` (n, 4, 4) during the 'hold still' step."""
    if len(T) < 10:
        return CheckLine(f"jitter {name}", False, "too few samples while holding still", "check the tracker's stream")
    p = T[:, :3, 3]
    pos_mm = 1000 * float(np.sqrt(np.mean(np.sum((p - p.mean(axis=0)) ** 2, axis=1))))
    mean_R = np.linalg.svd(T[:, :3, :3].mean(axis=0))
    R0 = mean_R[0] @ mean_R[2]
    rot_deg = float(np.degrees(np.sqrt(np.mean(np.sum(rotvec(R0.T @ T[:, :3, :3]) ** 2, axis=1)))))
    ok = pos_mm <= JITTER_LIMIT_MM and rot_deg <= JITTER_LIMIT_DEG
    return CheckLine(f"jitter {name}", ok, f"at rest {pos_mm:.2f} mm, {rot_deg:.3f} deg RMS (limit {JITTER_LIMIT_MM} mm, "
                     f"{JITTER_LIMIT_DEG} deg)", f"{name}: check its lighthouse view (occlusion, reflections), "
                     f"re-run the SteamVR room setup, or replace the tracker", {"mm": pos_mm, "deg": rot_deg})


def glove_shape(hand: str, keypoints: np.ndarray) -> CheckLine:
    """Keypoints (n, 25, 3) finite, bone lengths constant (std per bone), hand size plausible."""
    name = f"glove {hand}"
    if len(keypoints) == 0:
        return CheckLine(name, False, "no keypoints", f"the {hand} glove's stream delivered nothing: check its dongle")
    finite = np.isfinite(keypoints).all(axis=(1, 2))
    if not finite.all():
        return CheckLine(name, False, f"{int((~finite).sum())} samples with non-finite keypoints",
                         f"recalibrate the {hand} glove in the MANUS software", {"non_finite": int((~finite).sum())})
    bones = [(i, p) for i, p in enumerate(KEYPOINT_PARENTS) if p >= 0]
    lengths = np.stack([np.linalg.norm(keypoints[:, i] - keypoints[:, p], axis=1) for i, p in bones], axis=1)
    worst_mm = 1000 * float(lengths.std(axis=0).max())
    size = float(np.median(np.linalg.norm(keypoints[:, FINGERTIP_INDICES[2]], axis=1)))
    ok = worst_mm <= BONE_STD_LIMIT_MM and HAND_SIZE_M[0] <= size <= HAND_SIZE_M[1]
    return CheckLine(name, ok, f"bone lengths constant to {worst_mm:.2f} mm, hand size {size * 100:.1f} cm",
                     f"recalibrate the {hand} glove (MANUS Core: hand size and finger calibration)",
                     {"bone_std_mm": worst_mm, "size_m": size})


def glove_handedness(stream_hand: str, keypoints: np.ndarray) -> CheckLine:
    """The glove on the stream of ``stream_hand`` is that hand: the wrist frames (capture-system.md) put a left
    hand's fingertips at +x and a right hand's at -x (its +x runs along the forearm)."""
    tips_x = float(np.median(keypoints[:, list(FINGERTIP_INDICES[1:]), 0])) if len(keypoints) else 0.0
    is_left = tips_x > 0
    ok = is_left == (stream_hand == "left")
    return CheckLine(f"glove {stream_hand} side", ok, f"the {stream_hand}_glove stream carries a "
                     f"{'left' if is_left else 'right'} hand (fingertips at x = {tips_x * 100:+.1f} cm)",
                     "the gloves are swapped: put each glove on its own hand (or swap the glove serials in the rig "
                     "config)", {"tips_x_m": tips_x})


def speed_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two angular-speed series on one time grid (0 when either is constant)."""
    a, b = np.asarray(a, float) - np.mean(a), np.asarray(b, float) - np.mean(b)
    d = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / d) if d > 0 else 0.0


def roles(glove_speed: dict[str, np.ndarray], tracker_speed: dict[str, np.ndarray]) -> CheckLine:
    """Each glove's IMU turns with its own wrist tracker: angular speeds on one grid while the wrists rotate.
    ``glove_speed`` hand -> (n,); ``tracker_speed`` role (head, left_wrist, right_wrist) -> (n,)."""
    corr = {(h, r): speed_correlation(glove_speed[h], tracker_speed[r]) for h in glove_speed for r in tracker_speed}
    best = {h: max(tracker_speed, key=lambda r: corr[(h, r)]) for h in glove_speed}
    ok = all(best[h] == f"{h}_wrist" for h in glove_speed)
    figures = {f"{h}~{r}": round(c, 3) for (h, r), c in corr.items()}
    seen = ", ".join(f"{h} glove moves with the {best[h].replace('_', ' ')} tracker ({corr[(h, best[h])]:.2f})"
                     for h in sorted(glove_speed))
    return CheckLine("tracker roles", ok, seen, "the tracker roles do not match the gloves: swap the trackers' "
                     "straps, or swap tracker_serials left_wrist/right_wrist in the calibration", figures)


def hand_eye(residuals_deg: np.ndarray, mount_error_deg: float | None = None,
             correction_deg: tuple | None = None) -> CheckLine:
    """The ego camera's rotation against the head tracker's through T_headtracker_cam: per-pair residuals, and
    the mount rotation solved from the pairs (hand-eye) against the calibrated one (``mount_error_deg``)."""
    if len(residuals_deg) < 5:
        return CheckLine("ego vs head tracker", False, "too few ego frame pairs with features while turning the head",
                         "check the ego camera's view (lens cap, light) and turn the head when prompted")
    value = float(np.median(residuals_deg))
    error = 0.0 if mount_error_deg is None else float(mount_error_deg)
    solved = "" if mount_error_deg is None else f"; the mount solved from them is {error:.2f} deg off the calibration"
    fix = "the camera mount moved against the head tracker: re-seat it and recalibrate (`capture-app calibrate`)"
    if correction_deg is not None:
        fix += f"; estimated correction T_headtracker_cam @ rot({', '.join(f'{c:.2f}' for c in correction_deg)} deg)"
    return CheckLine("ego vs head tracker", value <= HAND_EYE_LIMIT_DEG and error <= HAND_EYE_LIMIT_DEG,
                     f"hand-eye residual {value:.3f} deg median over {len(residuals_deg)} pairs{solved} "
                     f"(limit {HAND_EYE_LIMIT_DEG})", fix, {"median_deg": value, "mount_error_deg": error})


# what the operator does for a stream's latency to be measured (its check step)
LATENCY_MOTION = {"top_camera": "put both hands on the table in the top camera's view and slide them left and "
                                "right when prompted"}


def latency(stream: str, lag_ms: float | None, offset_ms: float, missing: str | None = None) -> CheckLine:
    """A stream's lag against the trackers from motion (None: not measurable; ``missing``: why there was nothing
    to measure, e.g. no frames of that stream)."""
    if missing is not None:
        return CheckLine(f"latency {stream}", False, f"not measurable: {missing}",
                         f"check the {stream} stream (`capture-app doctor`) and run the check again")
    if lag_ms is None:
        return CheckLine(f"latency {stream}", False, "not measurable: too little motion",
                         LATENCY_MOTION.get(stream, "turn the head (rotate the wrists) when prompted"))
    return CheckLine(f"latency {stream}", abs(lag_ms) <= LATENCY_LIMIT_MS, f"{lag_ms:+.1f} ms against the trackers "
                     f"(limit {LATENCY_LIMIT_MS:g})", f"set latency_offsets_ms.{stream} to {offset_ms + lag_ms:.1f} in "
                     f"the calibration", {"lag_ms": lag_ms})


def table_plane(normal_world: np.ndarray | None) -> CheckLine:
    """The table plane seen by the top camera's depth, put in the world by T_world_topcam: level (+y up)."""
    if normal_world is None:
        return CheckLine("table plane", False, "no plane in the top camera's depth", "clear the table and check "
                         "the top camera's depth stream")
    tilt = float(np.degrees(np.arccos(np.clip(abs(normal_world[1]), -1, 1))))
    return CheckLine("table plane", tilt <= TABLE_TILT_LIMIT_DEG, f"the top camera's table is {tilt:.2f} deg off level "
                     f"through the calibration (limit {TABLE_TILT_LIMIT_DEG:g})", "the top camera moved: recalibrate "
                     "it (`capture-app calibrate`)", {"tilt_deg": tilt})


def fit_plane(points: np.ndarray) -> np.ndarray | None:
    """Unit normal (3,) of the dominant plane through points (n, 3), metres: a least-squares fit, refit on the
    points within 1 cm of it (hands and objects drop out); None with fewer than 100 points."""
    points = points[np.isfinite(points).all(axis=1)]
    for _ in range(2):
        if len(points) < 100:
            return None
        centre = np.median(points, axis=0)
        normal = np.linalg.svd(points - centre, full_matrices=False)[2][-1]
        points = points[np.abs((points - centre) @ normal) < 0.01]
    return normal
