"""A recorder (session, takes, control server) in this process, for monitor and control-channel tests.

The monitor still talks to it only through docs/control.md over ipc://, as it would to a
recorder process.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from capture_app.rig.config import parse_config
from capture_app.recorder.control_server import ControlServer
from capture_app.recorder.session import CaptureSession
from capture_app.recorder.takes import Takes
from tests.conftest import small_sim_text


@contextlib.contextmanager
def running_recorder(tmp_path: Path, **sim):
    """Yields (control endpoint, session, takes); the sim rig with small images unless ``sim`` says otherwise."""
    config = parse_config(small_sim_text(**sim), "<recorder test rig>")
    with CaptureSession(config) as session:
        assert session.wait_for_streams(10) == []
        takes = Takes(session, tmp_path / "episodes")
        server = ControlServer(session, takes, f"ipc://{tmp_path / 'control'}").start()
        try:
            yield server.control_endpoint, session, takes
        finally:
            server.close()
            if session.recording:
                takes.stop("saved")
            takes.wait_finalized()
