"""The one way tests wait: poll a condition until it holds, or fail naming what was awaited.

Tests never sleep and then assert; they wait for the state they need (or for a marker
published after anything they must not see). A loaded machine makes a wait longer, never
a test wrong.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.02


def _describe(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


async def wait_until(
    condition: Callable[[], bool],
    timeout_seconds: float = 30.0,
    what: str | Callable[[], str] = "condition",
) -> None:
    """Poll ``condition`` on the running loop; AssertionError naming ``what`` on timeout."""
    try:
        async with asyncio.timeout(timeout_seconds):
            while not condition():  # noqa: ASYNC110 - state changed by other tasks
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout_seconds} s waiting for {_describe(what)}"
        ) from None


async def wait_until_true(
    condition: Callable[[], Awaitable[bool]],
    timeout_seconds: float = 30.0,
    what: str | Callable[[], str] = "condition",
) -> None:
    """The same for a condition that must ask something over the network (awaited)."""
    try:
        async with asyncio.timeout(timeout_seconds):
            while not await condition():  # noqa: ASYNC110 - state kept by another process
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout_seconds} s waiting for {_describe(what)}"
        ) from None


def wait_until_sync(
    condition: Callable[[], bool],
    timeout_seconds: float = 30.0,
    what: str | Callable[[], str] = "condition",
) -> None:
    """The same for code outside an event loop (processes, threads)."""
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_seconds} s waiting for {_describe(what)}"
            )
        time.sleep(POLL_SECONDS)
