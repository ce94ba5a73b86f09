"""Mount slip: a step in the rotation between two orientation sources that are joined by a mount.

Two sources (reference: a VIVE tracker; observed: the glove's IMU, or the ego camera's orientation chained
from its frame-to-frame rotations) are related by ``R_obs(t) = W R_ref(t) M(t)``: ``M = R_ref_obs``, the mount
(the rotation of ``T_headtracker_cam``, or of the tracker-to-IMU strap), and W an unknown constant between
their world frames. From the first instant of a track, ``M(t) = G(t)^T M(0) V(t)`` with the reference's motion
``G = R_ref(0)^T R_ref(t)`` and the observed one ``V = R_obs(0)^T R_obs(t)``; W cancels. With ``M(0) = X`` the
calibrated mount, ``U(t) = X^T M(t)`` is the mount's change since the track began: the identity while it
holds (up to the sources' noise, and to a calibration error times how far the body turned), and a step of
exactly the slip when the mount moves.

``SlipDetector`` keeps that track and, for each instant with ``window_s`` of track on both sides, compares the
mean rotation after with the mean before: a difference over ``threshold_deg`` is a slip, its size the
difference, its instant the split that maximises it, its size the track's change over the three increments
around that split. ``mount`` is the current estimate (``X @ U`` over the last
window), ``slips`` what it has seen. Pure: no I/O, no threads, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture_app.core.rotation_series import exp_rotvec, rotvec

DEFAULT_THRESHOLD_DEG = 1.0
DEFAULT_WINDOW_S = 1.5
REORIGIN_S = 20.0  # the track's origin moves to its current value this often
FLATNESS = 0.3  # a step's sides may spread at most this fraction of the step (RMS)


@dataclass(frozen=True)
class Slip:
    """One detected mount slip: at ``at_s`` (track time, s) the mount turned by ``rotvec_deg`` (in the observed
    body's frame: new mount = old mount @ exp(rotvec)), ``size_deg`` its angle; seen at ``detected_s``."""

    at_s: float
    size_deg: float
    rotvec_deg: tuple[float, float, float]
    detected_s: float

    @property
    def delta(self) -> np.ndarray:
        """The slip as a rotation matrix (3, 3): corrected mount = mount @ delta."""
        return exp_rotvec(np.radians(np.asarray(self.rotvec_deg)))


class SlipDetector:
    """Watches one mount. ``add`` takes common instants of both sources; returns the slips found in them.

    ``mount`` (3, 3): the calibrated ``R_ref_obs``. ``max_gap_s``: a gap longer than this between instants
    (tracking lost, samples missing) restarts the track, so no step is inferred across missing data.
    """

    def __init__(self, mount: np.ndarray, threshold_deg: float = DEFAULT_THRESHOLD_DEG,
                 window_s: float = DEFAULT_WINDOW_S, max_gap_s: float = 0.25, keep_s: float = 10.0):
        if not threshold_deg > 0 or not window_s > 0:
            raise ValueError("SlipDetector: threshold_deg and window_s must be > 0")
        self.initial_mount = np.array(mount, dtype=float)
        self.mount = self.initial_mount.copy()
        self.threshold_deg = float(threshold_deg)
        self.window_s = float(window_s)
        self.max_gap_s = float(max_gap_s)
        self.keep_s = max(float(keep_s), 3 * self.window_s)
        self.slips: list[Slip] = []
        self._t = np.zeros(0)
        self._v = np.zeros((0, 3))       # rotation vectors (rad) of the cumulative residual C
        self._origin: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # R_ref(0), R_obs(0), M(0)
        self._last_t: float | None = None
        self._origin_t = 0.0
        self._checked_until = -np.inf  # splits up to this time have been tested

    @property
    def net_change(self) -> np.ndarray:
        """The mount's change since the start over the last window (3, 3): mount now = initial mount @ this."""
        if len(self._t) < 3:
            return self.initial_mount.T @ self.mount
        recent = self._t >= self._t[-1] - self.window_s
        return exp_rotvec(self._v[recent].mean(axis=0))

    def restart(self) -> None:
        """Start a new track at the next instant (the observed source's own world changed: a restarted chain)."""
        self._t, self._v, self._origin = np.zeros(0), np.zeros((0, 3)), None
        self._checked_until = (self._last_t or 0.0) + self.window_s

    def add(self, t_s: np.ndarray, R_ref: np.ndarray, R_obs: np.ndarray) -> list[Slip]:
        """Add instants ``t_s`` (n,) increasing, with both orientations (n, 3, 3) at them; the new slips."""
        t_s = np.asarray(t_s, dtype=float)
        R_ref = np.asarray(R_ref, dtype=float)
        R_obs = np.asarray(R_obs, dtype=float)
        if len(t_s) == 0:
            return []
        # repeated or out-of-order instants are skipped
        previous = np.concatenate([[self._last_t if self._last_t is not None else -np.inf], t_s[:-1]])
        keep = t_s > np.maximum.accumulate(previous)
        t_s, R_ref, R_obs = t_s[keep], R_ref[keep], R_obs[keep]
        times, values = [], []
        k = 0
        while k < len(t_s):  # in runs without a gap or a new origin, each run in one batch
            if self._last_t is not None and t_s[k] - self._last_t > self.max_gap_s:  # missing data: a new track
                self._t, self._v = np.zeros(0), np.zeros((0, 3))
                self._checked_until = t_s[k] + self.window_s
                times, values, self._origin = [], [], None
            if self._origin is None:
                self._origin = (R_ref[k], R_obs[k], self.mount.copy())
                self._origin_t = float(t_s[k])
            gaps = np.flatnonzero(np.diff(t_s[k:]) > self.max_gap_s)
            end = k + (int(gaps[0]) + 1 if len(gaps) else len(t_s) - k)  # the run: [k, end)
            late = np.flatnonzero(t_s[k:end] - self._origin_t > REORIGIN_S)
            if len(late):
                end = k + int(late[0]) + 1  # the run ends at the instant that moves the origin (its value: old origin)
            R_ref0, R_obs0, M0 = self._origin
            # U = X^T G^T M0 V with G = R_ref0^T R_ref, V = R_obs0^T R_obs: X^T R_ref^T (R_ref0 M0 R_obs0^T) R_obs
            C = self.initial_mount.T @ np.swapaxes(R_ref[k:end], -1, -2) @ (R_ref0 @ M0 @ R_obs0.T) @ R_obs[k:end]
            run = rotvec(C)
            times.append(t_s[k:end])
            values.append(run)
            self._last_t = float(t_s[end - 1])
            if len(late):
                # a new origin at this instant, with the mount the track has here (exactly continuous), so the
                # observed source's accumulated drift (a chained camera rotation's random walk) cannot act as a
                # mount error that the body's turning makes wobble
                # ... but only while the track is off the mount known so far by what could be a slip in progress
                # (over half the threshold): otherwise the origin takes the known mount, so the observed source's
                # drift (a chained camera rotation's random walk, ~0.3 deg in 20 s) does not pile up in the origin
                # over minutes and make head turns wobble the track past the threshold (30 min: 202 false alarms)
                here = self.initial_mount @ exp_rotvec(run[-1])
                off = np.degrees(np.linalg.norm(rotvec(self.mount.T @ here)))
                self._origin = (R_ref[end - 1], R_obs[end - 1], here if off > 0.5 * self.threshold_deg else self.mount.copy())
                self._origin_t = float(t_s[end - 1])
            k = end
        if times:
            self._t = np.concatenate([self._t, *times])
            self._v = np.concatenate([self._v, *values])
        if len(self._t):
            keep = self._t >= self._t[-1] - self.keep_s
            self._t, self._v = self._t[keep], self._v[keep]
        return self._detect()

    def _steps(self, idx: np.ndarray) -> np.ndarray:
        """``_step`` of many indices at once (m, 3): window means from cumulative sums, one batch of rotations."""
        t, v, w = self._t, self._v, self.window_s
        out = np.zeros((len(idx), 3))
        if len(idx) == 0:
            return out
        cumulative = np.concatenate([np.zeros((1, 3)), np.cumsum(v, axis=0)])
        lo = np.searchsorted(t, t[idx] - w, side="left")
        hi = np.searchsorted(t, t[idx] + w, side="right")
        n_before, n_after = idx - lo, hi - idx
        ok = (n_before >= 3) & (n_after >= 3)
        if ok.any():
            i, lo, hi = idx[ok], lo[ok], hi[ok]
            before = (cumulative[i] - cumulative[lo]) / (i - lo)[:, None]
            after = (cumulative[hi] - cumulative[i]) / (hi - i)[:, None]
            out[ok] = rotvec(np.swapaxes(exp_rotvec(before), -1, -2) @ exp_rotvec(after))
        return out

    def _step(self, i: int) -> np.ndarray:
        """The rotation vector (rad, body frame) from the mean mount change in the window before index i to the
        mean in the window from i: ``U_before^T U_after``."""
        t, v, w = self._t, self._v, self.window_s
        before = (t >= t[i] - w) & (t < t[i])
        after = (t >= t[i]) & (t <= t[i] + w)
        if before.sum() < 3 or after.sum() < 3:
            return np.zeros(3)
        return rotvec(exp_rotvec(v[before].mean(axis=0)).T @ exp_rotvec(v[after].mean(axis=0)))

    def _flat_around(self, i: int) -> bool:
        """A slip is a step between two flat stretches: the spread of the track (RMS about its mean) in the
        window before i and in the 1.75 windows after must stay under FLATNESS of the step across i."""
        t, v, w = self._t, self._v, self.window_s
        step = np.linalg.norm(self._step(i))
        for part in ((t >= t[i] - w) & (t < t[i]), (t >= t[i] + 0.75 * w) & (t <= t[i] + 1.75 * w)):
            if part.sum() >= 3 and np.sqrt(np.mean(np.sum((v[part] - v[part].mean(axis=0)) ** 2, axis=1))) > FLATNESS * step:
                return False
        return True

    def _detect(self) -> list[Slip]:
        t = self._t
        if len(t) < 6 or t[-1] - t[0] < 2 * self.window_s:
            return []
        found = []
        # a split is tested once the track reaches 1.75 windows past it, so the best split within 0.75 window
        # after it (where the step really is) has its full window after it too
        candidates = np.flatnonzero((t > self._checked_until) & (t >= t[0] + self.window_s)
                                    & (t <= t[-1] - 1.75 * self.window_s))
        if len(candidates) == 0:
            return []
        over = np.degrees(np.linalg.norm(self._steps(candidates), axis=1)) > self.threshold_deg
        last_candidate = t[candidates[-1]]
        for i in candidates[over]:  # rare: the full tests, in order, only where the window means differ
            if t[i] <= self._checked_until:
                continue
            self._checked_until = t[i]
            if not self._flat_around(i):
                continue  # the track wobbles (a latency change, fast motion against a lagging source): no step
            # the slip's instant: the split within a window of this one with the largest step
            near = np.flatnonzero((t >= t[i]) & (t <= t[i] + self.window_s * 0.75) & (t <= t[-1] - self.window_s))
            best = int(near[np.argmax(np.linalg.norm(self._steps(near), axis=1))])
            # its size from the few increments around the split: the track is a random walk (chained noise), so
            # the increments across the slip carry it with less noise than window means do
            lo, hi = max(best - 2, 0), min(best + 1, len(t) - 1)
            step = rotvec(exp_rotvec(self._v[lo]).T @ exp_rotvec(self._v[hi]))
            if np.degrees(np.linalg.norm(step)) < 0.75 * self.threshold_deg:
                self._checked_until = t[i]
                continue  # the windows differ but nothing changed at one instant: a drift, not a slip
            slip = Slip(float(t[best]), float(np.degrees(np.linalg.norm(step))), tuple(np.degrees(step).tolist()),
                        float(t[-1]))
            found.append(slip)
            self.slips.append(slip)
            after = (t >= t[best]) & (t <= t[best] + self.window_s)
            self.mount = self.initial_mount @ exp_rotvec(self._v[after].mean(axis=0))
            self._checked_until = t[best] + self.window_s  # no second alarm for the same step
        self._checked_until = max(self._checked_until, last_candidate)  # every candidate has been tested
        return found
