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
from calibration.intrinsics import calibrate_intrinsics, smooth
from calibration.data import angular_speed, board_pairs, corrected_times
from calibration.handeye import CalibrationFailed, select_views, solve_fixed_camera, solve_head_camera
from calibration.model import Calibration
from calibration.store import CalibrationStore, changes, describe, new_version_id
from calibration.timing import assign_roles, estimate_lag_ns
from capture_app.rig.config import RigConfig, load_config, sim_epoch_ns, with_changes
from capture_app.episode.file import open_episode
from capture_app.episode.frames import FrameReader
from capture_app.core.errors import CalibrationError
from capture_app.core.geometry import make_transform, quat_to_matrix
from capture_app.tools.calibration_readers import (board_on_depth_plane, camera_intrinsics_for, depth_geometry,
                                                   glove_lag_ns)
from capture_app.tools.calibration_recording import (SIM_TRACKERS, HeadCameraGuide, base_calibration, new_version,
                                                     procedure_episode, save_version, sim_calibration_rig)
from capture_app.tools.calibration_recording import record_calibration_episode  # noqa: F401 (for scripts)

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
    path = procedure_episode(args, config, store, HeadCameraGuide(board, old.ego_intrinsics))
    intrinsics = camera_intrinsics_for(path, old, "ego_camera")
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
    new = new_version(old, "head-camera", "hand-eye (OpenCV PARK start, least-squares refinement on reprojection)",
                      args, {"head_camera": result.residuals(), "episode": str(path), "rejected": rejected},
                      T_headtracker_cam=result.T_headtracker_cam, **fields)
    return save_version(store, old, new)


def cmd_top_camera(args, config: RigConfig, store: CalibrationStore) -> int:
    old = base_calibration(store, config)
    board = board_from_args(args)
    path = procedure_episode(args, config, store)
    intrinsics = camera_intrinsics_for(path, old, "top_camera")
    pairs, rejected = board_pairs(str(path), old, "top_camera", args.board_tracker, intrinsics, BoardDetector(board),
                                  every=3)
    T_tracker_board = np.array(board.T_tracker_board)
    T_world_topcam, residuals = solve_fixed_camera([p.T_world_tracker @ T_tracker_board for p in pairs],
                                                   [p.view for p in pairs], intrinsics)
    new = new_version(old, "top-camera", f"board with {args.board_tracker} on its mount", args,
                      {"top_camera": residuals, "episode": str(path), "rejected": rejected},
                      T_world_topcam=T_world_topcam)
    return save_version(store, old, new)


def cmd_latency(args, config: RigConfig, store: CalibrationStore) -> int:
    """The ego camera's latency offset relative to the head tracker, from the rotation both see."""
    old = base_calibration(store, config)
    board = board_from_args(args)
    path = procedure_episode(args, config, store)
    intrinsics = camera_intrinsics_for(path, old, "ego_camera")
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
    lag_ns, score = estimate_lag_ns(t_cam, smooth(cam_w, 3), t_trk_mid, smooth(trk_w, 9))
    if score < 0.5:
        raise CalibrationFailed(f"the camera's and the head tracker's motion correlate poorly ({score:.2f}); turn the "
                                f"head briskly back and forth while the board stays in view")
    offsets = dict(old.latency_offsets_ms)
    offsets["ego_camera"] = offsets.get("head_tracker", 0.0) + lag_ns / 1e6
    print(f"ego camera stamps lag the head tracker's by {lag_ns / 1e6:.2f} ms (correlation {score:.3f})")
    residuals = {"ego_camera_vs_head_tracker_ms": round(lag_ns / 1e6, 3), "correlation": round(score, 4)}
    with open_episode(path) as f:
        for hand in ("left", "right"):
            glove_lag = glove_lag_ns(f, hand, raw)
            if glove_lag is None:
                print(f"{hand} glove: no wrist orientation in its stream; latency not estimated", file=sys.stderr)
                continue
            lag, glove_score = glove_lag
            offsets[f"{hand}_glove"] = offsets.get(f"{hand}_wrist_tracker", 0.0) + lag / 1e6
            residuals[f"{hand}_glove_vs_wrist_tracker_ms"] = round(lag / 1e6, 3)
            residuals[f"{hand}_glove_correlation"] = round(glove_score, 4)
            print(f"{hand} glove stamps lag its wrist tracker's by {lag / 1e6:.2f} ms (correlation {glove_score:.3f})")
    new = new_version(old, "latency", "cross-correlation of angular velocity (ego camera vs head tracker, glove IMU "
                      "vs wrist tracker)", args, {"latency": residuals}, latency_offsets_ms=offsets)
    return save_version(store, old, new)


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
    new = new_version(old, "roles", "roles by motion", args, {"roles": assigned}, tracker_serials=assigned)
    return save_version(store, old, new)


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
    new = new_version(old, "wrist", "wrist mount CAD values", args, T_wristtracker_wrist=mounts)
    return save_version(store, old, new)


def _wrist_procedure(args, config: RigConfig, store: CalibrationStore, old: Calibration) -> int:
    """Board on the table in the (calibrated) top camera's view; both hands palm down on its wrist marks,
    middle fingers along the board's +x, still. The board's world pose comes from the top camera, each
    wrist's from the mark; the mount is inv(T_world_wristtracker) @ T_world_wrist, averaged."""
    from calibration.board import T_board_wrist_mark
    from calibration.data import tracker_pose_at
    from calibration.handeye import _mean_transform
    from capture_app.core.geometry import invert_transform
    board = board_from_args(args)
    path = procedure_episode(args, config, store)
    intrinsics = camera_intrinsics_for(path, old, "top_camera")
    detector = BoardDetector(board)
    boards, times, on_depth = [], [], 0
    with open_episode(path) as f:
        frame_times = corrected_times(f, "top_camera", old)
        frames = FrameReader(f, "top_camera")
        top_depth = depth_geometry(f["streams/top_camera"], intrinsics)
        for row in range(0, len(frame_times), 3):
            image = frames.frame(row)
            view = detector.detect(image, intrinsics) if image is not None else None
            if view is not None:
                T_cam_board = board_on_depth_plane(f["streams/top_camera"], row, view.T_cam_board, board,
                                                   top_depth)
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
    new = new_version(old, "wrist", "hands on the board's wrist marks under the top camera", args,
                      {"wrist": residuals, "episode": str(path)}, T_wristtracker_wrist=mounts)
    return save_version(store, old, new)


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
