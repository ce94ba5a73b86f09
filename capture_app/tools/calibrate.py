"""``capture-app calibrate ...``: the engineers' calibration procedures.

Each procedure records a short calibration episode from the rig (or reads one given with
``--episode``), solves, prints its residuals, and writes a new calibration version (the
current one with the solved fields replaced) into the calibration directory. A failed
calibration says why and writes nothing. ``--sim`` runs on the simulated rig with the
board on the table, the head surveying it and realistic tracker noise.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from calibration.board import BoardConfig, BoardDetector, write_printable
from calibration.data import angular_speed, board_pairs, corrected_times
from calibration.handeye import CalibrationFailed, rotation_spread, select_views, solve_fixed_camera, solve_head_camera
from calibration.model import Calibration, CameraIntrinsics
from calibration.store import CalibrationStore, changes, describe, new_version_id, now_iso
from calibration.timing import assign_roles, estimate_lag_ns
from capture_app.rig.config import RigConfig, load_config, sim_epoch_ns, with_changes
from capture_app.episode.file import open_episode
from capture_app.episode.frames import FrameReader
from capture_app.core.errors import CalibrationError
from capture_app.core.geometry import make_transform, quat_angle, quat_to_matrix

TRACKER_NOISE = {"position_noise_mm": 0.3, "rotation_noise_deg": 0.05}
SIM_TRACKERS = ("head_tracker", "left_wrist_tracker", "right_wrist_tracker")


def sim_calibration_rig(board_on: tuple[str, ...] = ("ego_camera", "top_camera"), **tracker_options) -> RigConfig:
    """The simulated rig set up for calibration: board on the table, head surveying it, noisy trackers."""
    options = {"*": {"head_motion": "survey"}}
    options.update({camera: {"board": True} for camera in board_on})
    options.update({t: {**TRACKER_NOISE, **tracker_options.get(t, {})} for t in SIM_TRACKERS})
    return with_changes(load_config(), options)


def base_calibration(store: CalibrationStore, config: RigConfig) -> Calibration:
    """The calibration a new version starts from: the store's current, else the rig's default."""
    current = store.current()
    if current is not None:
        return current
    from capture_app.recorder.session import default_calibration
    return default_calibration(config)


def record_calibration_episode(config: RigConfig, seconds: float, out_dir: Path, guide=None) -> Path:
    """Record ``seconds`` of the rig; ``guide(session)`` is called about once a second to print guidance.
    Cameras are recorded as JPEG even where the rig stores them as video ([writer] video_streams): the live
    guide detects the board in every frame it is shown and the corners are found in the sharper image."""
    from capture_app.recorder.session import CaptureSession
    if config.writer.video_streams:
        config = with_changes(config, writer=dataclasses.replace(config.writer, video_streams=()))
    with CaptureSession(config) as session:
        missing = session.wait_for_streams(8)
        if missing:
            raise CalibrationFailed(f"streams not delivering: {session.missing_stream_reasons(missing)}")
        session.start_episode(out_dir, name=f"calibration-{new_version_id('rec')}")
        start_ns = session.episode_started_ns
        # Record `seconds` of data, not of wall time: a machine that falls behind delivers the same motion later
        end = time.monotonic() + seconds
        give_up = time.monotonic() + 3 * seconds
        while time.monotonic() < end or (time.monotonic() < give_up and not _covered(session, start_ns, seconds)):
            time.sleep(min(1.0, max(0.05, end - time.monotonic())))
            if guide is not None:
                guide(session)
        return session.stop_episode()


def _covered(session, start_ns: int, seconds: float) -> bool:
    """Whether every stream has delivered samples captured ``seconds`` after ``start_ns``."""
    status = session.stream_status()
    return all(st.last_capture_ns is not None and st.last_capture_ns - start_ns >= seconds * 1e9
               for st in status.values())


class HeadCameraGuide:
    """Live guidance while the engineer moves the head around the board: views seen, rotation coverage."""

    def __init__(self, board: BoardConfig, intrinsics: CameraIntrinsics, out=None):
        self.detector = BoardDetector(board)
        self.intrinsics = intrinsics
        self.rotations: list[np.ndarray] = []
        self.out = out if out is not None else sys.stderr  # looked up now: a redirected stderr is honoured

    def __call__(self, session) -> None:
        from capture_app.monitor.overlay import image_from
        tick = session.latest_tick
        if tick is None or tick.T_world_headtracker is None or tick.frames.get("ego_camera") is None:
            return
        image = image_from(tick.frames["ego_camera"])
        k = self.intrinsics if image.shape[1] == self.intrinsics.width else self.intrinsics.scaled(image.shape[1], image.shape[0])
        if self.detector.detect(image, k) is not None:
            self.rotations.append(tick.T_world_headtracker[:3, :3])
        spread = rotation_spread(self.rotations) if len(self.rotations) >= 3 else np.zeros(3)
        hint = "" if spread[1] > 15 else " - turn, nod and tilt the head; come closer and go farther"
        print(f"board seen in {len(self.rotations)} checks; rotation coverage {spread[0]:.0f}/{spread[1]:.0f}/"
              f"{spread[2]:.0f} deg{hint}", file=self.out, flush=True)


def _episode(args, config: RigConfig, store: CalibrationStore, guide=None) -> Path:
    if args.episode:
        return Path(args.episode)
    out = store.directory / "episodes"
    out.mkdir(parents=True, exist_ok=True)
    print(f"recording {args.duration:.0f} s of calibration data...", file=sys.stderr)
    return record_calibration_episode(config, args.duration, out, guide)


def _new_version(old: Calibration, kind: str, method: str, args, residuals: dict | None = None, **fields) -> Calibration:
    """``old`` with the solved ``fields`` replaced, stamped as a new version of ``kind``."""
    return dataclasses.replace(old, calibration_id=new_version_id(kind), created=now_iso(), method=method,
                               operator=args.operator, residuals=residuals or {}, **fields)


def _save(store: CalibrationStore, old: Calibration, new: Calibration) -> int:
    path = store.save(new)
    print(describe(new))
    print("changes: " + "; ".join(changes(old, new)))
    print(f"saved {path} (now current: {store.current_path})")
    return 0


def _ego_intrinsics_for(path: Path, calibration: Calibration, camera: str) -> CameraIntrinsics:
    with open_episode(path) as f:
        height, width = list(f[f"streams/{camera}"].attrs["color_shape"])[:2]
    k = calibration.ego_intrinsics if camera == "ego_camera" else calibration.top_intrinsics
    return k if (k.width, k.height) == (width, height) else k.scaled(width, height)


def calibrate_intrinsics(pairs, guess: CameraIntrinsics, max_views: int = 300) -> tuple[CameraIntrinsics, float]:
    """Pinhole intrinsics and distortion from the board corners of (up to ``max_views``, evenly spread) views.

    Use many views: with 40 of a 30 s sim take the principal point came out 3 px off in one run of four (the
    views chosen happened to cover the image poorly); with all ~440 it stays within 0.6 px, in ~0.3 s."""
    views = [p.view for p in pairs][:: max(1, len(pairs) // max_views)]
    if len(views) < 8:
        raise CalibrationFailed(f"only {len(views)} board views to calibrate the camera's intrinsics (need 8)")
    objects = [v.object_points.astype(np.float32) for v in views]
    images = [v.image_points.astype(np.float32) for v in views]
    rms, K, dist, _, _ = cv2.calibrateCamera(objects, images, (guess.width, guess.height), guess.K.copy(),
                                             np.zeros(5), flags=cv2.CALIB_USE_INTRINSIC_GUESS)
    if rms > 1.0:
        raise CalibrationFailed(f"camera intrinsics reproject with {rms:.2f} px (limit 1): more views, closer, "
                                f"with the board in the image corners too")
    k = CameraIntrinsics(guess.width, guess.height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                         tuple(float(x) for x in dist.ravel()[:5]))
    return k, float(rms)


def _glove_lag_ns(f, hand: str, raw: Calibration) -> tuple[float, float] | None:
    """How much later the glove stamps the hand's rotation than its wrist tracker does (the angular speed of
    the glove's IMU orientation against the tracker's; independent of how the two are mounted)."""
    glove, tracker = f"{hand}_glove", f"{hand}_wrist_tracker"
    if f"streams/{glove}/wrist_quat" not in f or f"streams/{tracker}" not in f:
        return None
    t_g = corrected_times(f, glove, raw)
    q_g = f[f"streams/{glove}/wrist_quat"][:]
    step = 4  # ~33 ms at 120 Hz, like the tracker's baseline below
    speed_g = quat_angle(q_g[step:], q_g[:-step]) / ((t_g[step:] - t_g[:-step]) / 1e9)
    t_t, speed_t = angular_speed(f, tracker, raw, baseline_s=step / 120.0)
    lag, score = estimate_lag_ns((t_g[step:] + t_g[:-step]) / 2, speed_g, t_t, speed_t)
    if score < 0.5:
        raise CalibrationFailed(f"the {hand} glove's and wrist tracker's rotations correlate poorly ({score:.2f}); "
                                f"rotate the {hand} wrist briskly back and forth")
    return lag, score


def _smooth(values: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average over ``n`` samples (same length), per column."""
    if len(values) <= n:
        return values
    kernel = np.ones(n) / n
    if values.ndim == 1:
        return np.convolve(values, kernel, mode="same")
    return np.stack([np.convolve(values[:, c], kernel, mode="same") for c in range(values.shape[1])], axis=1)


