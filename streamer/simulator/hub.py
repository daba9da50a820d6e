"""Websocket connections of one feed: registry, fan-out with a send timeout, forced drops.

Events go out as pre-built websocket text frames, one transport write per connection
and batch: the per-message ``send_str`` path costs more than building the event, and
the simulator must outrun the client it is measuring. Replies, pongs and closes still
use aiohttp's writer; both write to the transport from the event loop, in order.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from whalecast.logs import get_logger

log = get_logger(__name__)
_ids = itertools.count(1)


@dataclass(eq=False)
class Connection:
    """One client websocket and what it subscribed to."""

    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    path: str
    id: int = field(default_factory=lambda: next(_ids))
    streams: set[str] = field(default_factory=set)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    incoming: deque[float] = field(default_factory=deque)
    opened: float = field(default_factory=time.monotonic)
    heard: float = 0.0  # monotonic time of the last traffic either way (idle timeouts)
    sent: int = 0


class Hub:
    """The open connections of one feed (``exchange`` or ``whale``)."""

    def __init__(self, feed: str, counters: Counter[str], send_timeout_seconds: float) -> None:
        self.feed = feed
        self.counters = counters
        self.send_timeout_seconds = send_timeout_seconds
        self.connections: dict[int, Connection] = {}

    def __len__(self) -> int:
        return len(self.connections)

    def add(self, ws: web.WebSocketResponse, request: web.Request) -> Connection:
        conn = Connection(ws, request.transport, request.path)
        self.connections[conn.id] = conn
        self.counters[f"{self.feed}_connections"] += 1
        log.debug("ws_connected", feed=self.feed, conn=conn.id, path=request.path)
        return conn

    def remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is not None:
            log.debug("ws_disconnected", feed=self.feed, conn=conn.id, sent=conn.sent)

    async def close(self, conn: Connection, code: int, reason: str) -> None:
        self.remove(conn)
        await conn.ws.close(code=code, message=reason.encode())

    async def drop(self, code: int = WSCloseCode.GOING_AWAY, reason: str = "going away") -> int:
        """Close every connection (default 1001, as a server shutting down). Returns the count."""
        conns = list(self.connections.values())
        await asyncio.gather(*(self.close(c, code, reason) for c in conns), return_exceptions=True)
        self.counters[f"{self.feed}_dropped"] += len(conns)
        return len(conns)

    async def _send_all(self, conn: Connection, messages: list[str]) -> None:
        transport = conn.transport
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            return
        transport.write(b"".join(map(text_frame, messages)))
        conn.sent += len(messages)
        # the client reads slower than we write: wait for it (no public drain for a raw transport)
        while transport.get_write_buffer_size() > WRITE_HIGH_WATER and not transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    async def send(self, conn: Connection, messages: list[str]) -> None:
        """Send in order; a client too slow for ``send_timeout_seconds`` is disconnected."""
        if not messages or conn.ws.closed:
            return
        try:
            await asyncio.wait_for(self._send_all(conn, messages), self.send_timeout_seconds)
        except TimeoutError:
            self.counters[f"{self.feed}_slow_client_closed"] += 1
            log.warning("ws_slow_client_closed", feed=self.feed, conn=conn.id)
            await self.close(conn, WSCloseCode.POLICY_VIOLATION, "too slow")

    async def fan_out(self, batches: Iterable[tuple[Connection, list[str]]]) -> None:
        """Send each connection its batch; connections proceed concurrently."""
        await asyncio.gather(*(self.send(conn, msgs) for conn, msgs in batches if msgs))


WRITE_HIGH_WATER = 1 << 20  # bytes buffered for one client before we wait for it


def text_frame(text: str) -> bytes:
    """An unmasked, uncompressed, final websocket text frame (server to client, RFC 6455)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload
