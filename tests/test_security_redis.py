"""Redis with a password and a confined ACL user, and Redis over TLS: the daemon works with
both end to end, and a wrong password, user, certificate or missing permission fails at
start-up with one clear message that names the problem and holds no secret."""

# ruff: noqa: F401, F811 - the sim and registry fixtures come from testkit.faults

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from inference.lifecycle import serve
from streamer.simulator import Simulator
from testkit.faults import (
    Invariant,
    advance,
    check_daemon,
    fault_settings,
    own_daemon,
    registry,
    sim,
)
from testkit.redis_servers import RedisServer, free_port
from tests.security_helpers import DAEMON_COMMANDS, AclRedis, TestCA
from whalecast.acl import Refusal, daemon_probes, refused_commands
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.metrics import Metrics
from whalecast.redisconn import RedisHandle, RedisUnavailable
from whalecast.settings import RedisSettings, load_settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    server = AclRedis(tmp_path / "redis")
    server.server.start()
    yield server
    server.server.stop()


@pytest.mark.tf
async def test_daemon_with_a_password_and_a_confined_acl_user(
    sim: Simulator, registry: Path, acl_redis: AclRedis
) -> None:
    await acl_redis.set_user()
    invariant = Invariant(
        sim, acl_redis.server.url, redis_kwargs={"password": acl_redis.admin_password}
    )
    settings = fault_settings(sim, acl_redis.server.url, registry, redis=acl_redis.settings())
    async with own_daemon(settings, invariant) as daemon:
        await check_daemon(invariant, daemon)
        await advance(sim)
        outcome = await check_daemon(invariant, daemon)
    outcome.assert_all_predicted(len(sim.symbols), bars=2)

    # the ACL is what confines it: nothing outside the prefix, no administration
    user = aioredis.Redis.from_url(
        acl_redis.server.url, username="whalecast", password=acl_redis.user_password
    )
    try:
        for command in (("SET", "other:key", "1"), ("GET", "other:key"), ("FLUSHALL",),
                        ("CONFIG", "GET", "*"), ("KEYS", "*"), ("PUBLISH", "other", "x")):  # fmt: skip
            with pytest.raises(NoPermissionError):
                await user.execute_command(*command)
        pubsub = user.pubsub()
        with pytest.raises(NoPermissionError):
            await pubsub.subscribe("other:channel")
            await pubsub.get_message(timeout=2.0)  # the refusal is the reply
        await pubsub.aclose()
    finally:
        await user.aclose()


async def expect_refusal(redis_settings: dict[str, Any], *words: str, secret: str = "") -> str:
    settings = RedisSettings(**redis_settings)
    with pytest.raises(RedisUnavailable) as refused:
        async with RedisHandle(settings):
            pass
    message = str(refused.value)
    for word in words:
        assert word in message, message
    if secret:
        assert secret not in message
    assert "\n" not in message
    return message


async def test_wrong_password_or_user_fails_clearly(acl_redis: AclRedis) -> None:
    await acl_redis.set_user()
    wrong = secrets.token_hex(12)
    message = await expect_refusal(
        acl_redis.settings(password=wrong), "refused the configured credentials",
        acl_redis.server.url, secret=wrong,
    )  # fmt: skip
    assert "WRONGPASS" in message or "invalid username-password" in message
    await expect_refusal(
        acl_redis.settings(username="nobody"), "refused the configured credentials"
    )
    await expect_refusal({"url": acl_redis.server.url}, "refused the configured credentials")
    # a password written into the URL is not shown either
    host = acl_redis.server.url.removeprefix("redis://")
    message = await expect_refusal(
        {"url": f"redis://whalecast:{wrong}@{host}"}, "refused", secret=wrong
    )
    assert ":***@" in message
    # nothing listens there
    await expect_refusal({"url": f"redis://127.0.0.1:{free_port()}/0"}, "cannot connect to Redis")


async def refused_at_start(acl_redis: AclRedis, **settings: Any) -> str:
    """The one line ``whalecast run`` ends with, before any feed or model starts."""
    redis = acl_redis.settings(**{"prefix": "wc", **settings})
    config = load_settings(None, redis=redis, metrics={"port": 0})
    with pytest.raises(RedisUnavailable) as refused:
        await serve(config, Metrics(), asyncio.Event())
    message = str(refused.value)
    assert acl_redis.user_password not in message and "\n" not in message
    return message


def without(*names: str) -> tuple[str, ...]:
    return tuple(c for c in DAEMON_COMMANDS if c not in names)


