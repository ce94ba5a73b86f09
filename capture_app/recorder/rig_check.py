"""``capture-app check``: a scripted ~30 s rig check, recorded as its own episode, then one verdict line per check.

The script is ``capture_app.core.rig_checks.CHECK_STEPS``; each step's prompt is printed, logged in the check
episode's ``/events`` (source ``check``) and published in the state feed (``status.check``), so a monitor can show
it and a cue speaker say it. A simulated rig performs the script itself (sim option ``head_motion`` /
``hand_motion`` = ``check``, its motion epoch at the check's start). The verdict (``analyse``) is computed from
the check's episode, so it can be recomputed later; it is stored in that episode (root attribute ``rig_check``)
and in ``OUT/rig_check_last.json``, which ``record --require-check HOURS`` reads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from calibration.model import Calibration, calibration_from_json
from calibration.plane import depth_geometry_from_device
from capture_app.core import hand_eye_rotation, rig_checks, top_motion
from capture_app.core.clock import now_ns
from capture_app.core.errors import CaptureError
from capture_app.core.geometry import pose_to_transform, quat_to_matrix
from capture_app.core.latency_drift import estimate_lag
from capture_app.core.rig_checks import CHECK_STEPS, PROMPTS, CheckLine
from capture_app.core.rotation_series import relative, resample, rotvec
from capture_app.core.visual_rotation import prepare, relative_rotation, scaled_K
from capture_app.episode.file import open_episode
from capture_app.episode.frames import FrameReader
from capture_app.rig.config import RigConfig, with_changes

LAST_CHECK_FILE = "rig_check_last.json"
START_LEAD_S = 8.0  # a simulated rig starts its script this long after the session starts


def run_check(config: RigConfig, out_dir: str | Path, say=print, lead_s: float = START_LEAD_S) -> tuple[Path, list[CheckLine]]:
    """Run the scripted check on the rig, record it, analyse it; (the check episode, its verdict lines)."""
    from capture_app.recorder.session import CaptureSession
    start_ns = now_ns() + int(lead_s * 1e9)
    if config.is_simulated:  # the simulated operator performs the script from its start
        config = with_changes(config, {d.name: {"head_motion": "check", "hand_motion": "check", "epoch_ns": start_ns}
                                       for d in config.drivers if d.type.startswith("sim_")})
    with CaptureSession(config) as session:
        session.check_prompt = {"step": "starting", "text": "Rig check starting: put the headset and gloves on."}
        say(session.check_prompt["text"])
        missing = session.wait_for_streams(max(1.0, (start_ns - now_ns()) / 1e9))
        if missing:
            raise CaptureError(f"rig check: stream(s) {missing} deliver nothing; fix them (`capture-app doctor`) "
                               f"and run the check again")
        if config.is_simulated and now_ns() > start_ns:
            raise CaptureError("rig check: the simulated rig took longer than its lead to start; run it again "
                               "(the machine is loaded) or pass a longer --lead")
        time.sleep(max(0.0, (start_ns - now_ns()) / 1e9))
        session.start_episode(out_dir, name=time.strftime("rigcheck-%Y%m%d-%H%M%S"), task="rig check",
                              instruction="scripted rig check")
        start_ns = session.episode_started_ns if not config.is_simulated else start_ns
        for step, begin, end in CHECK_STEPS:
            time.sleep(max(0.0, (start_ns + begin * 1e9 - now_ns()) / 1e9))
            session.check_prompt = {"step": step, "text": PROMPTS[step], "until_s": end}
            session.episodes.log_event("info", "check", f"prompt {step}: {PROMPTS[step]}")
            say(PROMPTS[step])
        time.sleep(max(0.0, (start_ns + CHECK_STEPS[-1][2] * 1e9 - now_ns()) / 1e9))
        session.check_prompt = {"step": "done", "text": "Rig check done: computing the verdict."}
        say(session.check_prompt["text"])
        path = session.stop_episode(attrs={"rig_check_start_ns": start_ns})
    lines = analyse(path)
    store_verdict(path, lines, Path(out_dir))
    return path, lines


def store_verdict(path: Path, lines: list[CheckLine], out_dir: Path) -> dict:
    """The verdict into the check episode (attribute ``rig_check``) and ``OUT/rig_check_last.json``."""
    verdict = {"version": 1, "passed": bool(all(line.passed for line in lines)), "episode": str(path), "time_unix": time.time(),
               "lines": [{"name": x.name, "passed": bool(x.passed), "text": x.text, "fix": x.fix,
                          "figures": {k: float(v) for k, v in x.figures.items()}} for x in lines]}
    with open_episode(path, "r+") as f:
        f.attrs["rig_check"] = json.dumps(verdict)
    tmp = out_dir / (LAST_CHECK_FILE + ".tmp")
    tmp.write_text(json.dumps(verdict, indent=1))
    tmp.replace(out_dir / LAST_CHECK_FILE)
    return verdict


def require_recent_check(out_dir: str | Path, hours: float) -> str | None:
    """None when a passed check younger than ``hours`` is recorded in ``out_dir``, else why not (what to do)."""
    path = Path(out_dir) / LAST_CHECK_FILE
    try:
        last = json.loads(path.read_text())
    except FileNotFoundError:
        return f"no rig check in {out_dir}: run `capture-app check --out {out_dir}` first (about 30 s)"
    except (OSError, ValueError) as exc:
        return f"cannot read {path} ({exc}): run `capture-app check --out {out_dir}` again"
    age_h = (time.time() - float(last.get("time_unix", 0))) / 3600
    if not last.get("passed"):
        failed = [x["name"] for x in last.get("lines", []) if not x.get("passed")]
        return f"the last rig check ({last.get('episode')}) failed: {failed}; fix them and run `capture-app check`"
    if age_h > hours:
        return f"the last passed rig check is {age_h:.1f} h old (limit {hours:g} h): run `capture-app check` again"
    return None


def _stream(f, name: str, column: str, offset_ns: int, t0_ns: int):
    g = f.get(f"streams/{name}")
    if g is None or column not in g or len(g["t_capture_ns"]) == 0:
        return np.zeros(0), np.zeros((0,))
    return (g["t_capture_ns"][:] - offset_ns - t0_ns) / 1e9, g[column][:]


def _window(t: np.ndarray, values: np.ndarray, step: str):
    begin, end = next((b, e) for s, b, e in CHECK_STEPS if s == step)
    keep = (t >= begin + 0.5) & (t <= end - 0.5)
    return t[keep], values[keep]


def analyse(path: str | Path) -> list[CheckLine]:
    """The verdict lines of a recorded rig check episode."""
    with open_episode(path) as f:
        calibration = calibration_from_json(str(f["calibration"].attrs["json"]), f"{path}:/calibration")
        t0 = int(f.attrs.get("rig_check_start_ns", f.attrs.get("start_monotonic_ns", 0)))
        off = calibration.latency_offset_ns
        report = json.loads(f.attrs.get("quality", "{}"))
        trackers = {role: _stream(f, f"{role}_tracker", "pose", off(f"{role}_tracker"), t0)
                    for role in ("head", "left_wrist", "right_wrist")}
        gloves = {h: _stream(f, f"{h}_glove", "keypoints", off(f"{h}_glove"), t0) for h in ("left", "right")}
        imus = {h: _stream(f, f"{h}_glove", "wrist_quat", off(f"{h}_glove"), t0) for h in ("left", "right")}
        devices = {name: json.loads(g.attrs.get("device", "{}")) for name, g in f.get("streams", {}).items()}
        lines = [_rates(report), _clocks(devices)]
        lines += [rig_checks.tracker_jitter(role.replace("_", " ") + " tracker",
                                            pose_to_transform(_window(*trackers[role], "hold_still")[1]))
                  for role in trackers if len(trackers[role][0])]
        lines += [rig_checks.glove_shape(h, gloves[h][1]) for h in gloves]
        lines += [rig_checks.glove_handedness(h, gloves[h][1]) for h in gloves]
        lines.append(_roles(trackers, imus))
        lines += _ego(f, calibration, trackers["head"], t0)
        lines.append(_top(f, calibration, trackers, t0))
        lines.append(_fingertips(f, calibration, trackers, gloves, t0))
        lines.append(_table(f, calibration))
    return lines


def _rates(report: dict) -> CheckLine:
    low = {n: s["rate_hz"] for n, s in report.get("streams", {}).items()
           if s.get("expected_rate_hz") and s["rate_hz"] < 0.9 * s["expected_rate_hz"]}
    return CheckLine("streams at rate", not low and bool(report), f"{len(report.get('streams', {}))} streams" +
                     (f"; below 90% of their rate: {low}" if low else " at 90% of their rate or more"),
                     "check the slow streams' cables, USB bandwidth and drivers (`capture-app doctor`)")


# A clock maps badly when the lower envelope of (arrival - device time) is not a line: its windows' minima
# lie off the fit (a clock that steps or wanders) or the device clock jumped back (a reset). The arrival
# jitter above the envelope (residual p95) is the transport's and the host's, not the clock's: reported only
# (USB and radio dongles add several ms; a loaded host more).
CLOCK_ENVELOPE_MAX_MS = 1.0


def _clocks(devices: dict) -> CheckLine:
    mapped = {n: d["clock"] for n, d in devices.items() if isinstance(d, dict) and d.get("clock")}
    bad = {n: c.get("envelope_residual_ms") for n, c in mapped.items()
           if (c.get("envelope_residual_ms") or 0) > CLOCK_ENVELOPE_MAX_MS or c.get("resets")}
    text = ", ".join(f"{n} envelope {c.get('envelope_residual_ms')} ms, drift {c.get('drift_ppm')} ppm, "
                     f"jitter p95 {c.get('residual_p95_ms')} ms" + (f", {c['resets']} resets" if c.get("resets") else "")
                     for n, c in sorted(mapped.items())) or "no device clock to map"
    return CheckLine("device clocks", not bad, f"mapped: {text}", "a device clock steps or was reset: check its "
                     "USB connection and power, and that nothing else loads that bus",
                     {f"{n}_envelope_ms": v for n, v in bad.items()})


def _speeds_on(t: np.ndarray, R: np.ndarray, grid: np.ndarray) -> np.ndarray:
    Rg = resample(t, R, grid)
    return np.linalg.norm(rotvec(relative(Rg)), axis=-1) / np.diff(grid)


def _roles(trackers: dict, imus: dict) -> CheckLine:
    grid = np.arange(CHECK_STEPS[2][1] + 0.3, CHECK_STEPS[3][2] - 0.3, 0.02)
    try:
        tracker_speed = {r: _speeds_on(t, pose_to_transform(p)[:, :3, :3], grid) for r, (t, p) in trackers.items()}
        glove_speed = {h: _speeds_on(t, quat_to_matrix(q), grid) for h, (t, q) in imus.items()}
    except ValueError as exc:
        return CheckLine("tracker roles", False, f"not measurable ({exc})", "rotate each wrist when prompted")
    return rig_checks.roles(glove_speed, tracker_speed)


def _ego(f, calibration: Calibration, head, t0: int) -> list[CheckLine]:
    t_head, poses = head
    group = f.get("streams/ego_camera")
    if group is None or len(t_head) < 10:
        missing = "no ego camera frames in the check" if group is None else "too few head tracker poses"
        return [rig_checks.hand_eye(np.zeros(0)), rig_checks.latency("ego_camera", None, 0.0, missing=missing)]
    t_ego = (group["t_capture_ns"][:] - calibration.latency_offset_ns("ego_camera") - t0) / 1e9
    frames = FrameReader(f, "ego_camera")
    rows, last = [], -np.inf  # frames ~0.1 s apart (every third at 30 Hz; every one when frames were lost)
    for i, t in enumerate(t_ego):
        if CHECK_STEPS[1][1] + 0.5 <= t <= CHECK_STEPS[1][2] - 0.5 and t - last >= 0.09:
            rows.append(i)
            last = t
    X = calibration.T_headtracker_cam
    T_wc = pose_to_transform(poses) @ X
    A, B, times, speeds, previous = [], [], [], [], None
    for row in rows:
        image = frames.frame(row)
        if image is None:
            previous = None
            continue
        grey, scale = prepare(image)
        K = scaled_K(calibration.ego_intrinsics.scaled(image.shape[1], image.shape[0]).K, scale)
        T = np.eye(4)
        T[:3, :3] = resample(t_head, T_wc[:, :3, :3], [t_ego[row]])[0]
        T[:3, 3] = [np.interp(t_ego[row], t_head, T_wc[:, i, 3]) for i in range(3)]
        if previous is not None:
            p_t, p_grey, p_T = previous
            T21 = np.linalg.inv(T) @ p_T
            seen = relative_rotation(p_grey, grey, K, prior_A=T21[:3, :3].T, translation=T21[:3, 3])
            if seen is not None:
                A.append(seen.A)
                B.append((p_T[:3, :3] @ X[:3, :3].T).T @ (T[:3, :3] @ X[:3, :3].T))
                times.append((p_t, t_ego[row]))
                speeds.append(np.linalg.norm(rotvec(seen.A)) / (t_ego[row] - p_t))
        previous = (t_ego[row], grey, T)
    residuals = hand_eye_rotation.residual_deg(np.array(A), np.array(B), X[:3, :3]) if A else np.zeros(0)
    lag = None
    if len(times) >= 20:  # consecutive analysed frames; a pair without features leaves a NaN speed (not used)
        instants = np.unique(np.array(times).ravel())
        speed_of = {round(a, 6): v for (a, _), v in zip(times, speeds)}
        between = np.array([speed_of.get(round(a, 6), np.nan) for a in instants[:-1]])
        estimate = estimate_lag(t_head, poses[:, 3:7], instants, between)
        lag = None if estimate is None else estimate.lag_ms
    mount_error, correction = None, None
    if len(A) >= 5:
        try:
            X_solved, _ = hand_eye_rotation.solve(np.array(A), np.array(B))
            change = rotvec(X[:3, :3].T @ X_solved)
            mount_error, correction = float(np.degrees(np.linalg.norm(change))), tuple(np.degrees(change))
        except ValueError:
            pass  # too little or too one-sided motion: the residuals alone judge
    return [rig_checks.hand_eye(residuals, mount_error, correction),
            rig_checks.latency("ego_camera", lag, calibration.latency_offsets_ms.get("ego_camera", 0.0))]


def _top(f, calibration: Calibration, trackers: dict, t0: int) -> CheckLine:
    """The top camera's latency against the wrist trackers while the hands slide on the table (``hands_on_table``):
    the hands' centroids in its depth frames against the wrists projected through ``T_world_topcam`` and its
    intrinsics (``capture_app.core.top_motion``)."""
    offset_ms = calibration.latency_offsets_ms.get("top_camera", 0.0)
    group = f.get("streams/top_camera")
    if group is None or "depth" not in group or len(group["depth"]) == 0:
        return rig_checks.latency("top_camera", None, offset_ms, missing="no top camera depth frames in the check")
    t_top = (group["t_capture_ns"][:] - calibration.latency_offset_ns("top_camera") - t0) / 1e9
    begin, end = next((b + 0.5, e - 0.5) for step, b, e in CHECK_STEPS if step == "hands_on_table")
    rows = np.flatnonzero((t_top >= begin) & (t_top <= end))
    if len(rows) < 2:
        return rig_checks.latency("top_camera", None, offset_ms, missing="no top camera depth frames while the hands "
                                  "were on the table")
    scale = float(group.attrs.get("depth_scale_m", 0.001))
    depth = group["depth"][rows[0]:rows[-1] + 1]  # one read; rows are in stamp order
    rows_in = rows - rows[0]
    view = _depth_view(group, calibration, depth.shape[2], depth.shape[1])
    predicted = []
    for hand in ("left", "right"):
        t, poses = trackers[f"{hand}_wrist"]
        if len(t) >= 2:
            wrists = top_motion.wrist_points(pose_to_transform(poses), calibration.T_wristtracker_wrist[hand])
            predicted.append((t, view.project(wrists)))
    plane = top_motion.table_plane(view, depth[0] * scale)
    if not predicted or plane is None:
        return rig_checks.latency("top_camera", None, offset_ms, missing="no wrist tracker poses" if not predicted
                                  else "no table plane in the top camera's depth while the hands were on it")
    circles = top_motion.hand_circles([xy[(t >= begin) & (t <= end)] for t, xy in predicted])
    seen = np.array([top_motion.hand_centroids(view, depth[row] * scale, plane, circles) for row in rows_in])
    estimate = top_motion.estimate_image_lag([(t, xy, t_top[rows], seen[:, i]) for i, (t, xy) in enumerate(predicted)])
    return rig_checks.latency("top_camera", None if estimate is None else estimate.lag_ms, offset_ms)


def _depth_view(group, calibration: Calibration, width: int, height: int) -> top_motion.TopView:
    """The camera of the top camera's depth frames (``width`` x ``height``): a RealSense's own depth intrinsics
    and ``T_world_topcam @ T_color_depth`` from its device record (its depth is not aligned to colour), else the
    calibration's colour intrinsics and ``T_world_topcam`` (a camera aligning depth to colour, the simulated one)."""
    k, T_color_depth = depth_geometry_from_device(json.loads(group.attrs.get("device", "{}")),
                                                  calibration.top_intrinsics)
    k = k.scaled(width, height)
    return top_motion.TopView(k.fx, k.fy, k.cx, k.cy, width, height, calibration.T_world_topcam @ T_color_depth)


def _fingertips(f, calibration: Calibration, trackers: dict, gloves: dict, t0: int) -> CheckLine:
    """The gloves' fingertips, put in the ego image through the trackers and the calibration, land on the hands.
    Only a simulated rig can say where its hands are in the image (it draws fingertips in one colour)."""
    name = "fingertips in ego image"
    if not bool(f.attrs.get("simulated", False)):
        return CheckLine(name, True, "not measured on a real rig (needs a hand detector in the ego image)")
    from drivers.sim.render import TIP_COLOUR
    group = f.get("streams/ego_camera")
    if group is None or len(trackers["head"][0]) < 2:
        return CheckLine(name, False, "no ego frames or head poses", "check the ego camera and head tracker streams")
    t_ego = (group["t_capture_ns"][:] - calibration.latency_offset_ns("ego_camera") - t0) / 1e9
    frames = FrameReader(f, "ego_camera")
    hits = total = 0
    for row in [i for i, t in enumerate(t_ego) if 1.0 <= t <= 4.0][::10]:
        image = frames.frame(row)
        if image is None:
            continue
        k = calibration.ego_intrinsics.scaled(image.shape[1], image.shape[0])
        T_wc = _pose_near(trackers["head"], t_ego[row]) @ calibration.T_headtracker_cam
        for hand in ("left", "right"):
            t_k, keypoints = gloves[hand]
            if len(t_k) == 0:
                continue
            T_ww = _pose_near(trackers[f"{hand}_wrist"], t_ego[row]) @ calibration.T_wristtracker_wrist[hand]
            tips = keypoints[int(np.argmin(np.abs(t_k - t_ego[row]))), list(rig_checks.FINGERTIP_INDICES)]
            world = tips @ T_ww[:3, :3].T + T_ww[:3, 3]
            cam = (world - T_wc[:3, 3]) @ T_wc[:3, :3]
            for u, v in k.project(cam):
                total += 1
                if not (np.isfinite(u) and np.isfinite(v)):
                    continue
                patch = image[max(int(v) - 2, 0):int(v) + 3, max(int(u) - 2, 0):int(u) + 3].reshape(-1, 3).astype(int)
                hits += bool(len(patch)) and bool(np.any(np.abs(patch - TIP_COLOUR).max(axis=1) < 60))
    fraction = hits / total if total else 0.0
    return CheckLine(name, fraction >= 0.8, f"{hits} of {total} projected fingertips on a drawn fingertip",
                     "the hands are not where the calibration puts them: check tracker roles, T_wristtracker_wrist and "
                     "T_headtracker_cam (`capture-app calibrate`)", {"fraction": fraction})


def _pose_near(series, t: float) -> np.ndarray:
    times, poses = series
    return pose_to_transform(poses[int(np.argmin(np.abs(times - t)))])


def _table(f, calibration: Calibration) -> CheckLine:
    """The table plane in the top camera's last depth frame, put in the world through the depth camera's own
    geometry (``_depth_view``: a RealSense's depth is not aligned to colour) and the stream's depth scale."""
    group = f.get("streams/top_camera")
    if group is None or "depth" not in group or len(group["depth"]) == 0:
        return rig_checks.table_plane(None)
    depth = group["depth"][len(group["depth"]) - 1].astype(float) * float(group.attrs.get("depth_scale_m", 0.001))
    view = _depth_view(group, calibration, depth.shape[1], depth.shape[0])
    plane = top_motion.table_plane(view, depth)
    return rig_checks.table_plane(None if plane is None else view.T_world_topcam[:3, :3] @ plane[0])
