"""The field panel without a browser: who may use it, what a tap becomes, what the page is sent (issue 27).

The access rules are tested both as the pure function and through the server's real request path: a request
off loopback (its remote address, as aiohttp sees it) without the token gets a 403 and no state, and a
WebSocket without it runs no command. No real network address is used: requests come from loopback or are
built in-process with the remote address they claim.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from unittest import mock

import numpy as np
import pytest

aiohttp = pytest.importorskip("aiohttp")

from aiohttp.test_utils import TestClient, TestServer, make_mocked_request  # noqa: E402

from capture_app.panel.access import COOKIE, Access, is_loopback  # noqa: E402
from capture_app.panel.model import MAX_TAKES_LISTED, PanelModel, Refused  # noqa: E402
from capture_app.panel.rules import bar, stream_rows  # noqa: E402
from capture_app.panel.server import PanelServer  # noqa: E402
from capture_app.rig.tasks import load_tasks  # noqa: E402

TOKEN = "s3cret-token-for-tests"


def status(recording=False, t_ns=1, lost=(), segments=(), current="", take_count=0, episode=None):
    streams = {s: {"state": "lost" if s in lost else "ok", "reason": "no sample for 0.6 s" if s in lost else "",
                   "rate_hz": 0.0 if s in lost else 25.0, "expected_rate_hz": 25.0, "age_s": 0.01, "seq_gaps": 0,
                   "tracking": "ok", "rejected": 0} for s in ("head_tracker", "left_glove", "ground_truth")}
    return {"t_ns": t_ns, "streams": streams, "drivers": {}, "writer": None, "rejected": {}, "losses": {},
            "takes": {"recording": recording, "take_count": take_count, "segments": list(segments),
                      "current": current, "episode": episode or {}, "free_disk_mb": 50_000.0, "elapsed_s": 1.5}}


class FakeFeed:
    """What the server uses of a PanelFeed; ``sent`` holds the control commands it was asked to send."""

    def __init__(self):
        self.view, self.status, self.video_images = None, status(), {}
        self.takes_finished, self.pending, self.malformed, self.sent = deque(), 0, 0, []

    def send(self, cmd, args, on_reply):
        self.sent.append((cmd, args))


# --- access -------------------------------------------------------------------------------------
@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True),
                                            ("[::1]", True), ("::ffff:127.0.0.1", True), ("localhost", True),
                                            ("0.0.0.0", False), ("192.0.2.7", False), ("evil.example", False)])
def test_loopback_is_recognised(host, loopback):
    assert is_loopback(host) is loopback


def test_the_access_rules():
    local = Access.for_bind("127.0.0.1")
    assert local.token is None
    assert local.check("127.0.0.1", "127.0.0.1:8600", None) is None
    assert "loopback only" in local.check("192.0.2.7", "127.0.0.1:8600", None)      # off loopback, no token
    assert "not a loopback name" in local.check("127.0.0.1", "evil.example:8600", None)  # DNS rebinding
    assert "origin" in local.check("127.0.0.1", "127.0.0.1:8600", None, "http://evil.example", websocket=True)
    assert local.check("127.0.0.1", "127.0.0.1:8600", None, "http://127.0.0.1:8600", websocket=True) is None
    shared = Access.for_bind("0.0.0.0")
    assert shared.token and len(shared.token) >= 20  # off loopback a token always, a random one by default
    assert Access.for_bind("0.0.0.0").token != shared.token
    assert "token is required" in shared.check("192.0.2.7", "rig:8600", None)
    assert "token is required" in shared.check("192.0.2.7", "rig:8600", "wrong")
    assert "token is required" in shared.check("127.0.0.1", "127.0.0.1:8600", None)  # from loopback too
    assert shared.check("192.0.2.7", "rig:8600", shared.token) is None


def _serve(access: Access, feed: FakeFeed | None = None) -> tuple[PanelServer, FakeFeed]:
    feed = feed or FakeFeed()
    return PanelServer(feed, PanelModel(load_tasks()), access, thumb_hz=0), feed


def test_a_request_from_off_loopback_without_the_token_gets_nothing():
    """The server's own request path, with the remote address aiohttp reports for a phone on the network."""
    async def run():
        for access in (Access.for_bind("127.0.0.1"), Access("0.0.0.0", TOKEN)):
            server, feed = _serve(access)
            handler = mock.AsyncMock(return_value=aiohttp.web.Response(text="state"))
            for path in ("/", "/ws", "/static/panel.js"):
                transport = mock.Mock()
                transport.get_extra_info.side_effect = lambda key, default=None: (
                    ("192.0.2.7", 40000) if key == "peername" else default)
                request = make_mocked_request("GET", path, headers={"Host": "rig-laptop:8600"}, transport=transport)
                assert request.remote == "192.0.2.7"
                response = await server._guard(request, handler)
                assert response.status == 403 and b"state" not in response.body
            handler.assert_not_called()
            assert feed.sent == []
    asyncio.run(run())


