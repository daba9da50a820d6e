"""The daemon's background tasks: named, an unexpected end logged, a bounded stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator

from whalecast.logs import get_logger

log = get_logger(__name__)


class Tasks:
    """Tasks that run until the daemon stops (feeds, model watcher, status, ...)."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(self._tasks)

    def spawn(self, name: str, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(_ended)
        self._tasks.append(task)

    async def cancel(self, timeout_seconds: float) -> None:
        """Cancel every task and wait for them, at most ``timeout_seconds``.

        Bounded: a feed whose client never finishes closing cannot hang a stop.
        """
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=timeout_seconds)
            if pending:
                log.warning("tasks abandoned at stop", tasks=sorted(t.get_name() for t in pending))


def _ended(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("task ended with an error", task=task.get_name(), error=repr(error))
