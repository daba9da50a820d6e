"""The one reconnect loop both feeds run: a session, why it ended, counted and logged,
the backoff, and the next session.

A feed (a candle connection, the whale feed) brings what is its own as a
:class:`FeedSession`: how to wait for leave to connect, how to run one session, and
what of an error logs may show. :class:`ReconnectLoop` does the rest the same way for
both: it classifies the session's end into a cause (``error``, or the watchdog's
``stale``, ``lifetime``, ``recreate``), counts it in ``feed_reconnects``, records it
in the link's :class:`~streamer.link.LinkStatus`, logs it, and waits the one
:class:`~streamer.backoff.Backoff` (not after a proactive end, which is no failure).
The feed calls :meth:`ReconnectLoop.up` once a session works and
:meth:`ReconnectLoop.down` when it ends; that keeps ``feed_connected``, the backoff's
healthy period and the link status in step.

:func:`session_over` is the watchdog's rule (pure, times passed in).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from streamer.backoff import Backoff
from streamer.link import LinkStatus, iso
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.settings import FeedSettings

log = get_logger(__name__)

PROACTIVE = ("lifetime", "recreate")  # a session ended on purpose: reconnect at once
CAUSES = ("error", "stale", *PROACTIVE)  # why a session ended (reconnects' cause label)
Sleep = Callable[[float], Awaitable[None]]


class SessionLost(Exception):
    """A session failed, and its message says how plainly (logged without the type)."""


class FeedSession(Protocol):
    """What one feed brings to the reconnect loop: its own part of a session."""

    async def before_session(self) -> None:
        """Waits until a session may open (an exchange's subscription pace)."""

    async def session(self) -> str:
        """One session: returns the cause when it ended on its own, raises when it failed."""

    def redact(self, text: str) -> str:
        """An error's text as logs and ``/readyz`` may show it."""


@dataclass(frozen=True)
class FeedLabels:
    """Who a loop is, in metrics (``exchange``, ``feed`` labels) and in its log event."""

    exchange: str  # "binance", or "whale"
    feed: str  # "candles" or "alerts"
    event: str  # the log event of a reconnect, e.g. "candle feed reconnecting"


def session_over(feed: FeedSettings, now: float, started: float, last_message: float) -> str | None:
    """The watchdog: why a session should end now (monotonic seconds), or None."""
    if now - last_message > feed.stale_after_seconds:
        return "stale"
    age = now - started
    if age > feed.connection_lifetime_seconds:
        return "lifetime"
    if age > feed.client_recreate_seconds:
        return "recreate"
    return None


def describe(error: Exception) -> str:
    """A session's error for the log: a :class:`SessionLost` by its message alone."""
    return str(error) if isinstance(error, SessionLost) else f"{type(error).__name__}: {error}"


class ReconnectLoop:
    """Runs a feed's sessions forever: session → cause → count and log → backoff."""

    def __init__(
        self,
        labels: FeedLabels,
        link: LinkStatus,
        backoff: Backoff,
        metrics: Metrics,
        *,
        causes: tuple[str, ...] = CAUSES,
        sleep: Sleep = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.labels = labels
        self.link = link
        self.backoff = backoff
        self.sessions = 0  # sessions started, the current one included
        self._sleep = sleep
        self._wall = wall
        self._reconnects = {
            cause: metrics.feed_reconnects.labels(labels.exchange, labels.feed, cause)
            for cause in causes
        }
        self._gauge = metrics.feed_connected.labels(labels.exchange, labels.feed)
        self._up = False

    @property
    def connected(self) -> bool:
        return self._up

    def up(self) -> None:
        """The session works: connected, healthy from now, the link up."""
        if not self._up:
            self._up = True
            self._gauge.inc()
            self.backoff.healthy()
            self.link.succeeded(self._wall())

    def down(self) -> None:
        """The session is over (called by the feed as it tears the session down)."""
        if self._up:
            self._up = False
            self._gauge.dec()

    async def run(self, feed: FeedSession) -> NoReturn:
        """Runs ``feed``'s sessions until cancelled."""
        while True:
            await feed.before_session()
            started = time.monotonic()
            cause, error = await self._one(feed)
            delay = 0.0 if cause in PROACTIVE else self.backoff.delay()
            self._reconnects[cause].inc()
            self.link.failed(error or cause, self._wall())
            log.info(self.labels.event, cause=cause, error=error,
                     retry_seconds=round(delay, 3),
                     session_seconds=round(time.monotonic() - started, 3),
                     sessions=self.sessions, down_since=iso(self.link.since_s),
                     failed_attempts=self.link.attempts, tried=self.link.last_tried)  # fmt: skip
            if delay:
                await self._sleep(delay)

    async def _one(self, feed: FeedSession) -> tuple[str, str | None]:
        """One session and how it ended: a cause, and the error's safe text if it failed."""
        self.sessions += 1
        try:
            return await feed.session(), None
        except Exception as e:  # noqa: BLE001 - connection boundary: classify, count, reconnect
            return "error", feed.redact(describe(e))
        finally:
            self.down()