# --- the procedures -------------------------------------------------------------------------
def board_from_args(args) -> BoardConfig:
    """The board of ``--board FILE`` (written by ``calibrate board``), or the default board."""
    path = getattr(args, "board", None)
    if not path:
        return BoardConfig()
    try:
        return BoardConfig.from_json(json.loads(Path(path).read_text()), path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"cannot read board file {path}: {exc}; write one with `capture-app calibrate board`") \
            from None
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None


def cmd_board(args) -> int:
    from calibration.board import page_size_mm
    offset = args.tracker_offset
    T_tracker_board = BoardConfig().T_tracker_board if offset is None else tuple(map(tuple, make_transform(
        Rotation.from_euler("xyz", offset[3:], degrees=True).as_matrix(), np.array(offset[:3]) / 1000)))
    try:
        board = BoardConfig(columns=args.columns, rows=args.rows, square_m=args.square_mm / 1000,
                            marker_m=args.marker_mm / 1000, dictionary=args.dictionary, T_tracker_board=T_tracker_board)
        page_size_mm(board, args.paper)
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf, spec = out / "charuco_board.png", out / "charuco_board.pdf", out / "charuco_board.json"
    write_printable(board, str(png), str(pdf), paper=args.paper)
    spec.write_text(json.dumps(board.to_json(), indent=2) + "\n")
    print(f"{png}\n{pdf}\n{spec}\nprint at 100% scale on {args.paper}, glue flat; check the 100 mm scale bar and that a "
          f"square measures {board.square_m * 1000:.1f} mm; pass --board {spec} to the procedures")
    return 0


