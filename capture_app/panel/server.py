"""The panel's web server (aiohttp): one page, its two static files, and a WebSocket.

One asyncio loop owns the ``PanelModel``; the feed's threads (``PanelFeed``) only hand it the newest
status / view and the command replies (``call_soon_threadsafe``). Every ``STATE_PERIOD_S`` the loop
builds the page's state and, at most ``THUMB_HZ`` a second and only while a page is open, thumbnails
(in a worker thread). Each page has a writer task and one slot per kind of message holding only the
newest (bounded: a slow phone gets fewer updates, never a growing queue); acknowledgements of its own
taps go in a short bounded queue.

WebSocket messages, page -> panel: ``{"action": ACTION, "args": {...}, "rid": N}`` (model.ACTIONS);
panel -> page: ``{"type": "state", ...}`` (model.snapshot), ``{"type": "thumbs", "ego", "top", "t_ns"}``
(JPEG data URLs) and ``{"type": "ack", "rid", "ok", "error", "cmd"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from importlib import resources

from aiohttp import WSMsgType, web

from capture_app.panel.access import COOKIE, Access
from capture_app.panel.model import PanelModel, Refused
from capture_app.panel.thumbs import THUMB_HZ, thumbnails

log = logging.getLogger(__name__)

STATE_PERIOD_S = 0.1       # the page's state is rebuilt this often (the recorder's status comes 5 times a second)
MAX_PAGES = 8              # open pages at once; more are refused (each costs a thumbnail send)
MAX_MESSAGE_BYTES = 16384  # a tap is a few hundred bytes; the take info at most ~5 kB
STATIC = {"panel.js": "application/javascript", "panel.css": "text/css"}


def _static(name: str) -> bytes:
    return resources.files("capture_app.panel").joinpath("static", name).read_bytes()


class _Page:
    """One open page: the newest state and thumbnails to send, its acknowledgements, and its writer task."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self.slots: dict[str, str] = {}
        self.acks: deque = deque(maxlen=20)
        self.wake = asyncio.Event()
        self.sent_state = ""

    def put(self, kind: str, text: str) -> None:
        if kind == "state" and text == self.sent_state:
            return
        self.slots[kind] = text
        self.wake.set()

    async def write(self) -> None:
        try:
            await self._write()
        except (ConnectionError, RuntimeError):  # the phone went away mid-send: its handler ends the page
            pass

    async def _write(self) -> None:
        while not self.ws.closed:
            await self.wake.wait()
            self.wake.clear()
            while self.acks:
                await self.ws.send_str(self.acks.popleft())
            for kind in ("state", "thumbs"):
                text = self.slots.pop(kind, None)
                if text is not None:
                    await self.ws.send_str(text)
                    if kind == "state":
                        self.sent_state = text


