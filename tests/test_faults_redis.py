"""Redis faults against a running daemon: restarted mid-stream, with and without persistence,
and away for longer than a bar. The daemon keeps running, keeps the bars it could not
store, and catches up without a duplicate once Redis is back.

Each test runs its own redis-server (append-only file on or off) so it can stop and
restart it on the same port.
"""

# ruff: noqa: F401, F811 - the sim and registry fixtures come from testkit.faults

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.simulator import Simulator
from testkit.faults import (
    advance,
    check_daemon,
    checked_daemon,
    connect_plain,
    redis_errors,
    registry,
    sim,
)
from testkit.polling import wait_until
from testkit.redis_servers import RedisServer, free_port, wait_for_subscriber
from tests.fault_proxy import ReplyCuttingProxy

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

PERSISTENCE = {
    "aof": ["--appendonly", "yes", "--appendfsync", "always"],
    "none": ["--appendonly", "no", "--save", ""],
}


@pytest.fixture(params=sorted(PERSISTENCE))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path / "redis", extra_args=PERSISTENCE[request.param]).start()
    yield redis
    redis.stop()


async def test_redis_restarted_while_bars_close(
    sim: Simulator, registry: Path, server: RedisServer
) -> None:
    async with checked_daemon(sim, server.url, registry) as (invariant, daemon):
        await advance(sim)
        await check_daemon(invariant, daemon)
        await invariant.collect()

        server.stop()  # away for longer than a bar: two bars close meanwhile
        await advance(sim, 2)
        await wait_until(lambda: redis_errors(daemon, "append") >= 1, what="an append error")
        server.start()
        await check_daemon(invariant, daemon, timeout_seconds=40)

        await advance(sim)
        outcome = await check_daemon(invariant, daemon)
    outcome.assert_all_predicted(len(sim.symbols), bars=5)


async def test_redis_hanging_for_longer_than_a_bar(
    sim: Simulator, registry: Path, redis_url: str
) -> None:
    """Redis accepts connections but answers nothing for 4 s (CLIENT PAUSE): the daemon's
    commands time out; it keeps the bars and writes them when Redis answers again."""
    async with checked_daemon(sim, redis_url, registry) as (invariant, daemon):
        admin = connect_plain(redis_url)
        try:
            await admin.execute_command("CLIENT", "PAUSE", 4000, "ALL")
        finally:
            await admin.aclose()
        await advance(sim, 2)
        await wait_until(lambda: redis_errors(daemon, "append") >= 1, what="a timed-out append")
        await check_daemon(invariant, daemon, timeout_seconds=40)
        await advance(sim)
        outcome = await check_daemon(invariant, daemon)
    outcome.assert_all_predicted(len(sim.symbols), bars=4)


async def test_predictions_kept_until_redis_takes_them(
    sim: Simulator, registry: Path, redis_url: str
) -> None:
    """Publishing fails after the bar was stored (the connection the publisher uses is
    refused): the predictions are kept and go out once, in order, when Redis answers."""
    async with checked_daemon(sim, redis_url, registry) as (invariant, daemon):
        working = daemon.publisher.redis
        refused = connect_plain(f"redis://127.0.0.1:{free_port()}/0")
        daemon.publisher.redis = refused
        try:
            await advance(sim, 2)
            await wait_until(lambda: redis_errors(daemon, "publish") >= 2, what="failed publishing")
        finally:
            daemon.publisher.redis = working
            await refused.aclose()
        await check_daemon(invariant, daemon)
        await advance(sim)
        outcome = await check_daemon(invariant, daemon)
    outcome.assert_all_predicted(len(sim.symbols), bars=4)


@pytest.mark.parametrize("lost", ["append", "publish"])
async def test_a_write_redis_ran_but_never_confirmed(
    sim: Simulator, registry: Path, redis_server: RedisServer, redis_url: str, lost: str
) -> None:
    """The reply to the bar's store pipeline (or to its publish pipeline) is lost after Redis
    ran it: the retry finds the bars stored (the predictions sent) already; every bar is
    still predicted, and published once."""
    proxy = await ReplyCuttingProxy(redis_server.port).start()
    try:
        daemon_url = proxy.url
        async with checked_daemon(sim, redis_url, registry, daemon_redis_url=daemon_url) as (
            invariant,
            daemon,
        ):
            # the model watcher has subscribed (its reply is not the one to cut)
            await wait_for_subscriber(redis_url, daemon.keys.models_channel)
            proxy.pass_replies = 0 if lost == "append" else 1
            proxy.cut_replies = 1
            await advance(sim)
            await wait_until(lambda: proxy.cut == 1, what="a lost reply")
            await check_daemon(invariant, daemon)
            await advance(sim)
            outcome = await check_daemon(invariant, daemon)
        assert redis_errors(daemon, lost) == 1
    finally:
        await proxy.stop()
    outcome.assert_all_predicted(len(sim.symbols), bars=3)
