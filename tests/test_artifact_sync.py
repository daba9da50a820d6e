"""Model distribution through Redis: a round trip, notices, size and file-name bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from testkit.models import preprocess_for, write_model
from whalecast.artifact import read_current
from whalecast.artifact_sync import (
    SyncError,
    fetch_artifact,
    publish_artifact,
    remote_current,
    sync_current,
)
from whalecast.keys import Keys

pytestmark = pytest.mark.redis

KEYS = Keys("wctest")
VERSION = "20261122T060000Z-3f2a"


def fake_model_files(directory: Path) -> None:
    """Bytes standing in for model.keras: sync moves files, it does not load them."""
    (directory / "model.keras").write_bytes(bytes(range(256)) * 40)
    (directory / "report.json").write_text("{}")


def trainer_version(registry: Path, version: str = VERSION) -> str:
    return write_model(registry, "volume", None, preprocess_for(["log_volume"]),
                       version=version, extra=fake_model_files)  # fmt: skip


def found_anywhere(root: Path, name: str) -> bool:
    return any(root.rglob(name))


async def test_round_trip_with_notice(tmp_path: Path, redis_client: aioredis.Redis) -> None:
    trainer, replica = tmp_path / "trainer", tmp_path / "replica"
    trainer_version(trainer)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(KEYS.models_channel)
    await pubsub.get_message(timeout=5)
    size = await publish_artifact(redis_client, KEYS, trainer, "volume", VERSION)
    notice = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    await pubsub.aclose()
    assert notice is not None
    assert json.loads(notice["data"]) == {"model": "volume", "version": VERSION}
    assert await remote_current(redis_client, KEYS, "volume") == VERSION

    assert await sync_current(redis_client, KEYS, replica, "volume") == VERSION
    assert read_current(replica, "volume") == VERSION
    source, copy = trainer / "volume" / VERSION, replica / "volume" / VERSION
    names = sorted(p.name for p in source.iterdir())
    assert names == sorted(p.name for p in copy.iterdir())
    assert all((source / n).read_bytes() == (copy / n).read_bytes() for n in names)
    assert size == sum((source / n).stat().st_size for n in names)
    # already there: no second fetch, nothing rewritten
    assert await sync_current(redis_client, KEYS, replica, "volume") == VERSION
    assert await sync_current(redis_client, KEYS, replica, "direction") is None


async def test_size_bound(tmp_path: Path, redis_client: aioredis.Redis) -> None:
    trainer_version(tmp_path / "trainer")
    with pytest.raises(SyncError, match="larger than"):
        await publish_artifact(redis_client, KEYS, tmp_path / "trainer", "volume", VERSION,
                               max_bytes=1000)  # fmt: skip
    await publish_artifact(redis_client, KEYS, tmp_path / "trainer", "volume", VERSION)
    with pytest.raises(SyncError, match="more than 1000"):
        await fetch_artifact(
            redis_client, KEYS, tmp_path / "replica", "volume", VERSION, max_bytes=1000
        )
    assert not (tmp_path / "replica" / "volume" / VERSION).exists()


async def test_refuses_unsafe_names_and_missing_versions(
    tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    key = KEYS.artifact("volume", VERSION)
    await redis_client.hset(key, mapping={"../../evil.sh": b"#!/bin/sh", "model.keras": b"x"})
    with pytest.raises(SyncError, match="unsafe file names"):
        await fetch_artifact(redis_client, KEYS, tmp_path, "volume", VERSION)
    with pytest.raises(SyncError, match="no artifact"):
        await fetch_artifact(redis_client, KEYS, tmp_path, "volume", "20261122T060000Z-aaaa")
    with pytest.raises(SyncError, match="not a version name"):
        await fetch_artifact(redis_client, KEYS, tmp_path, "volume", "../x")
    assert not found_anywhere(tmp_path.parent, "evil.sh")


async def test_incomplete_artifact_is_not_written(
    tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    await redis_client.hset(KEYS.artifact("volume", VERSION), mapping={"model.keras": b"x"})
    with pytest.raises(SyncError, match="missing"):
        await fetch_artifact(redis_client, KEYS, tmp_path, "volume", VERSION)
    assert not (tmp_path / "volume" / VERSION).exists()
