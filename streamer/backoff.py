"""Capped, jittered exponential backoff that resets after a healthy period.

Used by the reconnect loop both feeds run (:mod:`streamer.reconnect`), by REST
retries and by the bar loop's Redis outbox; the sequencer's REST re-asks and the
trainer's history download wait the :func:`ceiling` without jitter. Delays are
wall-clock seconds: they pace our own traffic, whatever the exchange clock says.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from whalecast.settings import FeedSettings


def ceiling(initial: float, maximum: float, attempts: int) -> float:
    """The backoff formula: ``min(maximum, initial·2ⁿ)`` after ``attempts`` = n failures."""
    return float(min(maximum, initial * 2.0 ** min(max(attempts, 0), 30)))


class Backoff:
    """Full-jitter exponential backoff: attempt n waits uniform(d/2, d), d = min(max, initial·2ⁿ).

    ``healthy()`` marks the start of a working period; the next ``delay()``
    after at least ``reset_after`` healthy seconds starts again from the
    initial delay.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        reset_after: float,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self.attempts = 0
        self._rng = rng if rng is not None else random.Random()
        self._monotonic = monotonic
        self._healthy_since: float | None = None

    @classmethod
    def from_settings(cls, feed: FeedSettings, rng: random.Random | None = None) -> Backoff:
        return cls(
            feed.backoff_initial_seconds,
            feed.backoff_max_seconds,
            feed.backoff_reset_after_seconds,
            rng=rng,
        )

    def healthy(self) -> None:
        """The connection works from now on (call once per successful connect)."""
        self._healthy_since = self._monotonic()

    def delay(self) -> float:
        """Seconds to wait before the next attempt; advances the attempt count."""
        if (
            self._healthy_since is not None
            and self._monotonic() - self._healthy_since >= self.reset_after
        ):
            self.attempts = 0
        self._healthy_since = None
        top = ceiling(self.initial, self.maximum, self.attempts)
        self.attempts += 1
        return self._rng.uniform(top / 2.0, top)

    def reset(self) -> None:
        self.attempts = 0
        self._healthy_since = None