def cmd_head_camera(args, config: RigConfig, store: CalibrationStore) -> int:
    old = base_calibration(store, config)
    board = board_from_args(args)
    path = _episode(args, config, store, HeadCameraGuide(board, old.ego_intrinsics))
    intrinsics = _ego_intrinsics_for(path, old, "ego_camera")
    detector = BoardDetector(board)
    pairs, rejected = board_pairs(str(path), old, "ego_camera", "head_tracker", intrinsics, detector,
                                  max_pnp_error_px=None if args.intrinsics else 1.0)
    print(f"{len(pairs)} usable views; rejected: {rejected}", file=sys.stderr)
    fields = {}
    if args.intrinsics:  # the camera gives none (UVC): calibrate them from the same board corners
        intrinsics, rms = calibrate_intrinsics(pairs, intrinsics)
        pairs = [dataclasses.replace(p, view=detector.pose(p.view.object_points, p.view.image_points, intrinsics))
                 for p in pairs]
        pairs = [p for p in pairs if p.view is not None and p.view.reprojection_px <= 1.0]
        fields["ego_intrinsics"] = intrinsics
        print(f"ego intrinsics: fx {intrinsics.fx:.1f} fy {intrinsics.fy:.1f} cx {intrinsics.cx:.1f} "
              f"cy {intrinsics.cy:.1f}, reprojection {rms:.3f} px", file=sys.stderr)
    chosen = select_views([p.T_world_tracker for p in pairs], args.max_views)
    result = solve_head_camera([pairs[i].T_world_tracker for i in chosen], [pairs[i].view for i in chosen], intrinsics)
    for name, (deg, mm) in result.methods.items():
        print(f"  OpenCV {name:<10} differs from the refined result by {deg:.3f} deg, {mm:.2f} mm")
    new = _new_version(old, "head-camera", "hand-eye (OpenCV PARK start, least-squares refinement on reprojection)",
                       args, {"head_camera": result.residuals(), "episode": str(path), "rejected": rejected},
                       T_headtracker_cam=result.T_headtracker_cam, **fields)
    return _save(store, old, new)