def test_without_the_token_no_state_and_no_command_over_http_and_websocket():
    """A panel that demands a token (as off loopback), reached over real HTTP on 127.0.0.1."""
    async def run():
        server, feed = _serve(Access("127.0.0.1", TOKEN))
        async with TestClient(TestServer(server.app, host="127.0.0.1")) as client:
            for path in ("/", "/static/panel.js", "/ws", f"/?token=wrong"):
                response = await client.get(path)
                assert response.status == 403, path
                assert "token" in await response.text()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect("/ws")
            assert refused.value.status == 403
            assert feed.sent == [] and server.pages == set()
            # with the token: the page, a cookie for the rest, and taps that reach the recorder
            response = await client.get(f"/?token={TOKEN}")
            assert response.status == 200 and "capture-app panel" in await response.text()
            assert response.cookies[COOKIE].value == TOKEN
            ws = await client.ws_connect(f"/ws?token={TOKEN}")
            first = json.loads((await ws.receive()).data)
            assert first["type"] == "state" and first["take_state"] == "idle"
            await ws.send_str(json.dumps({"action": "start", "args": {}, "rid": 1}))
            for _ in range(100):
                if feed.sent:
                    break
                await asyncio.sleep(0.02)
            assert [c for c, _ in feed.sent] == ["start"]
            await ws.close()
    asyncio.run(run())


# --- taps --------------------------------------------------------------------------------------------
def test_taps_become_the_control_channels_own_commands():
    model = PanelModel(load_tasks(), operator="ana")
    with pytest.raises(Refused, match="no take is recording"):
        model.command_for("stop", {}, 10)
    with pytest.raises(Refused, match="during a take"):
        model.command_for("subtask", {"index": 0}, 10)
    with pytest.raises(Refused, match="unknown action"):
        model.command_for("rm -rf", {}, 10)
    model.command_for("set_info", {"name": "pour-01", "operator": "ana", "instruction": "pour it"}, 0)
    with pytest.raises(Refused, match="episode name"):
        model.command_for("set_info", {"name": "../etc", "operator": "", "instruction": ""}, 0)
    with pytest.raises(Refused, match="control character"):
        model.command_for("set_info", {"name": "", "operator": "a\x00b", "instruction": ""}, 0)
    cmd, args = model.command_for("start", {}, 0)
    assert (cmd, args) == ("start", {"name": "pour-01", "task": "pour", "instruction": "pour it", "operator": "ana"})
    with pytest.raises(Refused, match="already recording"):
        model.command_for("start", {}, 0)
    model.on_reply("start", True, {"name": "pour-01", "task": "pour", "t_ns": 5}, "")
    assert model.command_for("subtask", {"index": 1}, 123) == (
        "mark_start", {"label": "lift", "description": "use right hand to lift the mug", "hand": "right", "t_ns": 123})
    with pytest.raises(Refused, match="index must be"):
        model.command_for("subtask", {"index": 9}, 123)
    with pytest.raises(Refused, match="not during a take"):
        model.command_for("next_task", {}, 0)
    with pytest.raises(Refused, match="second tap"):
        model.command_for("discard", {}, 0)
    assert model.recording  # a single discard tap changed nothing
    assert model.command_for("abort", {}, 0) == ("stop", {"outcome": "aborted"})
    model.on_reply("stop", True, {"name": "pour-01", "outcome": "aborted", "t_ns": 9}, "")
    assert model.info["name"] == "" and model.takes[0]["verdict"] == "checking quality..."
    model.on_take({"name": "pour-01", "outcome": "aborted", "report": {"verdict": "redo", "problems": ["left hand 40% valid"]}})
    assert model.takes[0] == {"name": "pour-01", "outcome": "aborted", "verdict": "REDO", "reasons": ["left hand 40% valid"]}


