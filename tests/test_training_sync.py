"""A promotion with inference.registry_sync: redis puts the artifact in Redis for other nodes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from testkit.models import preprocess_for, small_model, write_model
from training.promote import promote
from whalecast.artifact import read_current
from whalecast.artifact_sync import sync_current
from whalecast.keys import Keys
from whalecast.settings import RedisSettings

pytestmark = [pytest.mark.redis, pytest.mark.tf]


def test_promotion_publishes_files_then_the_notice(redis_url: str, tmp_path: Path) -> None:
    trainer_registry = tmp_path / "trainer"
    version = write_model(
        trainer_registry, "direction", small_model(24, 2), preprocess_for(["ret_1", "rsi_14"]),
        current=False,
    )  # fmt: skip
    settings = RedisSettings(url=redis_url, prefix="wc")

    async def scenario() -> tuple[list[dict[str, object]], str | None]:
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub()
        await pubsub.subscribe("wc:models")
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        published = await asyncio.to_thread(
            promote, trainer_registry, "direction", version, settings, True
        )
        assert published
        notice = await pubsub.get_message(timeout=5.0)
        # another node, with an empty registry, gets the version from Redis alone
        fetched = await sync_current(client, Keys("wc"), tmp_path / "replica", "direction")
        await pubsub.aclose()
        await client.aclose()
        return [notice] if notice else [], fetched

    notices, fetched = asyncio.run(scenario())
    assert notices and b'"version"' in notices[0]["data"]
    assert fetched == version
    assert read_current(tmp_path / "replica", "direction") == version
    replica_dir = tmp_path / "replica" / "direction" / version
    assert (replica_dir / "model.keras").read_bytes() == (
        trainer_registry / "direction" / version / "model.keras"
    ).read_bytes()


def test_without_sync_only_the_notice_goes_out(redis_url: str, tmp_path: Path) -> None:
    version = write_model(
        tmp_path / "r", "direction", small_model(24, 1), preprocess_for(["ret_1"]), current=False
    )
    assert promote(tmp_path / "r", "direction", version, RedisSettings(url=redis_url, prefix="wc"))
    import redis

    with redis.Redis.from_url(redis_url) as client:
        assert client.keys("wc:artifact:*") == []
