"""Handing a series from one replica to another without a gap or a duplicate prediction.

Redis holds, per series, the open time of the newest bar whose predictions were
published (``Keys.predicted``, the series' hash tag, so the series' Cluster
slot). The publisher writes it after the predictions, in the same script call on a
plain server, in the call that publishes the series on the channel on a Cluster. A replica
that starts with a series (after a restart, a crash, or a change of
``shard.count`` that moved the series to it) reads the marks and:

- predicts the series' newest stored bar if it is newer than the mark: the
  previous owner stored the bar, then died before publishing (:func:`pending`);
- predicts every bar its feed backfills that is newer than the mark, although
  those bars closed before it started (the bar loop's history rule gives way to
  the mark): the bars that closed while no replica owned the series;
- predicts nothing at or before the mark: those were published.

A series with no mark (a fresh deployment) keeps the plain rule: bars that
closed before start-up are history. Stored bars more than one bar behind a mark
cannot be predicted any more (their windows are gone): they are counted
(``whalecast_bars_unpredicted_total``) and logged.

Two replicas owning one series at once (a rolling change of ``shard.count``)
both append the bar; the store's script lets only the first append succeed, and
only the replica whose append succeeded predicts the bar. On a plain server a
bar's predictions and marks are one script call, applied whole or not at all,
which skips a series whose mark shows the bar already. On a Cluster the calls are
per slot and check the same way (:mod:`inference.cluster_publish`): a replica
killed mid-publish leaves some series unmarked, and the next owner predicts those
again, but what went out before is not sent twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamer.store import WindowStore
from streamer.store_format import key_ttl_ms
from whalecast.domain import Candle, Series
from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.redisconn import mget

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Mark:
    """``SET <key> <open_ms> PX <ttl_ms>``: the series' newest published bar."""

    key: str
    open_ms: int
    ttl_ms: int


class PredictionMarks:
    """Reads and queues the per-series "newest bar published" marks."""

    def __init__(self, redis: Any, keys: Keys, ttl_seconds: float) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_seconds = ttl_seconds

    async def load(self, series: Sequence[Series]) -> dict[Series, int]:
        """The marks that exist, in one round trip (one per node on a Cluster)."""
        values = await mget(self.redis, [self.keys.predicted(s) for s in series])
        return {s: int(v) for s, v in zip(series, values, strict=True) if v is not None}

    def marks(self, newest: Mapping[Series, int]) -> list[Mark]:
        """The marks saying each series' bar ``newest[series]`` was published."""
        return [
            Mark(self.keys.predicted(series), open_ms, key_ttl_ms(series, self.ttl_seconds))
            for series, open_ms in newest.items()
        ]


def pending(
    store: WindowStore, marks: Mapping[Series, int], metrics: Metrics | None = None
) -> list[Candle]:
    """Newest stored bars a previous owner stored but did not publish (one per series)."""
    out: list[Candle] = []
    for series in store.series:
        mark = marks.get(series)
        candle = store.last_candle(series)
        if mark is None or candle is None or candle.open_ms <= mark:
            continue
        lost = (candle.open_ms - mark) // series.bar_ms - 1
        if lost > 0:
            if metrics is not None:
                metrics.bars_unpredicted.labels(series.timeframe).inc(lost)
            log.warning(
                "stored bars were never predicted and cannot be any more",
                series=series.tag, bars=lost, mark_ms=mark, stored_ms=candle.open_ms,
            )  # fmt: skip
        out.append(candle)
    return out
