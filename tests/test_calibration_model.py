"""The calibration file: round trip, and every kind of corruption refused with a message naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration.model import calibration_from_dict, load_calibration
from capture_app.rig.config import load_config
from capture_app.core.errors import CalibrationError
from drivers.sim.calibration import sim_calibration


@pytest.fixture
def good():
    return sim_calibration(load_config())


def test_round_trip_through_a_file(good, tmp_path):
    path = tmp_path / "cal.json"
    good.save(path)
    loaded = load_calibration(path)
    np.testing.assert_allclose(loaded.T_headtracker_cam, good.T_headtracker_cam)
    np.testing.assert_allclose(loaded.T_wristtracker_wrist["right"], good.T_wristtracker_wrist["right"])
    assert loaded.ego_intrinsics == good.ego_intrinsics and loaded.latency_offsets_ms == good.latency_offsets_ms
    assert loaded.tracker_serials == {"head": "SIM-LHR-HEAD", "left_wrist": "SIM-LHR-LEFT", "right_wrist": "SIM-LHR-RIGHT"}
    assert loaded.latency_offset_ns("ego_camera") == 40_000_000


def _broken(good, change):
    data = good.to_dict()
    change(data)
    return data


CASES = {
    "version": (lambda d: d.update(format_version=7), "format_version is 7"),
    "missing": (lambda d: d.pop("T_world_topcam"), "missing field(s) ['T_world_topcam']"),
    "shape": (lambda d: d.update(T_headtracker_cam=[[1, 0, 0], [0, 1, 0]]), "T_headtracker_cam has shape (2, 3)"),
    "nan": (lambda d: d["T_world_topcam"][0].__setitem__(3, float("nan")), "T_world_topcam contains NaN"),
    "last-row": (lambda d: d["T_world_topcam"].__setitem__(3, [0, 0, 1, 1]), "last row"),
    "not-rotation": (lambda d: d["T_headtracker_cam"][0].__setitem__(0, 2.0), "not orthonormal"),
    "mirror": (lambda d: d.update(T_headtracker_cam=np.diag([1.0, 1, -1, 1]).tolist()), "not orthonormal"),
    "millimetres": (lambda d: d["T_world_topcam"][1].__setitem__(3, 850.0), "units must be metres"),
    "one-hand": (lambda d: d["T_wristtracker_wrist"].pop("right"), "exactly 'left' and 'right'"),
    "focal": (lambda d: d["ego_intrinsics"].update(fx=-1), "ego_intrinsics"),
    "intrinsics-missing": (lambda d: d["top_intrinsics"].pop("cy"), "top_intrinsics is missing ['cy']"),
    "latency": (lambda d: d["latency_offsets_ms"].update(ego_camera="forty"), "latency_offsets_ms"),
    "role": (lambda d: d["tracker_serials"].update(elbow="X"), "tracker_serials keys"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_or_incomplete_calibration_is_refused(good, case):
    change, fragment = CASES[case]
    with pytest.raises(CalibrationError) as info:
        calibration_from_dict(_broken(good, change), "cal.json")
    assert fragment in str(info.value) and "cal.json" in str(info.value)


def test_unreadable_and_invalid_json_files_say_how_to_fix(tmp_path):
    with pytest.raises(CalibrationError, match="cannot read calibration file .*capture-app calibrate"):
        load_calibration(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format_version": 1,')
    with pytest.raises(CalibrationError, match="not valid JSON"):
        load_calibration(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(CalibrationError, match="top level must be a JSON object"):
        load_calibration(bad)
    bad.write_bytes(bytes(range(256)) * 4)  # random bytes: not even text
    with pytest.raises(CalibrationError, match="not UTF-8 JSON text.*calibrate again"):
        load_calibration(bad)


def test_a_garbage_calibration_file_is_one_clear_line_on_the_command_line(tmp_path):
    import subprocess
    import sys
    garbage = tmp_path / "cal.json"
    garbage.write_bytes(bytes(range(256)) * 4)
    rig = tmp_path / "rig.toml"
    from tests.conftest import small_sim_text
    rig.write_text(small_sim_text().replace('[sim]\n', f'[calibration]\npath = "{garbage}"\n\n[sim]\n', 1))
    result = subprocess.run([sys.executable, "-m", "capture_app.cli", "record", "--config", str(rig), "--out",
                             str(tmp_path / "out"), "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cal.json is not UTF-8 JSON text" in result.stderr
