"""Publishing one bar's predictions: pub/sub, the capped stream and the latest-value hash.

Every prediction becomes one ``whalecast.prediction/v1`` JSON message, sent
unchanged to three places::

    PUBLISH <prefix>:predictions <json>
    XADD    <prefix>:predictions:stream MAXLEN ~ N * data <json>
    HSET    <prefix>:latest:<model> <field> <json> [<field> <json> ...]
    SET     <prefix>:{<series tag>}:predicted <bar open ms> PX <ttl>   (one per series)

On a plain server all of one bar go in ONE script call (``publish.lua`` runs
those commands in this order: one request to build and one reply to parse
instead of two per message); a backlog of several bars (after a Redis outage)
is one request holding one script call per bar. On a Cluster the keys live on
different nodes: :mod:`inference.cluster_publish` sends the same commands in two
steps of per-slot script calls, each checking what went out before, so a message
still goes out once.

The stream entry has one field, ``data``, holding the JSON. A model with several
outputs publishes one message per output. The latest hash's field is the series tag
(``binance:BTC/USDT:1h``) for a v1 model's message, and the tag, target, horizon and
quantile for a horizon output's (``binance:BTC/USDT:1h|volume_next_bars|6|0.9``, see
:func:`whalecast.keys.latest_field`), one HSET per model per bar,
written after the channel and the stream (:meth:`Publisher.not_yet_published`
relies on it). The last line is the handover mark (:mod:`inference.handover`),
written after every output, never a mark without its prediction; a series whose
mark already shows the bar is not sent again.
A non-finite value is never published: it is dropped, counted
(``whalecast_predictions_dropped_total{reason="non_finite"}``) and logged.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Final, NamedTuple

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from inference.cluster_publish import ClusterPublish
from inference.handover import Mark, PredictionMarks
from whalecast.domain import Series
from whalecast.keys import STREAM_FIELD, Keys, latest_field
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.redis_ports import RedisClient, RedisPipeline, Reply, array, blob, text
from whalecast.redisconn import run_script_pipeline
from whalecast.schema import encode_prediction

log = get_logger(__name__)

SCRIPT: Final = resources.files("inference").joinpath("publish.lua").read_text()


class Published(NamedTuple):
    """What one output of a model is published as: its target, and the ``horizon_bars``
    and ``quantile`` its messages carry (``None``: not written, as in a v1 message)."""

    target: str
    horizon_bars: int | None
    quantile: float | None


class PredictionOut(NamedTuple):
    """One model's prediction for one series and output, made from the closed bar
    ``bar_open_ms``.

    ``known_at`` is the wall time (``time.time()``) at which that bar's close was
    known (its last closed candle came in); latency is measured from it at publishing.
    ``horizon_bars`` and ``quantile`` are set for a horizon output only.
    A named tuple: thousands are made per bar on the critical path, about 3.5x faster
    than a frozen dataclass here.
    """

    series: Series
    bar_open_ms: int
    bar_close_ms: int
    model: str
    model_version: str
    target: str
    value: float
    known_at: float
    horizon_bars: int | None = None
    quantile: float | None = None

    @property
    def field(self) -> str:
        """Its field in the model's latest-value hash (:func:`whalecast.keys.latest_field`)."""
        return latest_field(self.series.tag, self.target, self.horizon_bars, self.quantile)


