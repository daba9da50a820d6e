"""Running the web page: its Redis connection, its HTTP site, its life cycle.

:class:`UiRunner` loads the page's state, starts its reading tasks and serves on
``ui.host:ui.port`` (the demo runs one beside the daemon); :func:`serve_ui` is
``whalecast ui``: connect (to ``redis.url``, or to a running embedded server's
socket), serve until stopped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.redisconn import EmbeddedRedis, RedisUnavailable, connect, describe_redis_error
from whalecast.settings import Settings
from whalecast.ui.server import UiServer

log = get_logger(__name__)


class UiRunner:
    """Loads the board, starts the reading tasks and serves on ``ui.host:ui.port``."""

    def __init__(self, settings: Settings, redis: Any) -> None:
        self.ui = UiServer(settings.ui, redis, Keys(settings.redis.prefix))
        self.host = settings.ui.host
        self.port = settings.ui.port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> UiRunner:
        await self.ui.load()
        self.ui.start_tasks()
        self._runner = web.AppRunner(
            self.ui.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()
        if self._runner.addresses:
            self.port = int(self._runner.addresses[0][1])
        log.info("ui listening", url=self.url)
        return self

    async def stop(self) -> None:
        await self.ui.stop_tasks()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def redis_url(settings: Settings) -> str:
    """The Redis to read: the configured URL, or a running embedded server's socket."""
    url = settings.redis.url
    if url != "embedded":
        return url
    socket = EmbeddedRedis(settings.redis.state_dir).socket_path
    if not socket.exists():
        raise RedisUnavailable(
            f"redis.url is 'embedded' and no embedded Redis runs at {socket}: start "
            "`whalecast run` with the same config first, or set redis.url"
        )
    return f"unix://{socket}"


async def serve_ui(settings: Settings, stop: asyncio.Event) -> int:
    """``whalecast ui``: serve until ``stop`` is set."""
    url = redis_url(settings)
    redis = connect(settings.redis, url)
    try:
        try:
            await redis.ping()
        except (RedisError, OSError) as e:
            raise RedisUnavailable(describe_redis_error(e, settings.redis, url)) from e
        runner = await UiRunner(settings, redis).start()
        print(f"whalecast ui on {runner.url}", flush=True)
        await stop.wait()
        await runner.stop()
    finally:
        await redis.aclose()
    return 0