def cmd_top_camera(args, config: RigConfig, store: CalibrationStore) -> int:
    old = base_calibration(store, config)
    board = board_from_args(args)
    path = _episode(args, config, store)
    intrinsics = _ego_intrinsics_for(path, old, "top_camera")
    pairs, rejected = board_pairs(str(path), old, "top_camera", args.board_tracker, intrinsics, BoardDetector(board),
                                  every=3)
    T_tracker_board = np.array(board.T_tracker_board)
    T_world_topcam, residuals = solve_fixed_camera([p.T_world_tracker @ T_tracker_board for p in pairs],
                                                   [p.view for p in pairs], intrinsics)
    new = _new_version(old, "top-camera", f"board with {args.board_tracker} on its mount", args,
                       {"top_camera": residuals, "episode": str(path), "rejected": rejected},
                       T_world_topcam=T_world_topcam)
    return _save(store, old, new)


def cmd_latency(args, config: RigConfig, store: CalibrationStore) -> int:
    """The ego camera's latency offset relative to the head tracker, from the rotation both see."""
    old = base_calibration(store, config)
    board = board_from_args(args)
    path = _episode(args, config, store)
    intrinsics = _ego_intrinsics_for(path, old, "ego_camera")
    raw = dataclasses.replace(old, latency_offsets_ms={})  # correlate on raw stamps
    pairs, _ = board_pairs(str(path), raw, "ego_camera", "head_tracker", intrinsics, BoardDetector(board), every=1,
                           max_speed=None)  # fast motion is what carries the timing here
    if len(pairs) < 60:
        raise CalibrationFailed(f"the board was seen in only {len(pairs)} frames (need 60): keep it in view while "
                                f"turning the head back and forth")
    times = np.array([p.t_ns for p in pairs], dtype=float)
    # the camera's angular velocity (camera frame) from consecutive board poses: rotvec(R_k+1 R_k^T) / dt
    R = [p.view.T_cam_board[:3, :3] for p in pairs]
    dt = np.diff(times) / 1e9
    cam_w = np.array([cv2.Rodrigues(R[i + 1] @ R[i].T)[0].ravel() for i in range(len(R) - 1)]) / dt[:, None]
    ok = dt < 0.05
    t_cam, cam_w = (times[1:] + times[:-1])[ok] / 2, cam_w[ok]
    # the same quantity from the head tracker, through the mount (only roughly needed here)
    with open_episode(path) as f:
        t_trk = corrected_times(f, "head_tracker", raw)
        R_world_cam = quat_to_matrix(f["streams/head_tracker/pose"][:, 3:7]) @ old.T_headtracker_cam[:3, :3]
    step = max(1, int(round(np.median(dt) / (np.median(np.diff(t_trk)) / 1e9))))
    trk_dt = (t_trk[step:] - t_trk[:-step]) / 1e9
    relative = np.swapaxes(R_world_cam[step:], -1, -2) @ R_world_cam[:-step]
    trk_w = np.array([cv2.Rodrigues(M)[0].ravel() for M in relative]) / trk_dt[:, None]
    t_trk_mid = (t_trk[step:] + t_trk[:-step]) / 2
    lag_ns, score = estimate_lag_ns(t_cam, _smooth(cam_w, 3), t_trk_mid, _smooth(trk_w, 9))
    if score < 0.5:
        raise CalibrationFailed(f"the camera's and the head tracker's motion correlate poorly ({score:.2f}); turn the "
                                f"head briskly back and forth while the board stays in view")
    offsets = dict(old.latency_offsets_ms)
    offsets["ego_camera"] = offsets.get("head_tracker", 0.0) + lag_ns / 1e6
    print(f"ego camera stamps lag the head tracker's by {lag_ns / 1e6:.2f} ms (correlation {score:.3f})")
    residuals = {"ego_camera_vs_head_tracker_ms": round(lag_ns / 1e6, 3), "correlation": round(score, 4)}
    with open_episode(path) as f:
        for hand in ("left", "right"):
            glove_lag = _glove_lag_ns(f, hand, raw)
            if glove_lag is None:
                print(f"{hand} glove: no wrist orientation in its stream; latency not estimated", file=sys.stderr)
                continue
            lag, glove_score = glove_lag
            offsets[f"{hand}_glove"] = offsets.get(f"{hand}_wrist_tracker", 0.0) + lag / 1e6
            residuals[f"{hand}_glove_vs_wrist_tracker_ms"] = round(lag / 1e6, 3)
            residuals[f"{hand}_glove_correlation"] = round(glove_score, 4)
            print(f"{hand} glove stamps lag its wrist tracker's by {lag / 1e6:.2f} ms (correlation {glove_score:.3f})")
    new = _new_version(old, "latency", "cross-correlation of angular velocity (ego camera vs head tracker, glove IMU "
                       "vs wrist tracker)", args, {"latency": residuals}, latency_offsets_ms=offsets)
    return _save(store, old, new)