class Publisher:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        stream_maxlen: int,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        marks: PredictionMarks | None = None,
    ) -> None:
        self.redis = redis
        self.marks = marks
        self.keys = keys
        self.stream_maxlen = stream_maxlen
        self.metrics = metrics
        self.clock = clock
        self._sha = redis.register_script(SCRIPT).sha
        self._cluster: ClusterPublish | None = None
        if isinstance(redis, RedisCluster):
            if marks is None:
                raise ValueError("publishing on a Cluster needs the handover marks")
            self._cluster = ClusterPublish(redis, keys, stream_maxlen, marks)

    def encode(self, prediction: PredictionOut, now: float) -> str:
        series = prediction.series
        return encode_prediction(
            exchange=series.exchange,
            symbol=series.symbol,
            timeframe=series.timeframe,
            bar_open_ms=prediction.bar_open_ms,
            bar_close_ms=prediction.bar_close_ms,
            model=prediction.model,
            model_version=prediction.model_version,
            target=prediction.target,
            value=prediction.value,
            published_ms=int(now * 1000),
            latency_ms=max(0.0, (now - prediction.known_at) * 1000.0),
            horizon_bars=prediction.horizon_bars,
            quantile=prediction.quantile,
        )

    async def publish(self, predictions: Sequence[PredictionOut]) -> int:
        """Send every finite prediction in one request; returns how many were published."""
        now = self.clock()
        messages: list[tuple[PredictionOut, str]] = []
        for prediction in predictions:
            if math.isfinite(prediction.value):
                messages.append((prediction, self.encode(prediction, now)))
            else:
                self._drop(prediction)
        if not messages:
            return 0
        try:
            if self._cluster is not None:
                messages = await self._cluster.publish(messages)
            else:
                replies = await run_script_pipeline(self.redis, SCRIPT, lambda pipe: self._queue_bars(pipe, messages))  # fmt: skip
                messages = self._not_skipped(messages, replies)
        except RedisError:
            self.metrics.redis_errors.labels("publish").inc()
            raise
        counts: dict[str, int] = {}
        for prediction, _ in messages:
            counts[prediction.model] = counts.get(prediction.model, 0) + 1
        for model, count in counts.items():
            self.metrics.predictions.labels(model).inc(count)
        for timeframe in {p.series.timeframe for p, _ in messages}:
            self.metrics.last_publish.labels(timeframe).set(now)
        return len(messages)

    @staticmethod
    def _not_skipped(
        messages: list[tuple[PredictionOut, str]], replies: list[Reply]
    ) -> list[tuple[PredictionOut, str]]:
        """The messages the script sent: not those of series another replica had published."""
        skipped = {
            (bar[0][0].bar_open_ms, text(tag))
            for bar, reply in zip(_by_bar(messages).values(), replies, strict=True)
            for tag in array(reply)[1:]
        }
        if not skipped:
            return messages
        log.info("bar already published by another replica, not sent again",
                 series=len({tag for _, tag in skipped}), bars=len({b for b, _ in skipped}))  # fmt: skip
        return [m for m in messages if (m[0].bar_open_ms, m[0].series.tag) not in skipped]

    def _marks(self, messages: list[tuple[PredictionOut, str]]) -> list[Mark]:
        """The handover marks to write after these messages: each series' newest bar."""
        if self.marks is None:
            return []
        newest: dict[Series, int] = {}
        for prediction, _ in messages:
            seen = newest.get(prediction.series, prediction.bar_open_ms)
            newest[prediction.series] = max(prediction.bar_open_ms, seen)
        return self.marks.marks(newest)

    def _queue_bars(self, pipe: RedisPipeline, messages: list[tuple[PredictionOut, str]]) -> None:
        """One script call per bar, in order, all in one request: a backlog of many bars
        after an outage never holds the server in one long script, and each bar's
        outputs and marks still go in one atomic call."""
        for group in _by_bar(messages).values():
            self._queue_script(pipe, group, self._marks(group))

    def _queue_script(
        self, pipe: RedisPipeline, messages: list[tuple[PredictionOut, str]], marks: list[Mark]
    ) -> None:
        hashes: dict[str, int] = {}  # model -> its latest hash's index in KEYS
        body: list[str | int] = []
        for prediction, message in messages:
            index = hashes.setdefault(prediction.model, len(hashes) + 2)
            tag = prediction.series.tag
            field = tag if prediction.horizon_bars is None else prediction.field
            body += [index, tag, field, message]
        keys = [self.keys.predictions_stream, *(self.keys.latest(model) for model in hashes)]
        args: list[str | int] = [self.keys.predictions_channel, self.stream_maxlen, STREAM_FIELD,
                                 len(hashes), len(messages), *body]  # fmt: skip
        for mark in marks:
            keys.append(mark.key)
            args += [mark.open_ms, mark.ttl_ms]
        pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)

    async def not_yet_published(self, predictions: Sequence[PredictionOut]) -> list[PredictionOut]:
        """Those not published yet, in order.

        After a publish whose reply was lost (Redis ran it, the connection broke), a
        retry sends only these. On one server the latest-value hash tells (written
        last in the same call, so a bar it shows went out on the channel and the stream
        too); on a Cluster the handover marks, written last there.
        """
        try:
            if self._cluster is not None:
                return await self._cluster.not_yet_published(predictions)
            return await self._not_in_latest(predictions)
        except RedisError:
            self.metrics.redis_errors.labels("publish").inc()
            raise

    async def _not_in_latest(self, predictions: Sequence[PredictionOut]) -> list[PredictionOut]:
        fields: dict[str, list[str]] = {}
        for prediction in predictions:
            fields.setdefault(prediction.model, []).append(prediction.field)
        pipe = self.redis.pipeline(transaction=False)
        for model, names in fields.items():
            pipe.hmget(self.keys.latest(model), names)
        replies = await pipe.execute()
        shown: dict[tuple[str, str], int] = {}
        for (model, names), values in zip(fields.items(), replies, strict=True):
            for field, value in zip(names, map(blob, array(values)), strict=True):
                if value is not None:
                    shown[(model, field)] = int(json.loads(value)["bar_open_ms"])
        return [p for p in predictions if shown.get((p.model, p.field), -1) < p.bar_open_ms]

    def _drop(self, prediction: PredictionOut) -> None:
        self.metrics.predictions_dropped.labels(prediction.model, "non_finite").inc()
        log.warning(
            "prediction not finite, not published",
            model=prediction.model,
            model_version=prediction.model_version,
            series=prediction.series.tag,
            bar_open_ms=prediction.bar_open_ms,
        )


def _by_bar(
    messages: list[tuple[PredictionOut, str]],
) -> dict[int, list[tuple[PredictionOut, str]]]:
    """Messages grouped by bar, bars in the order they first appear (one script call each)."""
    bars: dict[int, list[tuple[PredictionOut, str]]] = {}
    for item in messages:
        bars.setdefault(item[0].bar_open_ms, []).append(item)
    return bars
