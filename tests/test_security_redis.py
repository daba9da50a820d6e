"""Redis with a password and a confined ACL user, and Redis over TLS: the daemon works with
both end to end, and a wrong password, user, certificate or missing permission fails at
start-up with one clear message that names the problem and holds no secret."""

# ruff: noqa: F401, F811 - the sim and registry fixtures come from tests.fault_helpers

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from inference.daemon import serve
from streamer.simulator import Simulator
from tests.fault_helpers import (
    Invariant,
    advance,
    check_daemon,
    fault_settings,
    own_daemon,
    registry,
    sim,
)
from tests.helpers import RedisServer, free_port
from tests.security_helpers import DAEMON_COMMANDS, AclRedis, TestCA
from whalecast.metrics import Metrics
from whalecast.redisconn import RedisHandle, RedisUnavailable
from whalecast.settings import RedisSettings

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


@pytest.mark.tf
async def test_acl_without_a_command_the_daemon_needs_fails_clearly(
    sim: Simulator, registry: Path, acl_redis: AclRedis
) -> None:
    await acl_redis.set_user(tuple(c for c in DAEMON_COMMANDS if c != "hmget"))
    settings = fault_settings(sim, acl_redis.server.url, registry, redis=acl_redis.settings())
    with pytest.raises(RedisUnavailable) as refused:
        await serve(settings, Metrics(), asyncio.Event())
    message = str(refused.value)
    assert "lacks a permission" in message and "hmget" in message, message
    assert acl_redis.user_password not in message


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