def cmd_roles(args, config: RigConfig, store: CalibrationStore) -> int:
    """Ask the engineer to move each tracker in turn; assign serials to head / left / right by motion."""
    old = base_calibration(store, config)
    roles = ("head", "left_wrist", "right_wrist")
    streams = [d for d in config.drivers if d.stream in SIM_TRACKERS]
    if len(streams) < 3:
        raise CalibrationFailed("the rig config lists fewer than three trackers")
    out = store.directory / "episodes"
    out.mkdir(parents=True, exist_ok=True)
    from capture_app.recorder.session import CaptureSession
    windows = []
    t0 = time.monotonic_ns()
    with CaptureSession(config) as session:
        t0 = sim_epoch_ns(session.config) or t0  # prompts from the simulation's epoch, like its motion spells
        if session.wait_for_streams(8):
            raise CalibrationFailed("trackers not delivering; run `capture-app doctor`")
        session.start_episode(out, name=f"calibration-{new_version_id('roles')}")
        for k, role in enumerate(roles):
            start = t0 + int((args.settle + k * args.window) * 1e9)
            time.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))
            print(f"move the {role.replace('_', ' ').upper()} tracker now ({args.window:.0f} s); keep the others still",
                  file=sys.stderr, flush=True)
            time.sleep(args.window)
            windows.append((role, start, start + int(args.window * 1e9)))
        path = session.stop_episode()
    motion = {}
    with open_episode(path) as f:
        for d in streams:
            t, speed = angular_speed(f, d.stream, dataclasses.replace(old, latency_offsets_ms={}), baseline_s=0.1)
            motion[d.serial or d.stream] = (t, speed)
    assigned = assign_roles(motion, windows)
    print("roles: " + ", ".join(f"{r} = {s}" for r, s in assigned.items()))
    new = _new_version(old, "roles", "roles by motion", args, {"roles": assigned}, tracker_serials=assigned)
    return _save(store, old, new)


