"""A feed link's story for operators: up or down since when, what was last tried, what failed.

The feeds record into a :class:`LinkStatus` as they go (time passed in);
``/readyz`` and the log read a :class:`FeedFacts` snapshot.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass


def iso(seconds: float) -> str:
    """A wall time as operators read it: ISO 8601, UTC, whole seconds."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class FeedFacts:
    """One feed's link as its driver last saw it."""

    feed: str  # e.g. "binance"
    connected: bool
    since_s: float  # wall time it went up or down (or was created)
    attempts: int = 0  # failed attempts since it was last up
    last_tried: str = ""
    last_error: str | None = None


class LinkStatus:
    """Mutable record of one link (a start-up step or one websocket connection)."""

    def __init__(self, created_s: float, trying: str = "") -> None:
        self.up = False
        self.since_s = created_s
        self.attempts = 0
        self.last_tried = trying
        self.last_error: str | None = None

    def trying(self, what: str) -> None:
        self.last_tried = what

    def failed(self, error: str, now_s: float) -> None:
        if self.up:
            self.up = False
            self.since_s = now_s
        self.attempts += 1
        self.last_error = error

    def succeeded(self, now_s: float) -> None:
        if not self.up:
            self.up = True
            self.since_s = now_s
            self.attempts = 0

    def facts(self, feed: str) -> FeedFacts:
        return FeedFacts(feed, self.up, self.since_s, self.attempts, self.last_tried,
                         self.last_error)  # fmt: skip


def combined(feed: str, links: Sequence[LinkStatus]) -> FeedFacts:
    """One feed of several links: up when all are; else the link down longest speaks."""
    down = [link for link in links if not link.up]
    if not down:
        latest = max((link.since_s for link in links), default=0.0)
        return FeedFacts(feed, True, latest)
    return min(down, key=lambda link: link.since_s).facts(feed)
