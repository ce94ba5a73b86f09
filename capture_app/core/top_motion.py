"""The top camera's latency from motion: the hands seen sliding in its depth against their wrist trackers.

Frames and units (T_a_b maps points in frame b to frame a): the world is the lighthouse frame (metres, +y up);
the top camera's frame is the computer-vision one (origin at the optical centre, +z along the optical axis, +x to
the right of the image, +y down), put in the world by the calibration's ``T_world_topcam``. Image positions are
normalised image coordinates, ``x = (u - cx) / fx``, ``y = (v - cy) / fy`` (dimensionless: the tangent of the
angle off the optical axis, ~radians near it), so no figure here depends on the image's resolution.

- Observed: in each depth frame (metres, 0 = no depth), the pixels standing more than ``MIN_HEIGHT_M`` (2.5 cm)
  above the table plane (fitted from the depth itself: the back of a hand flat on it, not its fingers) inside a
  fixed circle per hand (around where that hand's wrist is over the analysed span); their centroid, per hand and
  frame.
- Predicted: each wrist's origin, ``T_world_wristtracker @ T_wristtracker_wrist`` from its tracker and the
  calibration, projected through ``inv(T_world_topcam)`` and the top camera's intrinsics.

While the hands slide flat on the table (a translation nearly parallel to the image plane: the rig check's
``hands_on_table`` step), a hand's centroid and its wrist's projection differ by a constant, so their image
velocities agree at the same true instant. If the camera's stamps are ``lag`` late (after the calibration's
latency offsets), ``v_obs(t) = v_pred(t - lag)``. As ``latency_drift.estimate_lag`` does with angular speeds, the
observed velocity is taken over intervals between frames (here from each frame to the first one ``SPAN_S`` later)
and the predicted one over the same intervals shifted by the lag (both averaged alike); the lag minimises their
trimmed mean squared difference, found by the same scan (``latency_drift.scan_lag``).
Pure: no I/O, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture_app.core.latency_drift import scan_lag
from capture_app.core.rig_checks import fit_plane

MIN_IMAGE_SPEED_STD_PER_S = 0.03  # below this the hands hardly move in the image (~2.5 cm/s at 0.8 m): no lag
# a pixel this far above the table is the back of a hand (or an arm, or an object): a hand flat on a table stands
# ~3 cm high at its knuckles, its fingers ~1-2 cm and moving on their own; the back of the hand moves with the wrist
MIN_HEIGHT_M = 0.025
MIN_PIXELS = 10                   # fewer above-table pixels in a hand's circle: that hand is not seen in that frame
MAX_RADIUS = 0.25                 # a hand's circle: at most this radius (normalised; ~20 cm at 0.8 m)
# the observed velocity is taken from each frame to the first one at least this much later: over one 33 ms frame
# interval a centroid's ~1 mm noise would swamp it; the slide (~1 Hz) is still resolved
SPAN_S = 0.2


@dataclass(frozen=True)
class ImageLagEstimate:
    """``lag_ms``: how late the camera's stamps are (positive: add it to its latency offset); ``rms_per_s``: the
    image-velocity residual at that lag (normalised image coordinates per second); ``intervals``: how many
    frame intervals (over all hands) were used."""

    lag_ms: float
    rms_per_s: float
    intervals: int


@dataclass(frozen=True)
class TopView:
    """The camera of the depth frames: its pinhole (pixels: ``fx, fy, cx, cy`` for a ``width`` x ``height`` image;
    no lens distortion) and its pose ``T_world_topcam`` (4, 4), metres."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    T_world_topcam: np.ndarray

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image coordinates (x, y), each (height, width), of every pixel's centre."""
        x = (np.arange(self.width) - self.cx) / self.fx
        y = (np.arange(self.height) - self.cy) / self.fy
        return np.meshgrid(x, y)

    def project(self, points_world: np.ndarray) -> np.ndarray:
        """World points (..., 3), metres -> normalised image coordinates (..., 2); NaN behind the camera."""
        T_cam_world = np.linalg.inv(self.T_world_topcam)
        cam = np.asarray(points_world, float) @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
        z = np.where(cam[..., 2] > 1e-6, cam[..., 2], np.nan)
        return cam[..., :2] / z[..., None]

    def points(self, depth_m: np.ndarray) -> np.ndarray:
        """Each pixel's point (height, width, 3) in the camera frame, metres (z = 0 where there is no depth)."""
        x, y = self.rays()
        z = np.asarray(depth_m, float)
        return np.stack([x * z, y * z, z], -1)


