"""Bad model artifacts pushed to the registry while the daemon runs.

A corrupted archive, a truncated one, one whose feature list the daemon cannot build,
and a planted Lambda layer (code that would run if loaded unsafely): each is refused,
``whalecast_model_reload_failing`` goes to 1, the version in service keeps serving, and
bars keep being stored and predicted. A good version afterwards is taken at the next bar.
"""

# ruff: noqa: F401, F811 - the sim and registry fixtures come from testkit.faults

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer.features import FEATURE_NAMES
from streamer.simulator import Simulator
from testkit.faults import advance, check_daemon, checked_daemon, registry, sample, sim
from testkit.models import preprocess_for, small_model, write_model
from testkit.polling import wait_until
from whalecast.artifact import MODEL_FILE, read_current

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]


def corrupt(directory: Path) -> None:
    data = bytearray((directory / MODEL_FILE).read_bytes())
    for i in range(100, len(data), 97):
        data[i] ^= 0x5A
    (directory / MODEL_FILE).write_bytes(bytes(data))


def truncate(directory: Path) -> None:
    data = (directory / MODEL_FILE).read_bytes()
    (directory / MODEL_FILE).write_bytes(data[: len(data) // 2])


def lambda_model(marker: Path) -> Any:
    import keras

    # the path is a literal in the lambda's saved bytecode: an unsafe load would touch it
    code = f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"
    touch = keras.layers.Lambda(eval(code))
    model = keras.Sequential(
        [keras.Input((24, len(FEATURE_NAMES))), touch, keras.layers.LSTM(2), keras.layers.Dense(1)]
    )
    marker.unlink()  # building the model ran it once
    return model


def bad_versions(marker: Path) -> dict[str, Callable[[Path], str]]:
    n = len(FEATURE_NAMES)
    every = preprocess_for(FEATURE_NAMES)
    return {
        "corrupted": lambda reg: write_model(reg, "direction", small_model(24, n), every,
                                             extra=corrupt),
        "truncated": lambda reg: write_model(reg, "direction", small_model(24, n), every,
                                             extra=truncate),
        "unknown feature": lambda reg: write_model(
            reg, "direction", small_model(24, 2), preprocess_for(["ret_1", "sentiment_score"])),
        "lambda layer": lambda reg: write_model(reg, "direction", lambda_model(marker), every),
    }  # fmt: skip


def reloads(metrics: object, outcome: str) -> float:
    return sample(metrics, "whalecast_model_reloads_total", model="direction", outcome=outcome)  # type: ignore[arg-type]


async def test_bad_artifacts_pushed_during_a_run_are_refused(
    sim: Simulator, registry: Path, redis_url: str, tmp_path: Path
) -> None:
    own = shutil.copytree(registry, tmp_path / "registry")
    serving = read_current(own, "direction")
    marker = tmp_path / "code-ran"
    async with checked_daemon(sim, redis_url, own) as (invariant, daemon):
        metrics = daemon.metrics
        for name, push in bad_versions(marker).items():
            refused = reloads(metrics, "refused")
            bad = push(own)
            await wait_until(
                lambda before=refused: reloads(metrics, "refused") > before, what=f"{name} refused"
            )
            failing = sample(metrics, "whalecast_model_reload_failing", model="direction")
            assert failing == 1, name
            await advance(sim)
            await check_daemon(invariant, daemon)
            versions = {m["model_version"] for m in invariant.log.messages()
                        if m["model"] == "direction"}  # fmt: skip
            assert versions == {serving}, (name, bad)
        assert not marker.exists(), "code from an artifact ran"

        good = write_model(own, "direction", small_model(24, len(FEATURE_NAMES), seed=5),
                           preprocess_for(FEATURE_NAMES))  # fmt: skip
        await wait_until(lambda: reloads(metrics, "loaded") >= 2, what="good version loaded")
        assert sample(metrics, "whalecast_model_reload_failing", model="direction") == 0
        await advance(sim)
        outcome = await check_daemon(invariant, daemon)
    newest = max(invariant.log.messages(), key=lambda m: m["bar_open_ms"])
    assert {m["model_version"] for m in invariant.log.messages()
            if m["model"] == "direction" and m["bar_open_ms"] == newest["bar_open_ms"]} == {good}  # fmt: skip
    outcome.assert_all_predicted(len(sim.symbols), bars=1 + 4 + 1)