def cmd_wrist(args, config: RigConfig, store: CalibrationStore) -> int:
    """T_wristtracker_wrist from the mount's CAD values: translation (mm) and rotation (deg, xyz),
    or (``--procedure``) from the hands resting on the board's wrist marks under the top camera."""
    from scipy.spatial.transform import Rotation
    old = base_calibration(store, config)
    if args.procedure:
        return _wrist_procedure(args, config, store, old)
    mounts = dict(old.T_wristtracker_wrist)
    if args.left is None and args.right is None:
        raise CalibrationFailed("give --left and/or --right TX TY TZ RX RY RZ (mm, degrees) from the mount drawing")
    for hand in ("left", "right"):
        values = getattr(args, hand)
        if values is not None:
            tx, ty, tz, rx, ry, rz = values
            R = Rotation.from_euler("xyz", [rx, ry, rz], degrees=True).as_matrix()
            mounts[hand] = make_transform(R, np.array([tx, ty, tz]) / 1000.0)
    new = _new_version(old, "wrist", "wrist mount CAD values", args, T_wristtracker_wrist=mounts)
    return _save(store, old, new)


def _wrist_procedure(args, config: RigConfig, store: CalibrationStore, old: Calibration) -> int:
    """Board on the table in the (calibrated) top camera's view; both hands palm down on its wrist marks,
    middle fingers along the board's +x, still. The board's world pose comes from the top camera, each
    wrist's from the mark; the mount is inv(T_world_wristtracker) @ T_world_wrist, averaged."""
    from calibration.board import T_board_wrist_mark
    from calibration.data import tracker_pose_at
    from calibration.handeye import _mean_transform
    from capture_app.core.geometry import invert_transform
    board = board_from_args(args)
    path = _episode(args, config, store)
    intrinsics = _ego_intrinsics_for(path, old, "top_camera")
    detector = BoardDetector(board)
    boards, times, on_depth = [], [], 0
    with open_episode(path) as f:
        frame_times = corrected_times(f, "top_camera", old)
        frames = FrameReader(f, "top_camera")
        depth_geometry = _depth_geometry(f["streams/top_camera"], intrinsics)
        for row in range(0, len(frame_times), 3):
            image = frames.frame(row)
            view = detector.detect(image, intrinsics) if image is not None else None
            if view is not None:
                T_cam_board = _board_on_depth_plane(f["streams/top_camera"], row, view.T_cam_board, board,
                                                    depth_geometry)
                on_depth += T_cam_board is not None
                boards.append(old.T_world_topcam @ (view.T_cam_board if T_cam_board is None else T_cam_board))
                times.append(frame_times[row])
        if len(boards) < 5:
            raise CalibrationFailed(f"the top camera saw the board in only {len(boards)} frames: put the board in its "
                                    f"view (and calibrate the top camera first)")
        T_world_board = _mean_transform(boards)
        mounts, residuals = dict(old.T_wristtracker_wrist), {}
        for hand in ("left", "right"):
            poses = [T for T in tracker_pose_at(f, f"{hand}_wrist_tracker", old, np.array(times)) if T is not None]
            if len(poses) < 5:
                raise CalibrationFailed(f"the {hand} wrist tracker was not tracked while the hand lay on the board")
            spread = max(np.linalg.norm(T[:3, 3] - poses[0][:3, 3]) for T in poses) * 1000
            if spread > 5:
                raise CalibrationFailed(f"the {hand} hand moved {spread:.1f} mm during the procedure; keep it still")
            T_world_wrist = T_world_board @ T_board_wrist_mark(hand)
            mounts[hand] = _mean_transform([invert_transform(T) @ T_world_wrist for T in poses])
            residuals[hand] = {"samples": len(poses), "tracker_spread_mm": round(spread, 2)}
    residuals["board_tilt_from_depth"] = f"{on_depth} of {len(boards)} views"
    new = _new_version(old, "wrist", "hands on the board's wrist marks under the top camera", args,
                       {"wrist": residuals, "episode": str(path)}, T_wristtracker_wrist=mounts)
    return _save(store, old, new)


