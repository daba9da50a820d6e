"""Publishing: a real subscriber, XRANGE and HGETALL see schema-valid messages from one pipeline."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from inference.cluster_publish import ClusterPublish, Entry, Message
from inference.handover import PredictionMarks
from inference.publisher import PredictionOut, Publisher
from testkit.redis_servers import ClusterServers
from whalecast.domain import Series
from whalecast.keys import STREAM_FIELD, Keys
from whalecast.metrics import Metrics
from whalecast.schema import Prediction

pytestmark = pytest.mark.redis

BAR = 1_767_225_600_000
HOUR = 3_600_000
KEYS = Keys("wctest")


class CountingConnection(aioredis.Connection):
    """A real connection that counts how many times it writes to the socket."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


def predictions(n: int, now: float, value: float = 0.6) -> list[PredictionOut]:
    out = []
    for i in range(n):
        series = Series("binance", f"C{i}/USDT", "1h")
        for model, target in (("direction", "p_up_next_bar"), ("volume", "next_bar_volume")):
            out.append(
                PredictionOut(
                    series,
                    BAR,
                    BAR + HOUR,
                    model,
                    "20261122T060000Z-3f2a",
                    target,
                    value + i,
                    known_at=now - 0.040,
                )
            )
    return out


async def collect(pubsub: Any, count: int) -> list[Prediction]:
    received: list[Prediction] = []
    while len(received) < count:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
        assert message is not None, f"only {len(received)} of {count} messages arrived"
        received.append(Prediction.parse(message["data"]))
    return received


async def check_outputs(client: Any, subscriber: Any, publisher: Publisher, n: int) -> None:
    pubsub = subscriber.pubsub()
    await pubsub.subscribe(KEYS.predictions_channel)
    await pubsub.get_message(timeout=5.0)  # the subscribe confirmation
    now = publisher.clock()
    assert await publisher.publish(predictions(n, now)) == 2 * n
    received = await collect(pubsub, 2 * n)
    await pubsub.aclose()
    assert {(p.symbol, p.model) for p in received} == {
        (f"C{i}/USDT", m) for i in range(n) for m in ("direction", "volume")
    }
    for p in received:
        assert (p.bar_open_ms, p.bar_close_ms, p.exchange, p.timeframe) == (BAR, BAR + HOUR, "binance", "1h")  # fmt: skip
        assert 40.0 <= p.latency_ms < 5000.0
    entries = await client.xrange(KEYS.predictions_stream)
    assert len(entries) == 2 * n
    stream = [Prediction.parse(fields[STREAM_FIELD.encode()]) for _, fields in entries]
    assert sorted(p.model_dump_json() for p in stream) == sorted(p.model_dump_json() for p in received)  # fmt: skip
    latest = await client.hgetall(KEYS.latest("volume"))
    assert set(latest) == {f"binance:C{i}/USDT:1h".encode() for i in range(n)}
    first = Prediction.parse(latest[b"binance:C0/USDT:1h"])
    assert first.target == "next_bar_volume" and first.value == pytest.approx(0.6)
    if publisher.marks is not None:  # the handover mark of every series, with a TTL
        series = [Series("binance", f"C{i}/USDT", "1h") for i in range(n)]
        assert await publisher.marks.load(series) == dict.fromkeys(series, BAR)
        assert 0 < await client.pttl(KEYS.predicted(series[0])) <= 4 * HOUR


def with_marks(client: Any) -> PredictionMarks:
    return PredictionMarks(client, KEYS, ttl_seconds=60.0)


