"""The served-model set: start-up load, swaps only between bars, refusals, watcher paths, expiry."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from inference.heap import REFREEZE_AFTER_BARS, freeze_heap
from inference.model_watch import ModelWatcher
from inference.models import ModelSet
from testkit.models import (
    horizon_model,
    horizon_preprocess,
    preprocess_for,
    random_windows,
    small_model,
    write_horizon_model,
    write_model,
)
from testkit.polling import wait_until
from testkit.redis_servers import wait_for_subscriber
from whalecast.artifact import set_current
from whalecast.artifact_sync import publish_artifact
from whalecast.keys import Keys
from whalecast.metrics import Metrics
from whalecast.settings import InferenceSettings

pytestmark = [pytest.mark.tf, pytest.mark.redis]

KEYS = Keys("wctest")
FEATURES = ["ret_1", "log_volume"]


def settings(**overrides: Any) -> InferenceSettings:
    values: dict[str, Any] = {
        "models": ["direction"], "backend": "keras", "reload_poll_seconds": 3600.0,
        "batch_buckets": [1, 8],
    }  # fmt: skip
    values.update(overrides)
    return InferenceSettings(**values)


def good(registry: Path, seed: int, current: bool = True, **kwargs: Any) -> str:
    model = small_model(24, len(FEATURES), seed=seed)
    return write_model(registry, "direction", model, preprocess_for(FEATURES), current=current, **kwargs)  # fmt: skip


def broken(registry: Path) -> str:
    model = small_model(24, 1)
    return write_model(registry, "direction", model, preprocess_for(["moon_phase"]))


def value(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


async def test_start_up_swap_between_bars_and_refusal(tmp_path: Path) -> None:
    first = good(tmp_path, seed=1)
    metrics = Metrics(process=False)
    models = ModelSet(settings(), metrics, registry=tmp_path)
    await models.load_all()
    assert models.ready and models.serving()["direction"].version == first
    assert value(metrics.model_info, "direction", first, "keras") == 1
    assert value(metrics.model_trained, "direction") > 0
    windows = random_windows(3)
    before = models.serving()["direction"].predict(windows)

    second = good(tmp_path, seed=2)
    await models.check("direction")
    # loaded and parked: the bar in flight still sees the old version
    assert models.serving()["direction"].version == first
    assert models.swap_pending() == ["direction"]
    assert models.serving()["direction"].version == second
    assert (models.serving()["direction"].predict(windows) != before).any()
    assert models.swap_pending() == []
    text = metrics.render().decode()
    assert f'version="{first}"' not in text and f'version="{second}"' in text

    bad = broken(tmp_path)
    await models.check("direction")
    await models.check("direction")  # a refused version is not tried again
    assert models.swap_pending() == []
    assert models.serving()["direction"].version == second
    assert value(metrics.model_reloads, "direction", "refused") == 1
    assert value(metrics.model_reload_failing, "direction") == 1
    assert bad != second

    set_current(tmp_path, "direction", second)  # rolled back: no longer failing
    await models.check("direction")
    assert value(metrics.model_reload_failing, "direction") == 0


async def test_a_parked_version_is_handed_out_once_for_priming(tmp_path: Path) -> None:
    good(tmp_path, seed=1)
    models = ModelSet(settings(), Metrics(process=False), registry=tmp_path)
    await models.load_all()  # swapped in at once: nothing to prime ahead of a swap
    waiting = asyncio.create_task(models.parked())
    second = good(tmp_path, seed=2)
    await models.check("direction")
    parked = await asyncio.wait_for(waiting, timeout=30)
    assert {m: r.version for m, r in parked.items()} == {"direction": second}

    third = good(tmp_path, seed=3)
    await models.check("direction")
    models.swap_pending()  # in service before anyone asked: it serves already
    assert models.serving()["direction"].version == third
    assert models.take_parked() == {}


async def test_start_up_with_a_broken_model_is_not_ready(tmp_path: Path) -> None:
    broken(tmp_path)
    metrics = Metrics(process=False)
    models = ModelSet(settings(), metrics, registry=tmp_path)
    await models.load_all()
    assert not models.ready and models.serving() == {}
    assert value(metrics.model_reload_failing, "direction") == 1


@pytest.fixture
async def watching(
    tmp_path: Path, redis_client: aioredis.Redis, request: pytest.FixtureRequest
) -> AsyncIterator[ModelSet]:
    good(tmp_path, seed=1)
    poll = getattr(request, "param", 3600.0)
    models = ModelSet(settings(reload_poll_seconds=poll), Metrics(process=False),
                      registry=tmp_path, redis=redis_client, keys=KEYS)  # fmt: skip
    await models.load_all()
    task = asyncio.create_task(ModelWatcher(models).run())
    await wait_for_subscriber(redis_client, KEYS.models_channel)
    yield models
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_notice_path(
    watching: ModelSet, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    second = good(tmp_path, seed=2)
    await redis_client.publish(KEYS.models_channel, "not json")  # ignored, watcher survives
    await redis_client.publish(
        KEYS.models_channel, json.dumps({"model": "direction", "version": second})
    )
    await wait_until(lambda: "direction" in watching._pending)
    assert watching.swap_pending() == ["direction"]
    assert watching.serving()["direction"].version == second


@pytest.mark.parametrize("watching", [0.2], indirect=True)
async def test_current_poll_path(watching: ModelSet, tmp_path: Path) -> None:
    second = good(tmp_path, seed=3)  # no notice: only CURRENT changes
    await wait_until(lambda: "direction" in watching._pending)
    watching.swap_pending()
    assert watching.serving()["direction"].version == second


async def test_expiry_flag_and_stop_serving(tmp_path: Path) -> None:
    old = datetime.now(UTC) - timedelta(hours=30)
    good(tmp_path, seed=1, trained_at=old)
    metrics = Metrics(process=False)
    models = ModelSet(settings(expiry_hours=24.0), metrics, registry=tmp_path)
    await models.load_all()
    assert "direction" in models.serving()
    assert value(metrics.model_expired, "direction") == 1
    stopping = ModelSet(settings(expiry_hours=24.0, stop_serving_expired=True),
                        Metrics(process=False), registry=tmp_path)  # fmt: skip
    await stopping.load_all()
    assert stopping.serving() == {}
    fresh = ModelSet(settings(expiry_hours=48.0), Metrics(process=False), registry=tmp_path)
    await fresh.load_all()
    assert value(fresh.metrics.model_expired, "direction") == 0


async def test_redis_registry_sync(tmp_path: Path, redis_client: aioredis.Redis) -> None:
    trainer, replica = tmp_path / "trainer", tmp_path / "replica"
    first = good(trainer, seed=1)
    await publish_artifact(redis_client, KEYS, trainer, "direction", first)
    models = ModelSet(settings(registry_sync="redis"), Metrics(process=False),
                      registry=replica, redis=redis_client, keys=KEYS)  # fmt: skip
    await models.load_all()
    assert models.serving()["direction"].version == first
    second = good(trainer, seed=2)
    await publish_artifact(redis_client, KEYS, trainer, "direction", second, notify=False)
    await models.check("direction")
    models.swap_pending()
    assert models.serving()["direction"].version == second
    assert (replica / "direction" / second / "model.keras").is_file()


async def test_heap_frozen_again_once_the_replaced_version_is_gone(tmp_path: Path) -> None:
    """The daemon's frozen heap is unfrozen by a swap (the old version must be collectable)
    and frozen again once nothing refers to the old version, so full collections stay
    cheap after a reload too."""
    good(tmp_path, seed=1)
    models = ModelSet(settings(), Metrics(process=False), registry=tmp_path)
    await models.load_all()
    old = models.serving()["direction"]
    gone = weakref.ref(old)
    freeze_heap()
    try:
        good(tmp_path, seed=2)
        await models.check("direction")
        assert models.swap_pending() == ["direction"]
        assert gc.get_freeze_count() == 0
        for _ in range(REFREEZE_AFTER_BARS):  # a late bar still holds the old version
            models.swap_pending()
        assert gc.get_freeze_count() == 0 and gone() is not None
        del old
        for _ in range(REFREEZE_AFTER_BARS):
            models.swap_pending()
        assert gone() is None and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


async def test_a_bad_version_is_refused_while_the_old_one_serves(tmp_path: Path) -> None:
    first, _ = write_horizon_model(tmp_path, "volume", "volume", seed=1)
    metrics = Metrics(process=False)
    models = ModelSet(settings(models=["volume"]), metrics, registry=tmp_path)
    await models.load_all()
    assert models.serving()["volume"].version == first
    pre = horizon_preprocess("volume")
    bad = write_model(tmp_path, "volume", horizon_model(24, 2, 1, sigmoid=False, seed=2), pre)
    await models.check("volume")
    assert models.swap_pending() == []
    assert models.serving()["volume"].version == first
    assert metrics.model_reloads.labels("volume", "refused")._value.get() == 1
    assert bad != first
    assert models.serving()["volume"].predict(random_windows(2)).shape == (2, 6)
