"""Model expiry through the running daemon: a version trained too long ago is flagged in
metrics and logs, and with ``stop_serving_expired`` it is not used for predictions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streamer.features import FEATURE_NAMES
from testkit.daemon import (
    captured_logs,
    metric,
    simulated_daemon,
    wait_until_ready,
    write_demo_models,
)
from testkit.models import preprocess_for, small_model, write_model
from testkit.polling import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

EXPIRY_HOURS = 24.0


@pytest.mark.parametrize("stop_serving", [False, True], ids=["flagged", "stopped"])
async def test_an_expired_model_is_flagged_and_optionally_not_served(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path, stop_serving: bool
) -> None:
    registry = tmp_path / "registry"
    fresh = write_demo_models(registry)["volume"]
    trained_at = datetime.now(UTC) - timedelta(hours=EXPIRY_HOURS + 5)
    model = small_model(24, len(FEATURE_NAMES), seed=2)
    old = write_model(
        registry, "direction", model, preprocess_for(FEATURE_NAMES), trained_at=trained_at
    )
    inference = {"expiry_hours": EXPIRY_HOURS, "stop_serving_expired": stop_serving}
    with captured_logs() as logs:
        async with simulated_daemon(redis_url, redis_client, registry, inference=inference) as run:
            daemon = run.daemon
            await wait_until_ready(daemon)
            assert metric(daemon, "whalecast_model_expired", model="direction") == 1
            assert metric(daemon, "whalecast_model_expired", model="volume") == 0
            trained = metric(daemon, "whalecast_model_trained_timestamp_seconds", model="direction")
            assert trained == pytest.approx(trained_at.timestamp())
            bars = [run.sim.now_ms - 3_600_000, run.sim.now_ms, run.sim.now_ms + 3_600_000]
            await run.step(2)
            await wait_until(
                lambda: all(run.of_bar(b, "volume") for b in bars), what="three bars published"
            )
            assert len(run.sub.messages) == (1 if stop_serving else 2) * 4 * 3

    warnings = [e for e in logs if e["event"] == "model version expired"]
    assert len(warnings) == 1, "warned once, not at every bar"
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["version"] == old and warnings[0]["serving"] is not stop_serving
    assert warnings[0]["age_hours"] == pytest.approx(EXPIRY_HOURS + 5, abs=0.2)
    served = {(m["model"], m["model_version"]) for m in run.sub.messages}
    expected = {("volume", fresh)} | (set() if stop_serving else {("direction", old)})
    assert served == expected