async def test_subscriber_stream_and_hash_see_schema_valid_messages(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    subscriber = aioredis.Redis.from_url(redis_url)
    metrics = Metrics(process=False)
    publisher = Publisher(client, KEYS, 1000, metrics, marks=with_marks(client))
    try:
        await check_outputs(client, subscriber, publisher, n=50)
    finally:
        await client.aclose()
        await subscriber.aclose()
    assert metrics.predictions.labels("direction")._value.get() == 50
    assert metrics.last_publish.labels("1h")._value.get() > 0


async def test_single_write_per_bar(redis_url: str) -> None:
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    await client.ping()
    publisher = Publisher(client, KEYS, 1000, Metrics(process=False), marks=with_marks(client))
    before = CountingConnection.writes
    await publisher.publish(predictions(200, publisher.clock()))  # 400 messages, 1402 commands
    assert CountingConnection.writes - before == 1
    assert await client.xlen(KEYS.predictions_stream) == 400
    await client.aclose()
    await pool.aclose()


async def test_big_bar_after_the_server_lost_the_script(redis_client: aioredis.Redis) -> None:
    publisher = Publisher(redis_client, KEYS, 10_000, Metrics(process=False))
    await redis_client.script_flush()  # e.g. a restarted server
    assert await publisher.publish(predictions(450, publisher.clock())) == 900
    assert await redis_client.xlen(KEYS.predictions_stream) == 900
    latest = await redis_client.hgetall(KEYS.latest("direction"))  # more pairs than one HSET
    assert len(latest) == 450
    assert Prediction.parse(latest[b"binance:C449/USDT:1h"]).value == pytest.approx(449.6)
    first, last = await redis_client.xrange(KEYS.predictions_stream, count=1), await redis_client.xrevrange(KEYS.predictions_stream, count=1)  # fmt: skip
    assert Prediction.parse(first[0][1][b"data"]).symbol == "C0/USDT"  # in publishing order
    assert Prediction.parse(last[0][1][b"data"]).symbol == "C449/USDT"


async def test_stream_is_capped_and_non_finite_dropped(redis_client: aioredis.Redis) -> None:
    metrics = Metrics(process=False)
    publisher = Publisher(redis_client, KEYS, 100, metrics)
    for _ in range(20):
        await publisher.publish(predictions(50, publisher.clock()))
    length = await redis_client.xlen(KEYS.predictions_stream)
    assert 100 <= length < 2000 * 0.5  # MAXLEN ~ trims whole nodes: about 100, never all 2000
    bad = predictions(1, publisher.clock(), value=float("nan"))
    assert await publisher.publish(bad) == 0
    assert metrics.predictions_dropped.labels("volume", "non_finite")._value.get() == 1


async def test_works_with_the_cluster_client(
    cluster_client: RedisCluster, redis_cluster: ClusterServers
) -> None:
    subscriber = aioredis.Redis(host="127.0.0.1", port=redis_cluster.nodes[2].port)
    try:
        publisher = Publisher(
            cluster_client, KEYS, 1000, Metrics(process=False), marks=with_marks(cluster_client)
        )
        await check_outputs(cluster_client, subscriber, publisher, n=20)
    finally:
        await subscriber.aclose()


class ReplicaDied(Exception):
    """Stands for the process being killed: nothing after this point was sent."""


class DyingClusterPublish(ClusterPublish):
    """The real Cluster publish, except that the process dies after the stream step and
    ``slots`` of the per-slot calls (those sent, in full, in one request)."""

    def __init__(self, *args: Any, slots: int) -> None:
        super().__init__(*args)
        self.slots = slots

    async def _slot_step(self, slots: list[list[Entry]]) -> list[Message]:
        assert len(slots) > self.slots
        await super()._slot_step(slots[: self.slots])
        raise ReplicaDied


@pytest.mark.parametrize("slots_before", [0, 7])
async def test_cluster_publish_interrupted_and_retried_sends_each_message_once(
    cluster_client: RedisCluster, redis_cluster: ClusterServers, slots_before: int
) -> None:
    """A replica dies mid-publish (after the stream, after some slots' calls); the next
    attempt (its retry, or the next owner predicting the bar again) sends the rest:
    every message once on the channel and once in the stream, every mark set."""
    n, metrics = 20, Metrics(process=False)  # the retrying replica's
    subscriber = aioredis.Redis(host="127.0.0.1", port=redis_cluster.nodes[1].port)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe(KEYS.predictions_channel)
    await pubsub.get_message(timeout=5.0)  # the subscribe confirmation
    try:
        dying = Publisher(cluster_client, KEYS, 1000, Metrics(process=False),
                          marks=with_marks(cluster_client))  # fmt: skip
        dying._cluster = DyingClusterPublish(cluster_client, KEYS, 1000, dying.marks,
                                             slots=slots_before)  # fmt: skip
        sent = predictions(n, dying.clock())
        with pytest.raises(ReplicaDied):
            await dying.publish(sent)
        assert await cluster_client.xlen(KEYS.predictions_stream) == 2 * n
        left = await dying.not_yet_published(sent)  # the marks not set: what is not on the channel
        assert len(left) == 2 * (n - slots_before)  # one series per slot here

        retry = Publisher(cluster_client, KEYS, 1000, metrics, marks=with_marks(cluster_client))
        again = predictions(n, retry.clock())  # predicted again: a later published_ms
        assert await retry.publish(again) == len(left)
        assert await retry.publish(again) == 0  # and once more: nothing goes out
        received = await collect(pubsub, 2 * n)
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0) is None
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
    assert Counter((p.symbol, p.model) for p in received) == {
        (f"C{i}/USDT", m): 1 for i in range(n) for m in ("direction", "volume")
    }
    entries = await cluster_client.xrange(KEYS.predictions_stream)
    stream = Counter((Prediction.parse(f[b"data"]).symbol, Prediction.parse(f[b"data"]).model)
                     for _, f in entries)  # fmt: skip
    assert stream == Counter((p.symbol, p.model) for p in received)
    series = [Series("binance", f"C{i}/USDT", "1h") for i in range(n)]
    assert await with_marks(cluster_client).load(series) == dict.fromkeys(series, BAR)
    assert len(await cluster_client.hgetall(KEYS.latest("volume"))) == n
    assert metrics.predictions.labels("direction")._value.get() == n - slots_before


