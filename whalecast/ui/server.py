"""``whalecast ui``: the web page's server, a process of its own that only reads Redis.

At start it reads every model's latest-value hash (one row per series) and the
newest entries of the predictions stream (the chart's recent predictions), then
follows the stream with ``XREAD BLOCK``. The rows each batch changed, with their
newest stored close, go to every open page at once as one server-sent event
(``rows``; no more often than ``ui.push_seconds``); every ``ui.status_seconds``
the daemons' status documents (:mod:`inference.status`) go out as ``status``. A
page that connects first gets ``snapshot`` (all rows and the status). Routes, all
GET:

- ``/`` the page, ``/static/...`` its script, style and the vendored chart library;
- ``/events`` the event stream; ``/api/rows``, ``/api/status`` the same as JSON;
- ``/api/series?tag=<series tag>`` one series' stored bars and recent predictions;
- ``/healthz``.

Nothing here writes to Redis, and every response carries a strict
Content-Security-Policy (scripts only from this server, no inline script).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.settings import UiSettings
from whalecast.ui.redisread import RedisReader
from whalecast.ui.state import Board

log = get_logger(__name__)

STATIC = Path(str(resources.files("whalecast.ui").joinpath("static")))
#: Stream entries read at start-up for the charts (the stream's default MAXLEN).
BACKFILL_ENTRIES = 100_000
CLIENT_QUEUE = 64  # events a slow page may fall behind by before it is dropped (it reconnects)
HEARTBEAT_SECONDS = 15.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def event(name: str, data: Any) -> bytes:
    """One server-sent event; JSON never holds a raw newline, so one ``data:`` line."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), allow_nan=False)}\n\n".encode()


class UiServer:
    """The page's state and its event fan-out; :meth:`app` is the aiohttp application."""

    def __init__(self, settings: UiSettings, redis: Any, keys: Keys) -> None:
        self.settings = settings
        self.reader = RedisReader(redis, keys)
        self.board = Board(settings.history_bars)
        self.status: dict[str, Any] = {"replicas": [], "read_ms": None}
        self.clients: set[asyncio.Queue[bytes | None]] = set()
        self.last_id = "0-0"
        self._last_push = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # --- reading Redis ---------------------------------------------------------------------

    async def load(self) -> None:
        for raw in await self.reader.latest_messages():
            self.board.add_raw(raw)
        self.last_id, recent = await self.reader.recent(BACKFILL_ENTRIES)
        for raw in recent:
            self.board.add_raw(raw)
        await self._fill_closes(list(self.board.rows))
        self.board.changed.clear()
        await self.read_status()
        log.info("ui loaded", series=len(self.board.rows), stream_entries=len(recent))

    async def _fill_closes(self, tags: list[str]) -> None:
        for start in range(0, len(tags), 1000):
            chunk = [self.board.rows[tag].series for tag in tags[start : start + 1000]]
            for tag, bar in (await self.reader.newest_bars(chunk)).items():
                self.board.set_close(tag, int(bar["open_ms"]), bar["close"])

    async def read_status(self) -> None:
        self.status = {"replicas": await self.reader.replicas(), "read_ms": int(time.time() * 1000)}

    async def follow_once(self) -> None:
        """One batch from the stream, pushed at once (no more often than ``push_seconds``)."""
        self.last_id, messages = await self.reader.follow(self.last_id, block_ms=1000, count=10_000)
        for raw in messages:
            self.board.add_raw(raw)
        if self.board.changed:
            wait = self._last_push + self.settings.push_seconds - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.push_once()

    async def push_once(self) -> None:
        tags = sorted(self.board.changed)
        if not tags:
            return
        await self._fill_closes(tags)
        rows = [row.as_json() for row in self.board.take_changed()]
        self._last_push = time.monotonic()
        self.broadcast(event("rows", rows))

    # --- fan-out --------------------------------------------------------------------------

    def broadcast(self, payload: bytes) -> None:
        for queue in list(self.clients):
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:  # too slow: cut it off; the page reconnects for a snapshot
                self.clients.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)

    async def _loop(self, name: str, step: Callable[[], Awaitable[None]], pause: float) -> None:
        """Run ``step`` until stopped; a Redis failure is logged and retried after a pause.

        The stop flag, not only the cancel, ends it: a cancel that lands inside the Redis
        client can come back as a connection error (or not at all) and must not keep the
        loop, and with it the process's shutdown, going."""
        while not self._stopping.is_set():
            try:
                await step()
            except (RedisError, OSError) as e:  # loop boundary: Redis may come back
                if self._stopping.is_set():
                    break
                log.warning("ui cannot read redis", task=name, error=repr(e))
                pause_seconds = 1.0
            else:
                pause_seconds = pause
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause_seconds)

    async def _status_step(self) -> None:
        await self.read_status()
        self.broadcast(event("status", self.status))

    def start_tasks(self) -> None:
        s = self.settings
        self._stopping.clear()
        for name, step, pause in (
            ("follow", self.follow_once, 0.0),
            ("status", self._status_step, s.status_seconds),
        ):
            task = asyncio.create_task(self._loop(name, step, pause), name=f"ui-{name}")
            self._tasks.append(task)

    async def stop_tasks(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for queue in list(self.clients):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    # --- HTTP ------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })  # fmt: skip
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self.clients.add(queue)
        try:
            snapshot = {"rows": self.board.snapshot(), "status": self.status}
            await response.write(event("snapshot", snapshot))
            while True:
                try:
                    payload = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    payload = b": keep-alive\n\n"
                if payload is None:
                    break
                await response.write(payload)
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self.clients.discard(queue)
        return response

    async def series(self, request: web.Request) -> web.Response:
        tag = request.query.get("tag", "")
        row = self.board.rows.get(tag)
        if row is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "unknown series"}),
                                   content_type="application/json")  # fmt: skip
        bars = await self.reader.bars(row.series)
        body = {"row": row.as_json(), "bars": bars,
                "predictions": self.board.histories[tag].as_json()}  # fmt: skip
        return web.json_response(body, dumps=_dumps)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_security_headers])

        async def page(_request: web.Request) -> web.FileResponse:
            return web.FileResponse(STATIC / "index.html")

        async def rows(_request: web.Request) -> web.Response:
            return web.json_response(self.board.snapshot(), dumps=_dumps)

        async def status(_request: web.Request) -> web.Response:
            return web.json_response(self.status, dumps=_dumps)

        async def healthz(_request: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "series": len(self.board.rows)})

        app.router.add_get("/", page)
        app.router.add_static("/static", STATIC, follow_symlinks=False)
        app.router.add_get("/events", self.events)
        app.router.add_get("/api/rows", rows)
        app.router.add_get("/api/status", status)
        app.router.add_get("/api/series", self.series)
        app.router.add_get("/healthz", healthz)
        return app


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


@web.middleware
async def _security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response
