"""Exchange time: what "now" means for bar deadlines and timestamp validation.

Live, exchange time is the wall clock corrected by the skew measured against
the exchange's server time at start-up (exported as ``clock_skew``). In replay
the simulator plays history at N× speed and serves its virtual time on the
same endpoint as Binance (``GET /api/v3/time``); :class:`ReplayClock` polls it
and never runs ahead of the last answer, so a bar is never taken for closed
before the exchange has closed it; event times stamped by the server on
websocket messages move it on between polls (``observe``). ``slack_ms()`` says how far the true
exchange time may be ahead of ``now_ms()`` (used to widen "from the future").

Transport timing (backoff, staleness watchdog, connection lifetime) stays in
wall time: a silent socket is silent whatever the replay speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from whalecast.logs import get_logger

log = get_logger(__name__)

FetchTime = Callable[[], Awaitable[int]]
OBSERVE_CAP_MS = 86_400_000


class TimeSource(Protocol):
    """Reads exchange time (what validation of timestamps needs)."""

    def now_ms(self) -> int:
        """Exchange time in epoch milliseconds."""
        ...

    def slack_ms(self) -> int:
        """How far exchange time may be ahead of ``now_ms()``."""
        ...


class Clock(TimeSource, Protocol):
    """Exchange time that also learns from server timestamps seen on the wire."""

    def observe(self, server_ms: int) -> None:
        """A server timestamp seen on the wire (an event time): exchange time is at least that."""
        ...


class LiveClock:
    """Wall clock plus a fixed offset (server time minus local time)."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def slack_ms(self) -> int:
        return 0

    def observe(self, server_ms: int) -> None:
        return None  # the wall clock, corrected at start-up, stays the reference


async def measure_skew_ms(fetch_time: FetchTime) -> int:
    """Server time minus local time, corrected for half the round trip."""
    before = time.time_ns() // 1_000_000
    server = int(await fetch_time())
    after = time.time_ns() // 1_000_000
    return server - (before + after) // 2


class ReplayClock:
    """Follows a server's virtual clock by polling it; never ahead of its last answer."""

    def __init__(self, fetch_time: FetchTime, poll_seconds: float = 0.05) -> None:
        self._fetch_time = fetch_time
        self.poll_seconds = poll_seconds
        self._server_ms: int | None = None
        self._max_step_ms = 0.0  # largest recent jump between two samples (decays slowly)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the first sample (raises if the server does not answer) and keep polling."""
        await self.sample()
        self._task = asyncio.create_task(self._poll(), name="replay-clock")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sample(self) -> None:
        server = int(await self._fetch_time())
        if self._server_ms is not None:
            step = max(server - self._server_ms, 0)
            self._max_step_ms = max(self._max_step_ms * 0.995, float(step))
        if self._server_ms is None or server >= self._server_ms:
            self._server_ms = server

    async def _poll(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.sample()
                failures = 0
            except Exception as e:  # noqa: BLE001 - loop boundary: keep the last known time, retry
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("replay clock poll failed", error=repr(e), failures=failures)

    def now_ms(self) -> int:
        if self._server_ms is None:
            raise RuntimeError("ReplayClock.start() was not awaited")
        return self._server_ms

    def observe(self, server_ms: int) -> None:
        """Moves the clock to an event time the server stamped, unless it is absurdly far ahead
        (more than a day or four recent jumps): a replay is followed between two polls."""
        if self._server_ms is None or server_ms <= self._server_ms:
            return
        if server_ms - self._server_ms <= max(OBSERVE_CAP_MS, 4 * self._max_step_ms):
            self._server_ms = server_ms

    def slack_ms(self) -> int:
        """Four of the largest recent jumps: the replay may have moved on since the last poll
        (at N× speed one poll interval is N× longer in exchange time; a stepped replay jumps)."""
        return int(4 * self._max_step_ms)
