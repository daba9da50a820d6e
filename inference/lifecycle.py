"""The daemon's life: its background tasks, ``serve`` until asked to stop, signals.

:class:`inference.daemon.Daemon` builds the parts; this module runs them. A stop
(SIGTERM/SIGINT, or ``stop`` set) drains the bar in flight, then cancels the
tasks, waiting for them at most ``inference.shutdown_grace_seconds``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from inference.daemon import Daemon, all_series
from whalecast.acl import check_permissions
from whalecast.domain import Series
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.redisconn import RedisHandle, RedisUnavailable, describe_redis_error
from whalecast.settings import Settings

log = get_logger(__name__)


async def serve(
    settings: Settings,
    metrics: Metrics,
    stop: asyncio.Event,
    on_started: Callable[[Daemon], Awaitable[None]] | None = None,
    on_stopping: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Run until ``stop`` is set; the exit status. ``on_stopping`` runs once ``stop`` is
    set, while the daemon and Redis still run (what ``on_started`` began ends there)."""
    started = time.monotonic()
    async with RedisHandle(settings.redis) as redis:
        sample = next(iter(all_series(settings)), Series("none", "NONE/NONE", "1h"))
        sync = settings.inference.registry_sync == "redis"
        await check_permissions(redis, settings.redis, sample, registry_sync=sync)
        daemon = Daemon(settings, metrics, redis, started)
        try:
            await daemon.start()
        except RedisError as e:  # e.g. an ACL without a command the daemon needs
            await daemon.stop()
            raise RedisUnavailable(
                describe_redis_error(e, settings.redis, settings.redis.url)
            ) from e
        if on_started is not None:
            await on_started(daemon)
        await stop.wait()
        if on_stopping is not None:
            await on_stopping()
        log.info("stop requested, finishing the bar in flight")
        await daemon.stop()
    return 0


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_forever(settings: Settings, metrics: Metrics) -> int:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    return await serve(settings, metrics, stop)
