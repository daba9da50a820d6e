"""A TCP proxy in front of a redis-server that loses replies on purpose.

``cut_replies = n``: the next ``n`` replies from Redis (after ``pass_replies`` more
go through) are dropped and their connections closed, after Redis has run the commands. The client sees a broken
connection for a write that did happen: the case a retry must not duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib


class ReplyCuttingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut_replies = 0
        self.pass_replies = 0
        self.cut = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> ReplyCuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers |= {client_w, server_w}
        requests = asyncio.create_task(self._pump(client_r, server_w, replies=False))
        replies = asyncio.create_task(self._pump(server_r, client_w, replies=True))
        await asyncio.wait({requests, replies}, return_when=asyncio.FIRST_COMPLETED)
        for task in (requests, replies):
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if replies and self.pass_replies > 0:
                    self.pass_replies -= 1
                elif replies and self.cut_replies > 0:
                    self.cut_replies -= 1
                    self.cut += 1
                    return  # the reply is lost; the connection closes
                writer.write(data)
                await writer.drain()