def _depth_geometry(group, color_intrinsics: CameraIntrinsics) -> tuple[CameraIntrinsics, np.ndarray] | None:
    """The top camera's depth intrinsics and ``T_color_depth`` from its device record (a RealSense gives
    both; a camera that aligns depth to colour, like the simulated one, gives neither: the colour
    intrinsics and identity). None when the stream has no depth."""
    if "depth" not in group:
        return None
    device = json.loads(group.attrs.get("device", "{}"))
    k = device.get("depth_intrinsics")
    extrinsics = device.get("T_color_depth")
    if k is None or extrinsics is None:
        return color_intrinsics, np.eye(4)
    R = np.array(extrinsics["rotation_colmajor"], float).reshape(3, 3).T  # librealsense: column-major
    depth_k = CameraIntrinsics(int(k["width"]), int(k["height"]), float(k["fx"]), float(k["fy"]), float(k["cx"]),
                               float(k["cy"]))
    return depth_k, make_transform(R, np.array(extrinsics["translation_m"], float))


def _board_on_depth_plane(group, row: int, T_cam_board: np.ndarray, board: BoardConfig, depth_geometry
                          ) -> np.ndarray | None:
    """PnP's board pose with its tilt taken from the depth image's plane (PnP pins a far, face-on board's
    tilt to ~0.5 deg only), or None when there is no usable depth."""
    from calibration.plane import board_points_from_depth, fit_board_plane, snap_to_plane
    if depth_geometry is None:
        return None
    depth_k, T_color_depth = depth_geometry
    depth_m = group["depth"][row].astype(np.float64) * float(group.attrs.get("depth_scale_m", 0.001))
    if depth_m.shape != (depth_k.height, depth_k.width):
        return None
    points = board_points_from_depth(depth_m, depth_k, T_color_depth, T_cam_board, board.width_m, board.height_m)
    plane = fit_board_plane(points, T_cam_board)
    return None if plane is None else snap_to_plane(T_cam_board, *plane)


def cmd_show(args, store: CalibrationStore) -> int:
    current = store.current()
    if current is None:
        print(f"no calibration in {store.directory} yet; run `capture-app calibrate ...`")
        return 1
    print(describe(current))
    versions = store.versions()
    if len(versions) >= 2:
        previous = store.get(versions[-2].stem)
        print(f"changes since {previous.calibration_id}: " + "; ".join(changes(previous, current)))
    print(f"history: {len(versions)} version(s) in {store.history_dir}")
    return 0


def run(args) -> int:
    """Dispatch ``capture-app calibrate WHAT``."""
    if args.what == "board":
        return cmd_board(args)
    store = CalibrationStore(args.calibration_dir)
    if args.what == "show":
        return cmd_show(args, store)
    if getattr(args, "sim", False) or not getattr(args, "config", None):
        config = sim_calibration_rig(**({"left_wrist_tracker": {"mount": "board"}} if args.what == "top-camera" else {}))
        if args.what == "top-camera":
            config = with_changes(config, {"*": {"board_motion": "handheld"}})
        if args.what == "latency":
            config = with_changes(config, {"*": {"head_motion": "shake"}})
        if args.what == "wrist" and args.procedure:
            config = with_changes(config, {"*": {"hand_motion": "on_board"}})
        if args.what == "roles":
            spells = {"head_tracker": [[args.settle, args.settle + args.window]],
                      "left_wrist_tracker": [[args.settle + args.window, args.settle + 2 * args.window]],
                      "right_wrist_tracker": [[args.settle + 2 * args.window, args.settle + 3 * args.window]]}
            config = with_changes(config, {t: {"move_only_s": s} for t, s in spells.items()}, drivers_in="threads")
    else:
        config = load_config(args.config)
    procedures = {"head-camera": cmd_head_camera, "top-camera": cmd_top_camera, "latency": cmd_latency,
                  "roles": cmd_roles, "wrist": cmd_wrist}
    try:
        return procedures[args.what](args, config, store)
    except CalibrationError as exc:  # CalibrationFailed and every other reason
        print(f"calibration failed, nothing written: {exc}", file=sys.stderr)
        return 1