def table_plane(view: TopView, depth_m: np.ndarray, step: int = 4) -> tuple[np.ndarray, float] | None:
    """The table's plane in the camera frame from one depth frame (metres): (unit normal (3,) pointing toward the
    camera, offset d) with ``normal . p = d`` on the table; None when the depth holds no plane."""
    points = view.points(depth_m)[::step, ::step].reshape(-1, 3)
    points = points[points[:, 2] > 0.1]
    normal = fit_plane(points)
    if normal is None:
        return None
    normal = -normal if normal[2] > 0 else normal
    along = points @ normal
    d = float(np.median(along))
    return normal, float(np.median(along[np.abs(along - d) < 0.01]))


def wrist_points(T_world_wristtracker: np.ndarray, T_wristtracker_wrist: np.ndarray) -> np.ndarray:
    """The wrist frame's origin (m, 3) in the world, metres, from tracker poses (m, 4, 4) and the mount (4, 4)."""
    return (np.asarray(T_world_wristtracker) @ np.asarray(T_wristtracker_wrist))[:, :3, 3]


def hand_circles(predicted: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
    """A fixed circle per hand (centre (2,), radius; normalised image coordinates) from its predicted image
    track (m, 2) over the analysed span: around its median, radius half the distance to the nearest other hand's
    median (at most ``MAX_RADIUS``), so the circles never overlap and a hand moving inside its own does not change
    what is counted (a circle following the predicted track would bias the centroid by the lag itself)."""
    finite = [np.asarray(p, float)[np.all(np.isfinite(p), axis=1)] for p in predicted]
    centres = [np.median(p, axis=0) if len(p) else np.full(2, np.nan) for p in finite]
    circles = []
    for i, c in enumerate(centres):
        others = [np.linalg.norm(c - o) for j, o in enumerate(centres) if j != i and np.all(np.isfinite(o))]
        circles.append((c, float(min([MAX_RADIUS] + [0.5 * d for d in others]))))
    return circles


def hand_centroids(view: TopView, depth_m: np.ndarray, plane: tuple[np.ndarray, float],
                   circles: list[tuple[np.ndarray, float]], min_height_m: float = MIN_HEIGHT_M,
                   min_pixels: int = MIN_PIXELS) -> np.ndarray:
    """Per hand's circle, the centroid (normalised image coordinates) of the pixels of one depth frame (metres;
    0 = none) standing more than ``min_height_m`` above ``plane``: (hands, 2), NaN where too few are."""
    normal, d = plane
    x, y = view.rays()
    depth_m = np.asarray(depth_m, float)
    height = depth_m * (normal[0] * x + normal[1] * y + normal[2]) - d  # normal . p - d, p = depth * (x, y, 1)
    above = (depth_m > 0) & (height > min_height_m)
    out = np.full((len(circles), 2), np.nan)
    for i, (centre, radius) in enumerate(circles):
        if not np.all(np.isfinite(centre)):
            continue
        mask = above & ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius * radius)
        if mask.sum() >= min_pixels:
            out[i] = x[mask].mean(), y[mask].mean()
    return out


