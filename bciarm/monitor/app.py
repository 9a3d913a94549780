"""The monitor's web app (Starlette + uvicorn; no front-end build, nothing from a CDN).

Routes (every one needs the session token: ``?token=…``, or the
``X-Bciarm-Token`` header; without it: 401):

* ``GET /`` — the page (:mod:`bciarm.monitor.page`: plain HTML, CSS, JS, canvas);
* ``GET /api/state`` — one snapshot (JSON): :meth:`LiveState.snapshot` + ``health``;
* ``GET /api/stream`` — the same snapshot every ``period_s`` as server-sent events;
* ``POST /api/command`` — ``{"cmd": "estop" | "resume" | "pause" | "start" | "assist" |
  "gain", "level"/"gain": x}`` through the observer (the session's own control path);
* ``WS /api/ws`` — the same commands (with an ``id`` echoed in the reply) over a
  WebSocket the page keeps open: a press costs one frame on an open
  connection, no request set-up.  Without the token the handshake is refused (403).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bciarm.monitor.live import LiveState
from bciarm.monitor.observer import CommandError, SessionObserver
from bciarm.monitor.page import PAGE

log = logging.getLogger("bciarm.monitor")

TOKEN_HEADER = "x-bciarm-token"


class Monitor:
    """Glue: an observer pumping into a :class:`LiveState`, served by a Starlette app.

    Parameters
    ----------
    observer : SessionObserver
    token : str, optional
        The session token (default: a fresh random one, printed by ``bciarm monitor``).
    period_s : float
        Update period of the event stream (5 Hz: live enough for a person to follow,
        light on the CPU the session and the e-stop path share).
    """

    def __init__(self, observer: SessionObserver, token: str | None = None,
                 period_s: float = 0.2) -> None:
        self.observer = observer
        self.token = token or secrets.token_urlsafe(24)
        self.period_s = period_s
        self.live = LiveState()
        self.stop = threading.Event()
        self._health: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self.app = Starlette(routes=[
            Route("/", self.page),
            Route("/api/state", self.state),
            Route("/api/stream", self.stream),
            Route("/api/command", self.command, methods=["POST"]),
            WebSocketRoute("/api/ws", self.ws),
        ])

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        """Start pumping messages and polling health (daemon threads)."""
        for target in (self._pump, self._poll_health):
            t = threading.Thread(target=target, daemon=True, name=f"monitor-{target.__name__}")
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(5)

    def _pump(self) -> None:
        try:
            self.observer.pump(self.live.feed, self.stop)
        except Exception:  # noqa: BLE001 - shown on the page as a dead feed
            log.exception("monitor: the message feed failed")

    def _poll_health(self) -> None:
        while not self.stop.is_set():
            try:
                self._health = {"ok": True, **self.observer.health()}
            except CommandError as exc:
                self._health = {"ok": False, "error": str(exc),
                                "ended": self.observer.ended()}
            except Exception as exc:  # noqa: BLE001
                self._health = {"ok": False, "error": repr(exc)}
            self.stop.wait(0.25)

    # ------------------------------------------------------------------ http

    def authorised(self, request: HTTPConnection) -> bool:
        given = request.query_params.get("token") or request.headers.get(TOKEN_HEADER) or ""
        return secrets.compare_digest(given.encode(), self.token.encode())

    def _denied(self) -> Response:
        return PlainTextResponse("401: this monitor needs its session token "
                                 "(printed by `bciarm monitor`)", status_code=401)

    def snapshot(self) -> dict[str, Any]:
        snap = self.live.snapshot()
        snap["health"] = self._health
        snap["observer"] = self.observer.kind
        snap["ended"] = self.observer.ended()
        return snap

    async def page(self, request: Request) -> Response:
        if not self.authorised(request):
            return self._denied()
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store",
                                           "Referrer-Policy": "no-referrer"})

    async def state(self, request: Request) -> Response:
        if not self.authorised(request):
            return self._denied()
        return JSONResponse(self.snapshot())

    async def stream(self, request: Request) -> Response:
        if not self.authorised(request):
            return self._denied()

        async def events():
            while not self.stop.is_set():
                if await request.is_disconnected():
                    return
                yield f"data: {json.dumps(self.snapshot())}\n\n"
                await asyncio.sleep(self.period_s)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def command(self, request: Request) -> Response:
        t_recv = time.monotonic_ns()
        if not self.authorised(request):
            return self._denied()
        try:
            body = await request.json()
            cmd = str(body.pop("cmd"))
        except (ValueError, KeyError, AttributeError, TypeError):
            return JSONResponse({"ok": False, "error": "send JSON {\"cmd\": ...}"},
                                status_code=400)
        status, reply = await self.run_command(cmd, body, t_recv)
        return JSONResponse(reply, status_code=status)

    async def ws(self, websocket: WebSocket) -> None:
        if not self.authorised(websocket):
            await websocket.close(code=1008)  # before accept: the handshake gets a 403
            return
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                t_recv = time.monotonic_ns()
                rid = None
                try:
                    body = json.loads(text)
                    rid = body.pop("id", None)
                    cmd = str(body.pop("cmd"))
                except (ValueError, KeyError, AttributeError, TypeError):
                    await websocket.send_text(json.dumps(
                        {"id": rid, "ok": False, "error": "send JSON {\"cmd\": ...}"}))
                    continue
                _, reply = await self.run_command(cmd, body, t_recv)
                await websocket.send_text(json.dumps({"id": rid, **reply}))
        except WebSocketDisconnect:
            return

    async def run_command(self, cmd: str, body: dict[str, Any],
                          t_recv: int) -> tuple[int, dict[str, Any]]:
        """Run one operator command; return (HTTP status, reply)."""
        try:
            if cmd == "estop":
                # In the event loop, at once: no thread-pool hop, nothing queued before it.
                reply = self.observer.command(cmd, **body)
            else:
                reply = await run_in_threadpool(self.observer.command, cmd, **body)
        except CommandError as exc:
            return 409, {"ok": False, "error": str(exc)}
        except TypeError as exc:
            return 400, {"ok": False, "error": str(exc)}
        log.warning("operator: %s %s", cmd, body)
        # When the command arrived and was answered (monotonic ns): the page shows the delay.
        return 200, {"ok": True, **reply, "t_recv_ns": t_recv, "t_reply_ns": time.monotonic_ns()}


def serve(monitor: Monitor, host: str = "127.0.0.1", port: int = 8765,
          ready: threading.Event | None = None) -> Any:
    """A uvicorn server for ``monitor.app`` (call ``.run()``, or ``.should_exit = True``)."""
    import uvicorn

    config = uvicorn.Config(monitor.app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=1, lifespan="off")
    return uvicorn.Server(config)