async def test_script_writes_outputs_then_hash_then_marks(redis_url: str) -> None:
    """The one-call path keeps the pipeline's order: a message's PUBLISH and XADD, the
    latest hashes after them, the handover marks after every output."""
    client = aioredis.Redis.from_url(redis_url)
    watcher = aioredis.Redis.from_url(redis_url)
    publisher = Publisher(client, KEYS, 1000, Metrics(process=False), marks=with_marks(client))
    earlier = [p._replace(bar_open_ms=BAR - HOUR, bar_close_ms=BAR) for p in predictions(1, 0.0)]
    await publisher.publish(earlier)  # the script is loaded
    try:
        async with watcher.monitor() as monitor:
            await publisher.publish(predictions(3, publisher.clock()))
            names: list[str] = []
            while len(names) < 6 * 2 + 2 + 3:
                command = (await monitor.next_command())["command"].split()
                if command[0] in ("PUBLISH", "XADD", "HSET", "SET"):
                    names.append(command[0])
    finally:
        await client.aclose()
        await watcher.aclose()
    assert names == ["PUBLISH", "XADD"] * 6 + ["HSET"] * 2 + ["SET"] * 3


async def test_not_yet_published_leaves_out_what_the_hash_shows(
    redis_client: aioredis.Redis,
) -> None:
    publisher = Publisher(redis_client, KEYS, 1000, Metrics(process=False))
    sent = predictions(2, publisher.clock())
    await publisher.publish(sent[:3])  # C0 both models, C1 direction
    later = [p._replace(bar_open_ms=BAR + HOUR, bar_close_ms=BAR + 2 * HOUR) for p in sent]
    assert await publisher.not_yet_published(sent + later) == [sent[3], *later]


async def test_backlog_of_bars_is_one_request_with_one_script_call_per_bar(
    redis_url: str,
) -> None:
    """After an outage the queued bars go out together, but the server runs one short
    script per bar (other clients get in between), each bar's marks with its outputs."""
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    publisher = Publisher(client, KEYS, 10_000, Metrics(process=False), marks=with_marks(client))
    await publisher.publish(predictions(1, publisher.clock()))  # the script is loaded
    backlog = [
        p._replace(bar_open_ms=BAR + k * HOUR, bar_close_ms=BAR + (k + 1) * HOUR)
        for k in range(1, 4)
        for p in predictions(5, publisher.clock())
    ]
    calls = (await client.info("commandstats"))["cmdstat_evalsha"]["calls"]
    writes = CountingConnection.writes
    assert await publisher.publish(backlog) == 30
    assert CountingConnection.writes - writes == 1
    assert (await client.info("commandstats"))["cmdstat_evalsha"]["calls"] - calls == 3
    series = [Series("binance", f"C{i}/USDT", "1h") for i in range(5)]
    assert await with_marks(client).load(series) == dict.fromkeys(series, BAR + 3 * HOUR)
    bars = [Prediction.parse(f[STREAM_FIELD.encode()]).bar_open_ms
            for _, f in await client.xrange(KEYS.predictions_stream)]  # fmt: skip
    assert bars == sorted(bars)
    await client.aclose()
    await pool.aclose()