class PanelServer:
    """Serves the page for ``feed`` (a ``PanelFeed``) with ``model``; ``access`` decides who may."""

    def __init__(self, feed, model: PanelModel, access: Access, ego_intrinsics=None, thumb_hz: float = THUMB_HZ):
        self.feed, self.model, self.access = feed, model, access
        self.ego_intrinsics = ego_intrinsics
        self.thumb_period_s = 1.0 / thumb_hz if thumb_hz > 0 else None
        self.pages: set[_Page] = set()
        self.refused = 0
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_MESSAGE_BYTES)
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/static/{name}", self._file)
        self.app.router.add_get("/ws", self._websocket)
        self.app.on_startup.append(self._start_loops)
        self.app.on_shutdown.append(self._close_pages)
        self._loops: list[asyncio.Task] = []
        self._last_status, self._status_seen = None, time.monotonic()

    # --- access ------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler):
        offered = request.query.get("token") or request.cookies.get(COOKIE)
        websocket = request.path == "/ws"
        why = self.access.check(request.remote, request.headers.get("Host", ""), offered,
                                request.headers.get("Origin"), websocket)
        if why is not None:
            self.refused += 1
            log.warning("panel: refused %s %s from %s: %s", request.method, request.path, request.remote, why)
            return web.Response(status=403, text=f"refused: {why}\n")
        response = await handler(request)
        if self.access.token is not None and request.query.get("token"):
            response.set_cookie(COOKIE, self.access.token, httponly=True, samesite="Strict")
        return response

    # --- routes ------------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=_static("index.html"), content_type="text/html",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=STATIC[name], headers={"Cache-Control": "no-store"})

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        if len(self.pages) >= MAX_PAGES:
            return web.Response(status=503, text=f"refused: {MAX_PAGES} pages are open already\n")
        ws = web.WebSocketResponse(heartbeat=10, max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        page = _Page(ws)
        self.pages.add(page)
        writer = asyncio.create_task(page.write())
        page.put("state", self._state_text())
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._tap(page, message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self.pages.discard(page)
            writer.cancel()
        return ws

    # --- taps ---------------------------------------------------------------------------------
    def _ack(self, page: _Page, rid, cmd: str, ok: bool, error: str = "") -> None:
        page.acks.append(json.dumps({"type": "ack", "rid": rid, "cmd": cmd, "ok": ok, "error": error}))
        page.wake.set()

    def _tap(self, page: _Page, data: str) -> None:
        try:
            tap = json.loads(data)
            action, args, rid = tap["action"], tap.get("args") or {}, tap.get("rid")
            if not isinstance(action, str):
                raise KeyError("action")
        except (ValueError, KeyError, TypeError, AttributeError):
            self._ack(page, None, "", False, "not a tap: send {\"action\": ..., \"args\": {...}, \"rid\": N}")
            return
        view = self.feed.view
        try:
            command = self.model.command_for(action, args, int(view["t_eval_ns"]) if view else 0)
        except Refused as exc:
            self.model.say(str(exc), error=True)
            self._ack(page, rid, action, False, str(exc))
            self._broadcast_state()
            return
        if command is None:  # handled in the panel (task choice, take info)
            self._ack(page, rid, action, True)
            self._broadcast_state()
            return
        cmd, cmd_args = command
        loop = asyncio.get_running_loop()

        def replied(ok: bool, result: dict, error: str) -> None:  # on the feed's command thread
            loop.call_soon_threadsafe(self._replied, page, rid, cmd, ok, result, error)
        self.feed.send(cmd, cmd_args, replied)
        self._broadcast_state()

    def _replied(self, page: _Page, rid, cmd: str, ok: bool, result: dict, error: str) -> None:
        self.model.on_reply(cmd, ok, result, error)
        if page in self.pages:
            self._ack(page, rid, cmd, ok, error)
        self._broadcast_state()

    # --- the loops ----------------------------------------------------------------------------
    def _state_text(self) -> str:
        status = self.feed.status or {}
        now = time.monotonic()
        if status is not self._last_status:
            self._last_status, self._status_seen = status, now
        while self.feed.takes_finished:
            self.model.on_take(self.feed.takes_finished.popleft())
        self.model.adopt_status(status, self.feed.pending)
        return json.dumps(self.model.snapshot(status, self.feed.pending, now - self._status_seen), allow_nan=False,
                          default=str)

    def _broadcast_state(self) -> None:
        text = self._state_text()
        for page in list(self.pages):
            page.put("state", text)

    async def _start_loops(self, app) -> None:
        self._loops = [asyncio.create_task(self._state_loop())]
        if self.thumb_period_s is not None:
            self._loops.append(asyncio.create_task(self._thumb_loop()))

    async def _state_loop(self) -> None:
        while True:
            await asyncio.sleep(STATE_PERIOD_S)
            try:
                self._broadcast_state()
            except Exception:
                log.exception("panel: building the page's state failed")

    async def _thumb_loop(self) -> None:
        loop = asyncio.get_running_loop()
        shown_t = None
        while True:
            await asyncio.sleep(self.thumb_period_s)
            view = self.feed.view
            if not self.pages or view is None or view.get("t_eval_ns") == shown_t:
                continue
            shown_t = view.get("t_eval_ns")
            try:
                thumbs = await loop.run_in_executor(None, thumbnails, view, self.ego_intrinsics,
                                                    dict(self.feed.video_images))
            except Exception as exc:  # a malformed view: counted, the next one may be fine
                self.feed.malformed += 1
                log.warning("panel: a thumbnail could not be made: %s", exc)
                continue
            text = json.dumps({"type": "thumbs", **thumbs})
            for page in list(self.pages):
                page.put("thumbs", text)

    async def _close_pages(self, app) -> None:
        for task in self._loops:
            task.cancel()
        for page in list(self.pages):
            await page.ws.close()
