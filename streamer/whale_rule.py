"""Which bar a whale transfer belongs to: one rule, the same for the daemon and the trainer.

A transfer counts in the bar that contains its **knowledge time**: the moment the
daemon could first have used it, never its block time. Whale Alert publishes a
transfer some time after its block, so by block time every transfer near the end
of a bar would belong to a bar already stored and predicted; by knowledge time
nothing is ever late for its bar, and a feature never holds what the daemon could
not have known when it predicted.

- Live: the exchange clock (the candle feed's) when the alert is handled, but never
  before the end of a bar whose whale aggregates were already read
  (:class:`KnowledgeClock`): an alert handled just after a bar was taken goes to the
  next bar, not into one already stored.
- A recording of the live feed (``whale.record_path``) keeps each admitted alert
  with that knowledge time: replayed, it gives the trainer the daemon's bars exactly.
- History that carries only block times (Whale Alert's REST pages, hourly flow
  files) is shifted by ``whale.history_delay_seconds``: known = block + delay.

An alert counts only if its value (the sum of its amounts in USD) is at least
``whale.min_value_usd``, its block time is at most ``feed.max_future_seconds``
ahead of its knowledge time, and at most ``whale.max_delay_seconds`` behind it;
otherwise it is refused with the reason ``below_min_value``, ``from_future`` or
``late``. Pure: no I/O, times are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from whalecast.domain import floor_to_bar
from whalecast.settings import FeedSettings, WhaleSettings


@dataclass(frozen=True, slots=True)
class WhaleRule:
    """When a whale alert counts, and the knowledge time of history that has only block times."""

    min_value_usd: float = 0.0
    max_delay_ms: int = 3_600_000
    max_future_ms: int = 120_000
    history_delay_ms: int = 0

    @classmethod
    def from_settings(cls, whale: WhaleSettings, feed: FeedSettings) -> WhaleRule:
        return cls(
            min_value_usd=whale.min_value_usd,
            max_delay_ms=round(whale.max_delay_seconds * 1000),
            max_future_ms=round(feed.max_future_seconds * 1000),
            history_delay_ms=round(whale.history_delay_seconds * 1000),
        )

    def refusal(self, ts_ms: int, known_ms: int, value_usd: float, slack_ms: int = 0) -> str | None:
        """Why an alert of block time ``ts_ms`` known at ``known_ms`` does not count, or None.

        ``slack_ms`` widens "from the future" by how far the clock may lag (a replay)."""
        if value_usd < self.min_value_usd:
            return "below_min_value"
        if ts_ms > known_ms + self.max_future_ms + slack_ms:
            return "from_future"
        if known_ms - ts_ms > self.max_delay_ms:
            return "late"
        return None

    def history_known_ms(self, ts_ms: int) -> int:
        """Knowledge time of a transfer known only by its block time."""
        return ts_ms + self.history_delay_ms


def whale_bar(known_ms: int, bar_ms: int) -> int:
    """Open time of the bar a transfer known at ``known_ms`` counts in."""
    return floor_to_bar(known_ms, bar_ms)


class KnowledgeClock:
    """Knowledge time live: exchange time, never before the end of a bar already read."""

    def __init__(self) -> None:
        self.sealed_ms = 0

    def seal(self, until_ms: int) -> None:
        """The whale aggregates of every bar ending by ``until_ms`` were read: they are final."""
        self.sealed_ms = max(self.sealed_ms, until_ms)

    def stamp(self, now_ms: int) -> int:
        return max(now_ms, self.sealed_ms)
