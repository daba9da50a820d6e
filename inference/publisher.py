"""Publishing one bar's predictions: pub/sub, the capped stream and the latest-value hash.

Every prediction becomes one ``whalecast.prediction/v1`` JSON message, sent
unchanged to three places::

    PUBLISH <prefix>:predictions <json>
    XADD    <prefix>:predictions:stream MAXLEN ~ N * data <json>
    HSET    <prefix>:latest:<model> <series tag> <json> [<series tag> <json> ...]
    SET     <prefix>:{<series tag>}:predicted <bar open ms> PX <ttl>   (one per series)

On a plain server all of one bar go in ONE script call (``publish.lua`` runs
those commands in this order: one request to build and one reply to parse
instead of two per message); a backlog of several bars (after a Redis outage)
is one request holding one script call per bar. On a Cluster the keys live on different nodes, so
the same commands go in one non-transactional pipeline that redis-py splits per
node.

The stream entry has one field, ``data``, holding the JSON. The latest hash is
keyed by the series tag (``binance:BTC/USDT:1h``), one HSET per model per bar,
written after the channel and the stream (:meth:`Publisher.not_yet_published`
relies on it). The last line is the handover mark (:mod:`inference.handover`),
written after every output so a process killed mid-pipeline leaves at worst a
prediction without its mark (predicted again by the next owner), never a mark
without its prediction.
A non-finite value is never published: it is dropped, counted
(``whalecast_predictions_dropped_total{reason="non_finite"}``) and logged.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Final, NamedTuple

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from inference.handover import Mark, PredictionMarks
from whalecast.domain import Series
from whalecast.keys import STREAM_FIELD, Keys
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.redisconn import run_script_pipeline
from whalecast.schema import encode_prediction

log = get_logger(__name__)

SCRIPT: Final = resources.files("inference").joinpath("publish.lua").read_text()


class PredictionOut(NamedTuple):
    """One model's prediction for one series, made from the closed bar ``bar_open_ms``.

    ``known_at`` is the wall time (``time.time()``) at which that bar's close was
    known (its last closed candle came in); latency is measured from it at publishing.
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


class Publisher:
    def __init__(
        self,
        redis: Any,
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
        self._cluster = isinstance(redis, RedisCluster)

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
            if self._cluster:
                await self._pipeline(messages, self._marks(messages))
            else:
                await run_script_pipeline(self.redis, SCRIPT, lambda pipe: self._queue_bars(pipe, messages))  # fmt: skip
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

    def _marks(self, messages: list[tuple[PredictionOut, str]]) -> list[Mark]:
        """The handover marks to write after these messages: each series' newest bar."""
        if self.marks is None:
            return []
        newest: dict[Series, int] = {}
        for prediction, _ in messages:
            seen = newest.get(prediction.series, prediction.bar_open_ms)
            newest[prediction.series] = max(prediction.bar_open_ms, seen)
        return self.marks.marks(newest)

    def _queue_bars(self, pipe: Any, messages: list[tuple[PredictionOut, str]]) -> None:
        """One script call per bar, in order, all in one request: a backlog of many bars
        after an outage never holds the server in one long script, and each bar's
        outputs and marks still go in one atomic call."""
        bars: dict[int, list[tuple[PredictionOut, str]]] = {}
        for item in messages:
            bars.setdefault(item[0].bar_open_ms, []).append(item)
        for group in bars.values():
            self._queue_script(pipe, group, self._marks(group))

    def _queue_script(
        self, pipe: Any, messages: list[tuple[PredictionOut, str]], marks: list[Mark]
    ) -> None:
        hashes: dict[str, int] = {}  # model -> its latest hash's index in KEYS
        body: list[str | int] = []
        for prediction, message in messages:
            index = hashes.setdefault(prediction.model, len(hashes) + 2)
            body += [index, prediction.series.tag, message]
        keys = [self.keys.predictions_stream, *(self.keys.latest(model) for model in hashes)]
        args: list[str | int] = [self.keys.predictions_channel, self.stream_maxlen, STREAM_FIELD,
                                 len(hashes), len(messages), *body]  # fmt: skip
        for mark in marks:
            keys.append(mark.key)
            args += [mark.open_ms, mark.ttl_ms]
        pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)

    async def _pipeline(self, messages: list[tuple[PredictionOut, str]], marks: list[Mark]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        latest: dict[str, dict[str, str]] = {}
        for prediction, message in messages:
            # not pipe.publish(): redis-py's cluster pipeline blocks that method, not the command
            pipe.execute_command("PUBLISH", self.keys.predictions_channel, message)
            pipe.xadd(
                self.keys.predictions_stream,
                {STREAM_FIELD: message},
                maxlen=self.stream_maxlen,
                approximate=True,
            )
            latest.setdefault(prediction.model, {})[prediction.series.tag] = message
        for model, mapping in latest.items():
            pipe.hset(self.keys.latest(model), mapping=mapping)
        for mark in marks:  # after the outputs: never a mark without its prediction
            pipe.set(mark.key, mark.open_ms, px=mark.ttl_ms)
        await pipe.execute()

    async def not_yet_published(self, predictions: Sequence[PredictionOut]) -> list[PredictionOut]:
        """Those whose bar the latest-value hash does not show yet, in order.

        After a publish whose reply was lost (Redis ran it, the connection broke), a
        retry sends only these: the hash is written last in the same pipeline, so a
        bar it shows went out on the channel and the stream too.
        """
        tags: dict[str, list[str]] = {}
        for prediction in predictions:
            tags.setdefault(prediction.model, []).append(prediction.series.tag)
        pipe = self.redis.pipeline(transaction=False)
        for model, names in tags.items():
            pipe.hmget(self.keys.latest(model), names)
        try:
            replies = await pipe.execute()
        except RedisError:
            self.metrics.redis_errors.labels("publish").inc()
            raise
        shown: dict[tuple[str, str], int] = {}
        for (model, names), values in zip(tags.items(), replies, strict=True):
            for tag, value in zip(names, values, strict=True):
                if value is not None:
                    shown[(model, tag)] = int(json.loads(value)["bar_open_ms"])
        return [p for p in predictions if shown.get((p.model, p.series.tag), -1) < p.bar_open_ms]

    def _drop(self, prediction: PredictionOut) -> None:
        self.metrics.predictions_dropped.labels(prediction.model, "non_finite").inc()
        log.warning(
            "prediction not finite, not published",
            model=prediction.model,
            model_version=prediction.model_version,
            series=prediction.series.tag,
            bar_open_ms=prediction.bar_open_ms,
        )
