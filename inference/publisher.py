"""Publishing one bar's predictions: pub/sub, the capped stream and the latest-value hash.

Every prediction becomes one ``whalecast.prediction/v1`` JSON message, sent
unchanged to three places, all of one bar in ONE non-transactional pipeline
(one round trip; with Redis Cluster, redis-py splits it per node)::

    PUBLISH <prefix>:predictions <json>
    XADD    <prefix>:predictions:stream MAXLEN ~ N * data <json>
    HSET    <prefix>:latest:<model> <series tag> <json> [<series tag> <json> ...]
    SET     <prefix>:{<series tag>}:predicted <bar open ms> PX <ttl>   (one per series)

The stream entry has one field, ``data``, holding the JSON. The latest hash is
keyed by the series tag (``binance:BTC/USDT:1h``), one HSET per model per bar.
The last line is the handover mark (:mod:`inference.handover`), queued after the
outputs so a process killed mid-pipeline leaves at worst a prediction without its
mark (predicted again by the next owner), never a mark without its prediction.
A non-finite value is never published: it is dropped, counted
(``whalecast_predictions_dropped_total{reason="non_finite"}``) and logged.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from inference.handover import PredictionMarks
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.logs import get_logger
from whalecast.metrics import Metrics
from whalecast.schema import encode_prediction

log = get_logger(__name__)

STREAM_FIELD = "data"


@dataclass(frozen=True, slots=True)
class PredictionOut:
    """One model's prediction for one series, made from the closed bar ``bar_open_ms``.

    ``known_at`` is the wall time (``time.time()``) at which that bar's close was
    known (its last closed candle came in); latency is measured from it at publishing.
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
        """Send every finite prediction in one pipeline; returns how many were published."""
        now = self.clock()
        pipe = self.redis.pipeline(transaction=False)
        latest: dict[str, dict[str, str]] = {}
        counts: dict[str, int] = {}
        timeframes: set[str] = set()
        newest: dict[Series, int] = {}
        for prediction in predictions:
            if not math.isfinite(prediction.value):
                self._drop(prediction)
                continue
            message = self.encode(prediction, now)
            # not pipe.publish(): redis-py's cluster pipeline blocks that method, not the command
            pipe.execute_command("PUBLISH", self.keys.predictions_channel, message)
            pipe.xadd(
                self.keys.predictions_stream,
                {STREAM_FIELD: message},
                maxlen=self.stream_maxlen,
                approximate=True,
            )
            latest.setdefault(prediction.model, {})[prediction.series.tag] = message
            counts[prediction.model] = counts.get(prediction.model, 0) + 1
            timeframes.add(prediction.series.timeframe)
            newest[prediction.series] = max(
                prediction.bar_open_ms, newest.get(prediction.series, prediction.bar_open_ms)
            )
        if not latest:
            return 0
        for model, mapping in latest.items():
            pipe.hset(self.keys.latest(model), mapping=mapping)
        if self.marks is not None:
            self.marks.queue(pipe, newest)
        try:
            await pipe.execute()
        except RedisError:
            self.metrics.redis_errors.labels("publish").inc()
            raise
        for model, count in counts.items():
            self.metrics.predictions.labels(model).inc(count)
        for timeframe in timeframes:
            self.metrics.last_publish.labels(timeframe).set(now)
        return sum(counts.values())

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
