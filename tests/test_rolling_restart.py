"""A rolling update as Kubernetes runs it (maxSurge 1, maxUnavailable 0): the new daemon
starts while the old one runs, the old one is sent SIGTERM only once the new one's
/readyz says ready, and it drains and exits. Each /readyz is polled throughout over real
HTTP: it is 200 only with every window complete (read back from Redis for the old, a
``whalecast run`` process; from the store for the new one, in this process), and across
the switch every bar is predicted exactly once per model: none twice while both run,
none lost while the old one drains."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis

from inference.daemon import Daemon
from streamer.simulator import Simulator, SimulatorConfig
from streamer.store_format import unpack_window
from testkit.daemon import Subscriber, clocks_caught_up, daemon_config, write_demo_models
from testkit.polling import wait_until
from testkit.replicas import Replica, write_config
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.metrics import Metrics
from whalecast.redisconn import RedisHandle
from whalecast.settings import load_settings

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

MODELS = ("direction", "volume")
WINDOW = 24  # features.window of the daemon settings


@dataclass
class Probe:
    """Polls one replica's /readyz like a kubelet, much more often; what it saw."""

    get: Callable[[], Awaitable[tuple[int, str]]]
    complete: Callable[[], Awaitable[bool]]  # every window complete, asked independently
    seen: list[tuple[int, bool]] = field(default_factory=list)  # status, windows complete
    last: str = ""  # the last body

    async def run(self) -> None:
        while True:
            try:
                status, self.last = await self.get()
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)  # not listening yet, or stopped
                continue
            self.seen.append((status, await self.complete()))
            await asyncio.sleep(0.01)

    async def until_ready(self, log: Callable[[], str] = str) -> None:
        await wait_until(lambda: bool(self.seen) and self.seen[-1][0] == 200, timeout_seconds=180,
                         what=lambda: f"/readyz answering 200: {self.last}\n{log()}")  # fmt: skip

    def check(self, warmed_up: bool) -> None:
        """Every 200 with every window complete; ``warmed_up``: 503 while they were not."""
        assert all(complete for status, complete in self.seen if status == 200), self.seen
        if warmed_up:
            assert any(status == 503 and not complete for status, complete in self.seen)


@contextlib.contextmanager
def probing(probe: Probe) -> Iterator[Probe]:
    task = asyncio.ensure_future(probe.run())
    try:
        yield probe
    finally:
        task.cancel()


@asynccontextmanager
async def new_replica(config: dict[str, Any]) -> AsyncIterator[tuple[Daemon, Probe]]:
    async with RedisHandle(load_settings(None, **config).redis) as client:
        daemon = Daemon(load_settings(None, **config), Metrics(), client)
        await daemon.start()
        assert daemon.http is not None
        port = daemon.http.port

        async def get() -> tuple[int, str]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/readyz") as response,
            ):
                return response.status, await response.text()

        async def complete() -> bool:
            return bool(daemon.store.windows(daemon.series)[1].all())

        try:
            with probing(Probe(get, complete)) as probe:
                yield daemon, probe
        finally:
            await daemon.stop()


def windows_in_redis(redis: Any, series: list[Series]) -> Callable[[], Awaitable[bool]]:
    keys = [Keys("wc").window(s) for s in series]

    async def complete() -> bool:
        rows = [unpack_window(blob, WINDOW) for blob in await redis.mget(keys)]
        return all(r is not None and not np.isnan(r).any() for r in rows)

    return complete


async def play(sim: Simulator, sub: Subscriber, daemons: list[Daemon], total: int) -> None:
    await clocks_caught_up(sim, *daemons)
    # the old replica's process too: every client polling the time was told the newest
    await wait_until(lambda: sim.clocks_behind() == 0, what="every replay clock")
    await sim.advance(bars=1)
    await sub.wait_for(total, timeout_seconds=60)


async def test_rolling_update_is_ready_only_when_warm_and_predicts_each_bar_once(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    write_demo_models(tmp_path / "registry")
    async with Simulator(SimulatorConfig(bar_seconds=None, history_bars=120, whale=False)) as sim:
        config = daemon_config(sim, redis_url, tmp_path / "registry", whale={"enabled": False},
                               log={"format": "json"})  # fmt: skip
        series = [Series("binance", s, sim.timeframe) for s in sim.symbols]
        per_bar = len(series) * len(MODELS)
        old = Replica(write_config(tmp_path / "config.yml", config), 0, 1, tmp_path / "old.log")
        async with Subscriber(redis_client, "wc:predictions") as sub:
            # a fresh deployment: the old replica's backfill is slow, its windows fill late
            sim.faults.rest_errors(40, 503, endpoint="klines")
            old.start()
            try:
                with probing(
                    Probe(lambda: old.get("/readyz"), windows_in_redis(redis_client, series))
                ) as old_probe:
                    await old_probe.until_ready(old.tail)
                    await sub.wait_for(per_bar)  # the bar that had just closed at its start
                    await play(sim, sub, [], 2 * per_bar)
                    # the update: the new replica starts beside the old one and warms up
                    async with new_replica(config) as (new, new_probe):
                        await new_probe.until_ready()
                        await play(sim, sub, [new], 3 * per_bar)  # both predict it
                        # SIGTERM to the old one as the next bar closes: it drains, exits 0
                        await clocks_caught_up(sim, new)
                        await wait_until(lambda: sim.clocks_behind() == 0, what="clocks")
                        await sim.advance(bars=1)
                        assert await old.terminate() == 0
                        await sub.wait_for(4 * per_bar, timeout_seconds=60)
                        await play(sim, sub, [new], 5 * per_bar)
                        await sub.drained()  # a duplicate would have come by now
                    new_probe.check(warmed_up=False)  # its windows were in Redis already
                old_probe.check(warmed_up=True)
            finally:
                old.stop_quietly()
            assert sim.faults.counters["rest_errors:503"] == 40
        messages = list(sub.messages)
    bars = [b[0] for b in sim.closed_bars(sim.symbols[0])][-5:]
    expected = {(s, m, b) for s in sim.symbols for m in MODELS for b in bars}
    published = Counter((m["symbol"], m["model"], m["bar_open_ms"]) for m in messages)
    assert {k: n for k, n in published.items() if n > 1} == {}, "published twice"
    assert set(published) == expected, f"missing: {sorted(expected - set(published))[:5]}"
    stream: Any = await redis_client.xrange("wc:predictions:stream")
    in_stream = Counter(
        (d["symbol"], d["model"], d["bar_open_ms"])
        for d in (json.loads(fields[b"data"]) for _id, fields in stream)
    )
    assert in_stream == dict.fromkeys(expected, 1)
