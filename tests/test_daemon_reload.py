"""Hot reload through the running daemon: a new version is loaded in the background and
swapped in between bars only; a broken one is refused and the old one keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from inference.daemon import Daemon
from streamer.features import FEATURE_NAMES
from testkit.daemon import (
    Running,
    bar_settled,
    captured_logs,
    metric,
    simulated_daemon,
    wait_until_ready,
    write_demo_models,
)
from testkit.models import preprocess_for, small_model, write_model
from testkit.polling import wait_until
from whalecast.artifact import MODEL_FILE

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

LATE = "BTC/USDT"


def new_direction(registry: Path, seed: int, extra: Callable[[Path], None] | None = None) -> str:
    """A new direction version over every feature, made CURRENT."""
    model = small_model(24, len(FEATURE_NAMES), seed=seed)
    return write_model(registry, "direction", model, preprocess_for(FEATURE_NAMES), extra=extra)


def reloads(daemon: Daemon, outcome: str) -> float | None:
    return metric(daemon, "whalecast_model_reloads_total", model="direction", outcome=outcome)


def loaded(daemon: Daemon, count: int) -> Callable[[], bool]:
    return lambda: reloads(daemon, "loaded") == count


def full_windows(daemon: Daemon) -> float:
    """Direction series predicted from their full window so far (not stepped)."""
    count = metric(daemon, "whalecast_inference_series_total", model="direction", path="window")
    return count or 0.0


def info(daemon: Daemon, version: str) -> float | None:
    return metric(
        daemon, "whalecast_model_info", model="direction", version=version, backend="tf-function"
    )


async def test_notice_swaps_between_bars_and_never_inside_one(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    old = write_demo_models(registry)["direction"]
    # no polling: only the notice can bring the new version in
    async with simulated_daemon(
        redis_url, redis_client, registry,
        inference={"reload_poll_seconds": 3600.0}, feed={"grace_seconds": 0.3},
    ) as run:  # fmt: skip
        sim, daemon = run.sim, run.daemon
        await wait_until_ready(daemon)
        assert info(daemon, old) == 1.0
        # bar N: one series' close is held back by the exchange (it comes over REST
        # during the next bar), so bar N has a main batch now and a late batch later
        bar_n = sim.now_ms
        sim.faults.delay_close(LATE, 3600.0)
        await run.step()
        await wait_until(lambda: len(run.of_bar(bar_n)) == 2 * 3, what="the main batch")

        new = new_direction(registry, seed=11)
        await redis_client.publish("wc:models", json.dumps({"model": "direction", "version": new}))
        await wait_until(loaded(daemon, 2), what="the new version loaded")
        assert daemon.models.runtime("direction").version == old, "parked, not swapped yet"

        await bar_settled(daemon)  # the parked version's priming done, as an hour later
        full_before = full_windows(daemon)
        bar_next = sim.now_ms
        await run.step()
        await wait_until(
            lambda: len(run.of_bar(bar_n)) == 2 * 4 and len(run.of_bar(bar_next)) == 2 * 4,
            what="the late batch of bar N and bar N+1",
        )
        assert metric(daemon, "whalecast_series_late_total", timeframe="1h") == 1.0
        assert info(daemon, new) == 1.0 and info(daemon, old) is None
        # the new version was primed when it was parked: its first bar stepped every
        # series but the late one (primed from its window of a bar earlier)
        assert full_windows(daemon) - full_before == 1

    versions_n = {m["symbol"]: m["model_version"] for m in run.of_bar(bar_n, "direction")}
    assert versions_n == dict.fromkeys(sim.symbols, old), "one bar, one version (late batch too)"
    versions_next = {m["symbol"]: m["model_version"] for m in run.of_bar(bar_next, "direction")}
    assert versions_next == dict.fromkeys(sim.symbols, new)
    keys = [(m["symbol"], m["model"], m["bar_open_ms"]) for m in run.sub.messages]
    assert len(keys) == len(set(keys)), "each series, model and bar published once"


def _corrupt(directory: Path) -> None:
    (directory / MODEL_FILE).write_bytes(np.random.default_rng(0).bytes(4096))


def _truncate(directory: Path) -> None:
    data = (directory / MODEL_FILE).read_bytes()
    (directory / MODEL_FILE).write_bytes(data[: len(data) // 2])


def _broken_versions(registry: Path) -> list[tuple[str, Callable[[], str]]]:
    """(refusal reason fragment, writer of one broken version made CURRENT)."""

    def non_finite() -> str:
        model = small_model(24, len(FEATURE_NAMES), seed=3)
        model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
        return write_model(registry, "direction", model, preprocess_for(FEATURE_NAMES))

    def wrong_features() -> str:
        model = small_model(24, 2)
        preprocess = preprocess_for(["log_volume", "no_such_feature"])
        return write_model(registry, "direction", model, preprocess)

    return [
        ("not a Keras zip archive", lambda: new_direction(registry, 4, extra=_corrupt)),
        ("not a Keras zip archive", lambda: new_direction(registry, 5, extra=_truncate)),
        ("no_such_feature", wrong_features),
        ("non-finite output", non_finite),
    ]


async def test_broken_versions_are_refused_and_polling_brings_a_good_one(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    old = write_demo_models(registry)["direction"]
    async with simulated_daemon(
        redis_url, redis_client, registry, inference={"reload_poll_seconds": 0.2}
    ) as run:
        daemon = run.daemon
        await wait_until_ready(daemon)
        for count, (reason, write) in enumerate(_broken_versions(registry), start=1):
            with captured_logs() as logs:
                broken = write()
                notice = json.dumps({"model": "direction", "version": broken})
                await redis_client.publish("wc:models", notice)
                await wait_until(
                    lambda c=count: reloads(daemon, "refused") == c,
                    what=f"{broken} refused ({reason})",
                )
            lines = [e for e in logs if e["event"] == "model version refused"]
            assert len(lines) == 1 and lines[0]["log_level"] == "error"
            assert lines[0]["version"] == broken and lines[0]["still_serving"] == old
            assert reason in lines[0]["reason"]
            assert metric(daemon, "whalecast_model_reload_failing", model="direction") == 1
            assert await served_at_next_bar(run) == {old}, f"old keeps serving after {reason}"

        # a good version, announced by nothing but CURRENT: the poll finds it
        good = new_direction(registry, seed=21)
        await wait_until(loaded(daemon, 2), what="the polled version loaded")
        assert metric(daemon, "whalecast_model_reload_failing", model="direction") == 0
        assert await served_at_next_bar(run) == {good}
        assert reloads(daemon, "refused") == 4


async def served_at_next_bar(run: Running) -> set[str]:
    """The direction versions of the next bar's predictions."""
    bar = run.sim.now_ms
    await run.step()
    await wait_until(lambda: len(run.of_bar(bar)) == 2 * len(run.sim.symbols), what="a bar")
    return {m["model_version"] for m in run.of_bar(bar, "direction")}