async def test_a_bar_another_replica_published_is_not_sent_again(
    redis_client: aioredis.Redis,
) -> None:
    """Two replicas overlap in a rolling update: each series' bar goes out once, whichever
    replica publishes first, and a mark never moves back."""
    metrics = [Metrics(process=False), Metrics(process=False)]
    old, new = (Publisher(redis_client, KEYS, 1000, m, marks=with_marks(redis_client))
                for m in metrics)  # fmt: skip
    assert await old.publish(predictions(2, old.clock())[:2]) == 2  # C0, both models
    assert await new.publish(predictions(3, new.clock())) == 4  # C1 and C2 only
    later = [p._replace(bar_open_ms=BAR + HOUR, bar_close_ms=BAR + 2 * HOUR)
             for p in predictions(1, new.clock())]  # fmt: skip
    assert await new.publish(later) == 2
    assert await old.publish(predictions(1, old.clock())) == 0  # C0's mark shows a later bar
    entries = await redis_client.xrange(KEYS.predictions_stream)
    sent = Counter(
        (p.symbol, p.model, p.bar_open_ms)
        for p in (Prediction.parse(fields[b"data"]) for _id, fields in entries)
    )
    assert len(sent) == 8 and set(sent.values()) == {1}, sent
    c0 = Series("binance", "C0/USDT", "1h")
    assert int(await redis_client.get(KEYS.predicted(c0))) == BAR + HOUR
    assert (
        metrics[1].registry.get_sample_value(
            "whalecast_predictions_published_total", {"model": "direction"}
        )
        == 3
    )


OUTPUTS = [("volume_next_bars", 6, 0.5), ("volume_next_bars", 6, 0.9), ("p_up_in_bars", 6, None)]


def horizon_predictions(n: int, now: float) -> list[PredictionOut]:
    """A v1 model's prediction and a horizon model's three outputs, per series."""
    out = []
    for i in range(n):
        series = Series("binance", f"C{i}/USDT", "1h")
        v1 = PredictionOut(series, BAR, BAR + HOUR, "volume", "v1", "next_bar_volume", 10.0 + i, now)  # fmt: skip
        out.append(v1)
        for j, (target, horizon, quantile) in enumerate(OUTPUTS):
            out.append(v1._replace(model="horizons", target=target, value=20.0 + i + j,
                                   horizon_bars=horizon, quantile=quantile))  # fmt: skip
    return out


async def check_horizon_outputs(client: Any, publisher: Publisher, n: int) -> None:
    sent = horizon_predictions(n, publisher.clock())
    assert await publisher.publish(sent) == 4 * n
    stream = [Prediction.parse(f[STREAM_FIELD.encode()])
              for _, f in await client.xrange(KEYS.predictions_stream)]  # fmt: skip
    assert Counter((p.model, p.target, p.horizon_bars, p.quantile) for p in stream) == {
        ("volume", "next_bar_volume", None, None): n,
        **{("horizons", *output): n for output in OUTPUTS},
    }
    latest = await client.hgetall(KEYS.latest("horizons"))
    tag = "binance:C0/USDT:1h"
    assert len(latest) == 3 * n  # one field per output: none overwrites another
    assert json.loads(latest[f"{tag}|volume_next_bars|6|0.9".encode()])["value"] == 21.0
    assert json.loads(latest[f"{tag}|volume_next_bars|6|0.5".encode()])["value"] == 20.0
    assert "quantile" not in json.loads(latest[f"{tag}|p_up_in_bars|6".encode()])
    assert set(await client.hgetall(KEYS.latest("volume"))) == {
        f"binance:C{i}/USDT:1h".encode() for i in range(n)
    }
    assert await publisher.publish(sent) == 0  # the marks show the bar: nothing again


async def test_a_horizon_models_outputs_each_go_out_once(redis_client: aioredis.Redis) -> None:
    publisher = Publisher(redis_client, KEYS, 1000, Metrics(process=False),
                          marks=with_marks(redis_client))  # fmt: skip
    await check_horizon_outputs(redis_client, publisher, n=5)


async def test_a_horizon_models_outputs_on_the_cluster(cluster_client: RedisCluster) -> None:
    publisher = Publisher(cluster_client, KEYS, 1000, Metrics(process=False),
                          marks=with_marks(cluster_client))  # fmt: skip
    await check_horizon_outputs(cluster_client, publisher, n=5)


async def test_not_yet_published_tells_a_models_outputs_apart(
    redis_client: aioredis.Redis,
) -> None:
    publisher = Publisher(redis_client, KEYS, 1000, Metrics(process=False))
    sent = horizon_predictions(1, publisher.clock())
    await publisher.publish(sent[:3])  # the v1 message and two of the three outputs
    assert await publisher.not_yet_published(sent) == [sent[3]]