def estimate_image_lag(channels: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                       max_lag_s: float = 0.1, scan_step_s: float = 0.005, span_s: float = SPAN_S) -> ImageLagEstimate | None:
    """The camera's lag against the trackers from image motion.

    ``channels``: one per hand, ``(t_pred_s (m,), xy_pred (m, 2), t_obs_s (n,), xy_obs (n, 2))``: the predicted
    image track (the wrist projected, at the tracker's instants) and the observed one (the hand's centroid, at
    the frames' instants; NaN where not seen), seconds on one clock, normalised image coordinates. An observed
    position exactly equal to the one before is a repeated frame (a camera re-sending its last image under a new
    stamp) and is left out, as are frames not seen. The observed velocity is taken from each frame to the first
    one at least ``span_s`` later (across a gap: the longer interval), the prediction's over the same interval
    shifted by the lag. Intervals whose shifted span leaves the prediction's span are not used.
    None when too few intervals (20 over all hands) or too little motion (the observed velocity's standard
    deviation, or the prediction's at lag 0, under ``MIN_IMAGE_SPEED_STD_PER_S``) make the lag unobservable.
    """
    parts = []
    for t_pred, xy_pred, t_obs, xy_obs in channels:
        t_pred, xy_pred = np.asarray(t_pred, float), np.asarray(xy_pred, float)
        t_obs, xy_obs = np.asarray(t_obs, float), np.asarray(xy_obs, float)
        good = np.isfinite(t_pred) & np.all(np.isfinite(xy_pred), axis=1)
        order = np.argsort(t_pred[good], kind="stable")
        t_pred, xy_pred = t_pred[good][order], xy_pred[good][order]
        if len(t_pred) < 2:
            continue
        seen = np.isfinite(t_obs) & np.all(np.isfinite(xy_obs), axis=1)
        order = np.argsort(t_obs[seen], kind="stable")
        t_obs, xy_obs = t_obs[seen][order], xy_obs[seen][order]
        if len(t_obs) < 2:
            continue
        fresh = np.ones(len(t_obs), bool)
        fresh[1:] = np.any(xy_obs[1:] != xy_obs[:-1], axis=1)  # repeated frames out
        t_obs, xy_obs = t_obs[fresh], xy_obs[fresh]
        first = np.arange(len(t_obs))
        last = np.maximum(np.searchsorted(t_obs, t_obs + span_s - 1e-9), first + 1)
        first, last = first[last < len(t_obs)], last[last < len(t_obs)]
        starts, ends = t_obs[first], t_obs[last]
        inside = (ends > starts) & (starts - max_lag_s > t_pred[0]) & (ends + max_lag_s < t_pred[-1])
        if not inside.any():
            continue
        velocity = (xy_obs[last] - xy_obs[first])[inside] / (ends - starts)[inside, None]
        parts.append((t_pred, xy_pred, starts[inside], ends[inside], velocity))
    count = sum(len(p[2]) for p in parts)
    if count < 20 or np.std(np.concatenate([p[4] for p in parts])) < MIN_IMAGE_SPEED_STD_PER_S:
        return None
    keep = max(1, int(0.95 * count))
    predicted_now = np.concatenate([_predicted_velocity(part, np.zeros(1))[0] for part in parts])
    if np.std(predicted_now) < MIN_IMAGE_SPEED_STD_PER_S:  # the wrists stand still (a stuck tracker): every
        return None                                       # lag costs the same, the scan's edge would win

    def costs(lags: np.ndarray) -> np.ndarray:
        """The trimmed mean squared velocity difference (per s)^2 at each of ``lags`` (k,), in one batch."""
        lags = np.asarray(lags, dtype=float)
        squared = np.concatenate([np.sum((_predicted_velocity(part, lags) - part[4]) ** 2, axis=-1)
                                  for part in parts], axis=1)
        squared = np.partition(squared, keep - 1, axis=1)[:, :keep] if keep < squared.shape[1] else squared
        return squared.mean(axis=1)  # trimmed: a misdetected frame is no lag

    lag = scan_lag(costs, max_lag_s, scan_step_s)
    return ImageLagEstimate(lag * 1e3, float(np.sqrt(costs(np.array([lag]))[0])), count)


def _predicted_velocity(part: tuple, lags: np.ndarray) -> np.ndarray:
    """The predicted image velocity (k, n, 2) over each observed interval of ``part`` shifted by each of ``lags``
    (k,), seconds; ``part`` is ``(t_pred, xy_pred, starts, ends, observed velocity)``."""
    t_pred, xy_pred, starts, ends, _ = part
    a, b = starts[None] - lags[:, None], ends[None] - lags[:, None]
    return np.stack([(np.interp(b, t_pred, xy_pred[:, i]) - np.interp(a, t_pred, xy_pred[:, i])) / (ends - starts)
                     for i in range(2)], -1)