async def test_acl_without_commands_the_daemon_needs_fails_at_start_naming_them(
    acl_redis: AclRedis,
) -> None:
    # the confined user may not ask ACL DRYRUN: each command is probed harmlessly
    await acl_redis.set_user(without("hmget", "xadd"))
    assert await refused_at_start(acl_redis) == (
        f"Redis at {acl_redis.server.url}: the configured user 'whalecast' lacks a permission "
        "whalecast needs: may not run hmget, xadd (grant them, e.g. ACL SETUSER whalecast "
        "+hmget +xadd ~wc:* &wc:*)"
    )
    # a user that may ask ACL DRYRUN (Redis 7) is answered without running anything
    await acl_redis.set_user((*without("zadd", "subscribe"), "acl|dryrun"))
    assert await refused_at_start(acl_redis) == (
        f"Redis at {acl_redis.server.url}: the configured user 'whalecast' lacks a permission "
        "whalecast needs: may not run subscribe, zadd (grant them, e.g. ACL SETUSER whalecast "
        "+subscribe +zadd ~wc:* &wc:*)"
    )


async def test_acl_with_the_wrong_key_prefix_fails_at_start(acl_redis: AclRedis) -> None:
    await acl_redis.set_user()  # keys and channels under wc: only
    message = await refused_at_start(acl_redis, prefix="other")
    assert message == (
        f"Redis at {acl_redis.server.url}: the configured user 'whalecast' lacks a permission "
        "whalecast needs: may not use its keys with del, get, hget, hincrby, hmget, hset, "
        "mget, pexpire, set, setrange, xadd, zadd, zrange, zremrangebyscore; may not use "
        "its channels with publish, subscribe (grant them, e.g. ACL SETUSER whalecast "
        "~other:* &other:*)"
    )


async def test_probing_changes_nothing(acl_redis: AclRedis) -> None:
    await acl_redis.set_user()
    admin = acl_redis.admin()
    try:
        config = load_settings(None, redis=acl_redis.settings(prefix="wc"))
        async with RedisHandle(config.redis) as client:
            probes = daemon_probes(
                Keys("wc"), Series("binance", "BTC/USDT", "1h"), registry_sync=True
            )
            sync_only = ("hkeys", "hstrlen", "hgetall")  # not in the confined user's list
            assert await refused_commands(client, "whalecast", probes) == [
                Refusal(p.name, ANY) for p in probes if p.name in sync_only
            ]
        assert await admin.keys("*") == []
    finally:
        await admin.aclose()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, TestCA, str]]:
    ca = TestCA(tmp_path / "ca")
    cert = ca.issue("redis", server=True)
    server = RedisServer(tmp_path / "redis")
    server.extra_args = [
        "--port", "0", "--tls-port", str(server.port), "--tls-cert-file", str(cert.cert),
        "--tls-key-file", str(cert.key), "--tls-ca-cert-file", str(ca.cert),
        "--tls-auth-clients", "yes",
    ]  # fmt: skip
    server.start()
    yield server, ca, f"rediss://127.0.0.1:{server.port}/0"
    server.stop()


@pytest.mark.tf
async def test_daemon_over_tls_with_a_self_signed_ca(
    sim: Simulator, registry: Path, tls_redis: tuple[RedisServer, TestCA, str]
) -> None:
    _server, ca, url = tls_redis
    client = ca.issue("whalecast", server=False)
    tls = {"tls_ca_file": str(ca.cert), "tls_cert_file": str(client.cert),
           "tls_key_file": str(client.key)}  # fmt: skip
    invariant = Invariant(
        sim, url, redis_kwargs={"ssl_ca_certs": str(ca.cert), "ssl_certfile": str(client.cert),
                                "ssl_keyfile": str(client.key)},
    )  # fmt: skip
    settings = fault_settings(sim, url, registry, redis={"url": url, **tls})
    async with own_daemon(settings, invariant) as daemon:
        await check_daemon(invariant, daemon)
        await advance(sim)
        outcome = await check_daemon(invariant, daemon)
    outcome.assert_all_predicted(len(sim.symbols), bars=2)


async def test_tls_failures_are_named(
    tls_redis: tuple[RedisServer, TestCA, str], tmp_path: Path
) -> None:
    server, ca, url = tls_redis
    client = ca.issue("whalecast", server=False)
    mine = {"tls_cert_file": str(client.cert), "tls_key_file": str(client.key)}
    other = TestCA(tmp_path / "other-ca", name="someone else")
    # a server certificate from a CA we do not trust
    await expect_refusal({"url": url, "tls_ca_file": str(other.cert), **mine}, "TLS", "certificate")
    # the system's CAs do not know a self-signed one either
    await expect_refusal({"url": url, **mine}, "TLS", "redis.tls_ca_file")
    # plain TCP to the TLS port
    await expect_refusal({"url": server.url}, "Redis at")
