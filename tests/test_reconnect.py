"""The reconnect loop both feeds run, driven by a scripted session (no sockets, no waits):
causes counted, the backoff waited only after failures and reset after a healthy session,
the link's status kept, errors redacted; and the watchdog's rule."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from streamer.backoff import Backoff
from streamer.link import LinkStatus
from streamer.reconnect import CAUSES, FeedLabels, ReconnectLoop, SessionLost, session_over
from tests.feed_helpers import feed_settings
from whalecast.metrics import Metrics

LABELS = FeedLabels("binance", "candles", "candle feed reconnecting")
#: One scripted session: what it returns (a cause) or raises; ``up`` first if it comes up.
Step = tuple[bool, str | Exception]


class HandClock:
    """A hand-moved clock for the backoff's healthy period and the link's wall times."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class ScriptedSession:
    """A fake feed session: plays ``steps`` in order, then stands for the loop's cancel.

    Each step may first bring the session up (as a feed does once subscribed), may let
    ``healthy_for`` seconds pass on the hand clock while up, then ends with a cause or
    an error. What the loop could see between sessions is recorded per session.
    """

    def __init__(self, loop: Callable[[], ReconnectLoop], clock: HandClock,
                 steps: list[Step], healthy_for: float = 0.0) -> None:  # fmt: skip
        self._loop = loop
        self._clock = clock
        self._steps = list(steps)
        self._healthy_for = healthy_for
        self.waits = 0  # before_session calls
        self.seen_up: list[bool] = []

    async def before_session(self) -> None:
        self.waits += 1

    async def session(self) -> str:
        if not self._steps:
            raise asyncio.CancelledError  # the feed's task is cancelled mid-session
        comes_up, end = self._steps.pop(0)
        loop = self._loop()
        if comes_up:
            loop.up()
            self._clock.now += self._healthy_for
        self.seen_up.append(loop.connected)
        if isinstance(end, Exception):
            raise end
        return end

    def redact(self, text: str) -> str:
        return text.replace("s3cret", "**********")


class Harness:
    def __init__(self, steps: list[Step], healthy_for: float = 0.0) -> None:
        self.clock = HandClock()
        self.metrics = Metrics(process=False)
        self.link = LinkStatus(self.clock.now, "subscribe 2 candle stream(s)")
        backoff = Backoff(1.0, 8.0, reset_after=60.0, rng=random.Random(7), monotonic=self.clock)
        self.slept: list[float] = []
        self.loop = ReconnectLoop(LABELS, self.link, backoff, self.metrics,
                                  sleep=self._sleep, wall=self.clock)  # fmt: skip
        self.session = ScriptedSession(lambda: self.loop, self.clock, steps, healthy_for)

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def play(self) -> None:
        with pytest.raises(asyncio.CancelledError):
            await self.loop.run(self.session)

    def reconnects(self, cause: str) -> float | None:
        labels = {"exchange": "binance", "feed": "candles", "cause": cause}
        return self.metrics.registry.get_sample_value("whalecast_feed_reconnects_total", labels)

    def connected(self) -> float | None:
        labels = {"exchange": "binance", "feed": "candles"}
        return self.metrics.registry.get_sample_value("whalecast_feed_connected", labels)


async def test_failures_back_off_doubling_and_proactive_ends_reconnect_at_once() -> None:
    run = Harness([(False, SessionLost("closed")), (False, ValueError("bad frame")),
                   (False, "lifetime"), (False, "recreate"), (False, "stale")])  # fmt: skip
    await run.play()
    # error, error, (lifetime, recreate: none), stale: the 1st, 2nd and 3rd backoff
    assert len(run.slept) == 3
    for attempt, delay in enumerate(run.slept):
        top = min(8.0, 2.0**attempt)
        assert top / 2 <= delay <= top
    assert {c: run.reconnects(c) for c in CAUSES} == {
        "error": 2.0, "lifetime": 1.0, "recreate": 1.0, "stale": 1.0}  # fmt: skip
    assert run.session.waits == 6 and run.loop.sessions == 6  # the 6th was cancelled


async def test_the_link_records_each_end_plainly_or_by_type_and_redacted() -> None:
    run = Harness([(False, SessionLost("closed by the server"))])
    run.session._steps.append((False, OSError("401 for api_key=s3cret")))
    await run.play()
    assert run.link.last_error == "OSError: 401 for api_key=**********"
    assert run.link.attempts == 2 and not run.link.up
    stale = Harness([(False, "stale")])
    await stale.play()
    assert stale.link.last_error == "stale"  # a watchdog end names its cause


async def test_a_working_session_is_connected_until_it_ends_and_resets_the_backoff() -> None:
    run = Harness([(False, ValueError("x")), (False, ValueError("x")), (True, "stale"),
                   (False, ValueError("x"))], healthy_for=61.0)  # fmt: skip
    await run.play()
    assert run.session.seen_up == [False, False, True, False]
    assert run.connected() == 0.0  # down again once each session ended
    assert run.slept[1] >= 1.0  # the second failure in a row: the doubled backoff
    assert run.slept[2] <= 1.0  # after 61 healthy seconds: the initial one again
    assert run.link.attempts == 2 and run.link.since_s == run.clock.now


def test_up_and_down_are_counted_once_each() -> None:
    run = Harness([])
    run.loop.up()
    run.loop.up()
    assert run.connected() == 1.0
    run.loop.down()
    run.loop.down()
    assert run.connected() == 0.0


def test_the_watchdog_ends_a_silent_session_first_then_an_old_one() -> None:
    feed = feed_settings(stale_after_seconds=30.0, connection_lifetime_seconds=3600.0,
                         client_recreate_seconds=600.0)  # fmt: skip
    assert session_over(feed, now=100.0, started=0.0, last_message=90.0) is None
    assert session_over(feed, now=100.0, started=0.0, last_message=69.0) == "stale"
    assert session_over(feed, now=700.0, started=0.0, last_message=699.0) == "recreate"
    assert session_over(feed, now=3700.0, started=0.0, last_message=3699.0) == "lifetime"
    assert session_over(feed, now=3700.0, started=0.0, last_message=0.0) == "stale"
