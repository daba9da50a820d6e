"""Three daemon replicas share one simulator's series on a Redis Cluster; one (a real
``whalecast run`` process) is killed with SIGKILL, the other two stop and come back with
``shard.count`` 2 (a StatefulSet scaled down), and every series keeps exactly one
prediction per model and bar: seen by a real subscriber on the predictions channel and
in the stream. The two survivors run in this process (one TensorFlow start-up instead
of three); the killed one must be a process to die for real.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from inference.daemon import Daemon
from streamer.simulator import Simulator
from testkit.daemon import Subscriber, clocks_caught_up, daemon_config, write_demo_models
from testkit.polling import wait_until
from testkit.replicas import Replica, write_config
from testkit.simulator import synthetic_simulator
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.metrics import Metrics
from whalecast.redisconn import RedisHandle
from whalecast.schema import Prediction
from whalecast.settings import Settings, load_settings
from whalecast.sharding import shard_of

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

SYMBOLS = 12
MODELS = 2


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with synthetic_simulator(SYMBOLS) as simulator:
        yield simulator


@pytest.fixture
def killed(tmp_path: Path) -> Iterator[list[Replica]]:
    processes: list[Replica] = []
    yield processes
    for replica in processes:
        replica.stop_quietly()


@asynccontextmanager
async def in_process(settings: Settings, count: int, *indexes: int) -> AsyncIterator[list[Daemon]]:
    """Replicas ``indexes`` of ``count`` in this process, started together."""
    async with AsyncExitStack() as stack:
        daemons = []
        for index in indexes:
            shard = settings.shard.model_copy(update={"index": index, "count": count})
            client = await stack.enter_async_context(RedisHandle(settings.redis))
            daemon = Daemon(settings.model_copy(update={"shard": shard}), Metrics(), client)
            daemons.append(daemon)
        await asyncio.gather(*(d.start() for d in daemons))
        try:
            yield daemons
        finally:
            await asyncio.gather(*(d.stop() for d in daemons))


async def step(sim: Simulator, daemons: list[Daemon], sub: Subscriber, total: int) -> None:
    await clocks_caught_up(sim, *daemons)
    # the replica process's clock too: every client polling the time was told the newest
    await wait_until(lambda: sim.clocks_behind() == 0, what="every replay clock")
    await sim.advance(bars=1)
    await sub.wait_for(total, timeout_seconds=60)


async def test_replicas_cover_every_series_once_and_take_over_a_killed_shard(
    sim: Simulator,
    cluster_client: RedisCluster,
    redis_cluster_url: str,
    killed: list[Replica],
    tmp_path: Path,
) -> None:
    write_demo_models(tmp_path / "registry")
    config = daemon_config(
        sim, redis_cluster_url, tmp_path / "registry",
        redis={"url": redis_cluster_url, "cluster": True, "prefix": "wc"},
        whale={"enabled": False}, log={"format": "json"},
    )  # fmt: skip
    settings = load_settings(None, **config)
    series = [Series("binance", s, sim.timeframe) for s in sim.symbols]
    moved = [s for s in series if shard_of(s, 3) == 2]
    assert moved and all(shard_of(s, 2) != 2 for s in moved)
    per_bar = SYMBOLS * MODELS

    async with Subscriber(cluster_client, "wc:predictions") as sub:
        # shard 2 of 3 is a `whalecast run` process (killed below); shards 0 and 1 run here
        third = Replica(write_config(tmp_path / "config.yml", config), 2, 3, tmp_path / "2.log")
        killed.append(third.start())
        async with in_process(settings, 3, 0, 1) as survivors:
            await third.wait_ready()
            await sub.wait_for(per_bar)  # each replica: the bar that had just closed
            await step(sim, survivors, sub, 2 * per_bar)
            # a bar plays and the third replica is killed at once, wherever it is
            await step(sim, survivors, sub, 0)
            third.kill()
            await sub.wait_for(3 * per_bar - len(moved) * MODELS, timeout_seconds=60)
        # scale down: the survivors stop and come back with shard.count 2; a bar closes meanwhile
        await sim.advance(bars=1)
        async with in_process(settings, 2, 0, 1) as shards:
            await sub.wait_for(4 * per_bar, timeout_seconds=60)
            await step(sim, shards, sub, 5 * per_bar)
        await sub.drained()  # the replicas have stopped; all they published has arrived
        messages = list(sub.messages)

    bars = [b[0] for b in sim.closed_bars(sim.symbols[0])][-5:]
    expected = {(s.symbol, m, b) for s in series for m in ("direction", "volume") for b in bars}
    check_exactly_once(messages, expected)
    await check_stream(cluster_client, expected)
    marks = await cluster_client.mget_nonatomic([Keys("wc").predicted(s) for s in series])
    assert {int(m) for m in marks} == {bars[-1]}


def check_exactly_once(messages: list[dict[str, Any]], expected: set[tuple[str, str, int]]) -> None:
    seen = Counter(
        (p.symbol, p.model, p.bar_open_ms)
        for p in (Prediction.parse(json.dumps(m)) for m in messages)
    )
    duplicates = {key: n for key, n in seen.items() if n > 1}
    assert not duplicates, f"published more than once: {duplicates}"
    assert set(seen) == expected, f"missing: {sorted(expected - set(seen))[:5]}"


async def check_stream(cluster_client: RedisCluster, expected: set[tuple[str, str, int]]) -> None:
    entries = await cluster_client.xrange("wc:predictions:stream")
    parsed = [Prediction.parse(fields[b"data"]) for _id, fields in entries]
    assert Counter((p.symbol, p.model, p.bar_open_ms) for p in parsed) == dict.fromkeys(expected, 1)