def test_two_panels_agree_with_the_recorder():
    """Panel A starts a take and marks; panel B only hears the status: both show the same take."""
    a, b = PanelModel(load_tasks()), PanelModel(load_tasks())
    a.command_for("start", {}, 0)
    a.on_reply("start", True, {"name": "x", "task": "handover", "t_ns": 10}, "")
    recorded = status(recording=True, t_ns=20, segments=[{"label": "grasp"}], current="grasp",
                      episode={"name": "x", "task": "handover"})
    for model in (a, b):
        model.adopt_status(recorded, pending=0)
    assert a.snapshot(recorded, 0)["current"] == b.snapshot(recorded, 0)["current"] == "grasp"
    assert b.snapshot(recorded, 0)["subtasks"] == ["grasp", "handover", "place"]  # the take's task, not B's choice
    stale = status(recording=False, t_ns=5)  # older than A's reply: it must not undo A's view of the take
    a.adopt_status(stale, pending=0)
    assert a.recording
    a.adopt_status(status(recording=True, t_ns=30), pending=1)  # a command in flight: its reply decides
    assert a.current == "grasp"


def test_the_page_state_stays_the_same_size_over_a_day():
    model = PanelModel(load_tasks())
    sizes = []
    for n in range(500):  # 500 takes, each with its verdict
        model.command_for("start", {}, 0)
        model.on_reply("start", True, {"name": f"take-{n:04d}", "t_ns": 2 * n + 1}, "")
        model.command_for("stop", {}, 0)
        model.on_reply("stop", True, {"name": f"take-{n:04d}", "outcome": "saved", "t_ns": 2 * n + 2}, "")
        model.on_take({"name": f"take-{n:04d}", "outcome": "saved", "report": {"verdict": "redo", "problems": ["p"] * 50}})
        sizes.append(len(json.dumps(model.snapshot(status(take_count=n), 0))))
    assert len(model.takes) == MAX_TAKES_LISTED
    assert max(sizes[100:]) - min(sizes[100:]) < 100  # only digits change


# --- the rules and the thumbnails -------------------------------------------------------------------------------
def test_stream_rows_and_bar_follow_the_shared_live_verdict():
    from capture_app.core.live_verdict import bar_verdict, stream_verdicts
    lost = status(recording=True, lost=("left_glove",))
    rows = {r["stream"]: r for r in stream_rows(lost)}
    assert "ground_truth" not in rows
    assert rows["left_glove"]["level"] == "lost" and rows["left_glove"]["colour"] == "#c62828"
    assert rows["head_tracker"]["level"] == "ok" and rows["head_tracker"]["colour"] == "#2e7d32"
    assert {s: (r["state"], r["reason"]) for s, r in rows.items()} == {
        s: (v.state, v.reason) for s, v in stream_verdicts(lost).items()}
    assert (bar(lost)["level"], bar(lost)["text"]) == bar_verdict(lost)
    assert bar(status())["level"] == "ok"