def add_parser(sub) -> None:
    calibrate = sub.add_parser("calibrate", help="calibration procedures for engineers (see README)")
    what = calibrate.add_subparsers(dest="what", required=True)
    board = what.add_parser("board", help="write a printable ChArUco board (PNG, PDF at true size, JSON geometry)")
    board.add_argument("--out", default=".", help="directory for charuco_board.png / .pdf / .json (default: .)")
    default = BoardConfig()
    board.add_argument("--columns", type=int, default=default.columns, help=f"squares across (default {default.columns})")
    board.add_argument("--rows", type=int, default=default.rows, help=f"squares down (default {default.rows})")
    board.add_argument("--square-mm", type=float, default=default.square_m * 1000,
                       help=f"square side, mm (default {default.square_m * 1000:g})")
    board.add_argument("--marker-mm", type=float, default=default.marker_m * 1000,
                       help=f"ArUco marker side, mm, below the square's (default {default.marker_m * 1000:g})")
    board.add_argument("--dictionary", default=default.dictionary, help=f"ArUco dictionary (default {default.dictionary})")
    board.add_argument("--paper", default="A2", choices=("A2", "A3", "A4", "fit"),
                       help="landscape page; 'fit' makes the page the board plus margins (default A2; the default "
                            "board on A3 needs --square-mm 45 --marker-mm 33)")
    board.add_argument("--tracker-offset", nargs=6, type=float, metavar=("TX", "TY", "TZ", "RX", "RY", "RZ"),
                       help="the board in the frame of the tracker on its mount (top-camera procedure): translation "
                            "mm, then x-y-z Euler angles in degrees (default: the reference mount, -50 0 0 90 0 0)")
    for name, help_text in (("head-camera", "hand-eye calibration of the ego camera on the head tracker"),
                            ("top-camera", "the top camera's pose from the board with a tracker on its mount"),
                            ("latency", "the ego camera's latency offset from motion it shares with the head tracker"),
                            ("roles", "assign tracker serials to head / left / right by moving each in turn"),
                            ("wrist", "the wrist mounts from their CAD values"),
                            ("show", "print the current calibration and what changed")):
        p = what.add_parser(name, help=help_text)
        p.add_argument("--calibration-dir", default="rig-calibration",
                       help="where versions live: current.json and history/ (default: ./rig-calibration)")
        if name in ("show",):
            continue
        source = p.add_mutually_exclusive_group()
        source.add_argument("--sim", action="store_true", help="the simulated rig (the default)")
        source.add_argument("--config", help="rig config TOML (default: the simulated rig)")
        p.add_argument("--operator", default="", help="who calibrated (stored in the version)")
        if name in ("head-camera", "top-camera", "latency", "wrist"):
            p.add_argument("--board", help="board file from `calibrate board` (default: the default board, "
                                           f"{default.columns}x{default.rows} squares of {default.square_m * 1000:g} mm)")
            p.add_argument("--episode", help="solve from this recorded calibration episode instead of recording")
            seconds = 20.0 if name != "wrist" else 3.0
            p.add_argument("--duration", type=float, default=seconds,
                           help=f"seconds to record (default {seconds:g})")
        if name == "head-camera":
            p.add_argument("--max-views", type=int, default=100,
                           help="views used by the solver, spread over rotations (default 100)")
            p.add_argument("--intrinsics", action="store_true",
                           help="also calibrate the ego camera's intrinsics (for a camera that gives none, e.g. UVC)")
        if name == "top-camera":
            p.add_argument("--board-tracker", default="left_wrist_tracker",
                           help="the tracker fixed on the board's mount (default left_wrist_tracker)")
        if name == "roles":
            p.add_argument("--window", type=float, default=3.0, help="seconds to move each tracker (default 3)")
            p.add_argument("--settle", type=float, default=3.0,
                           help="seconds from start to the first prompt (default 3)")
        if name == "wrist":
            p.add_argument("--left", nargs=6, type=float, metavar=("TX", "TY", "TZ", "RX", "RY", "RZ"),
                           help="left mount from its drawing: translation mm, then x-y-z Euler angles in degrees")
            p.add_argument("--right", nargs=6, type=float, metavar=("TX", "TY", "TZ", "RX", "RY", "RZ"),
                           help="right mount from its drawing: translation mm, then x-y-z Euler angles in degrees")
            p.add_argument("--procedure", action="store_true",
                           help="measure instead: hands palm down on the board's wrist marks (README)")
    calibrate.set_defaults(func=run)


__all__ = ["add_parser", "run", "sim_calibration_rig", "CalibrationError"]