def test_thumbnails_are_small_and_carry_the_overlay():
    import base64

    import cv2

    from calibration.model import CameraIntrinsics
    from capture_app.panel.thumbs import THUMB_WIDTH, thumbnails
    intrinsics = CameraIntrinsics(width=1280, height=720, fx=700.0, fy=700.0, cx=640.0, cy=360.0)
    image = np.full((720, 1280, 3), 90, np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    T = np.eye(4)
    T[:3, 3] = [0.0, 0.0, 0.5]
    view = {"t_eval_ns": 7, "ego": {"encoding": "jpeg", "shape": [720, 1280, 3], "color": jpeg.tobytes()},
            "top": {"encoding": "raw", "shape": [120, 160, 3], "color": np.zeros((120, 160, 3), np.uint8)},
            "T_cam_wrist": {"left": T, "right": None}, "keypoints": {"left": np.full((25, 3), 0.02), "right": None}}
    thumbs = thumbnails(view, intrinsics)
    ego = cv2.imdecode(np.frombuffer(base64.b64decode(thumbs["ego"].split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert ego.shape[1] == THUMB_WIDTH and ego.shape[0] == 180
    b, g, r = (ego[..., i].astype(int) for i in range(3))
    assert ((r > 200) & (b > 200) & (g < 80)).any(), "no magenta fingertip drawn"
    assert ((r > 200) & (g < 80) & (b < 80)).any(), "no red x axis drawn"
    assert thumbs["top"].startswith("data:image/jpeg;base64,") and thumbs["t_ns"] == 7


def test_a_silent_recorder_turns_the_bar_red():
    model = PanelModel(load_tasks())
    assert model.snapshot(status(), 0, status_age_s=0.3)["banner"]["level"] == "ok"
    silent = model.snapshot(status(), 0, status_age_s=5.0)["banner"]
    assert silent["level"] == "lost" and "no word from the recorder for 5 s" in silent["text"]


def test_the_url_and_its_qr_code_for_a_phone():
    import io

    from capture_app.panel.app import panel_url, print_url
    from capture_app.panel.commands import panel_address
    assert panel_url("127.0.0.1", 8600, None) == "http://127.0.0.1:8600/"
    url = panel_url("0.0.0.0", 8600, TOKEN)
    assert url.endswith(f":8600/?token={TOKEN}") and "0.0.0.0" not in url  # the host's name, reachable
    out = io.StringIO()
    print_url(url, qr=True, out=out)
    text = out.getvalue()
    assert f"panel: {url}" in text and text.count("\n") > 15 and "█" in text  # a QR code in block characters
    assert panel_address("8600") == ("127.0.0.1", 8600) and panel_address("0.0.0.0:0") == ("0.0.0.0", 0)
    with pytest.raises(Exception, match="65535"):
        panel_address("0.0.0.0:70000")


def test_a_panel_started_later_lists_the_sessions_takes_from_the_recorder():
    model = PanelModel(load_tasks())
    history = [{"name": "a", "outcome": "saved", "checking": False,
                "report": {"verdict": "redo", "problems": ["right hand 50% valid"], "hands": {}}},
               {"name": "b", "outcome": "discarded", "checking": False, "report": None},
               {"name": "c", "outcome": "saved", "checking": True, "report": None}]
    recorded = status(t_ns=9)
    recorded["takes"].update(history=history, operator="ana")
    model.adopt_status(recorded, pending=1)  # the history is the recorder's, whatever is in flight
    snap = model.snapshot(recorded, 1)
    assert [(t["name"], t["verdict"]) for t in snap["takes"]] == [
        ("c", "checking quality..."), ("b", "no file kept"), ("a", "REDO")]
    assert snap["takes"][2]["reasons"] == ["right hand 50% valid"] and snap["info"]["operator"] == "ana"


def test_a_malformed_tap_is_answered_and_runs_nothing():
    async def run():
        server, feed = _serve(Access.for_bind("127.0.0.1"))
        async with TestClient(TestServer(server.app, host="127.0.0.1")) as client:
            ws = await client.ws_connect("/ws")
            for bad in ("not json", "[1, 2]", '{"args": {}}', '{"action": 5}', '{"action": "start", "args": [1]}'):
                await ws.send_str(bad)
            answers = []
            while len(answers) < 5:
                message = json.loads((await ws.receive()).data)
                if message["type"] == "ack":
                    answers.append(message)
            assert all(not a["ok"] for a in answers) and feed.sent == []
            await ws.close()
    asyncio.run(run())


def test_a_hands_free_input_missing_on_the_recorder_is_on_the_page():
    model = PanelModel(load_tasks())
    assert model.snapshot(status(), 0)["handsfree_missing"] == []
    with_pedal_out = {**status(), "handsfree": {"pedal": "missing", "voice": None, "missing": ["pedal"]}}
    assert model.snapshot(with_pedal_out, 0)["handsfree_missing"] == ["pedal"]
