"""End to end: simulator -> streamer -> Redis -> bar loop -> a real Redis subscriber
(v1 models, and horizon models beside them)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from streamer.simulator import Simulator, SimulatorConfig
from testkit.daemon import (
    Subscriber,
    bar_settled,
    close_bars,
    daemon_settings,
    metric,
    running_daemon,
    wait_until_ready,
    write_demo_models,
)
from testkit.models import (
    DIRECTION_HORIZONS,
    VOLUME_HORIZONS,
    horizon_values,
    write_horizon_model,
)
from tests.floats import float32_approx
from whalecast.schema import Prediction, encode_prediction

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

SYMBOLS = 3
BARS = 4


@pytest.fixture
async def sim() -> Simulator:
    simulator = Simulator(SimulatorConfig(bar_seconds=None, history_bars=120))
    await simulator.start()
    yield simulator
    await simulator.stop()


async def test_one_prediction_per_series_model_and_bar(
    sim: Simulator, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    versions = write_demo_models(tmp_path / "registry")
    settings = daemon_settings(sim, redis_url, tmp_path / "registry")
    series_count = len(sim.symbols)
    async with (
        Subscriber(redis_client, "wc:predictions") as sub,
        running_daemon(settings, redis_client) as daemon,
    ):
        await wait_until_ready(daemon)
        await close_bars(sim, sub, daemon, BARS, 2 * series_count)
        messages = sub.messages
        stepped, full = stepped_and_full(daemon)
        sample = daemon.metrics.registry.get_sample_value
        early = {
            outcome: sample("whalecast_inference_early_passes_total", {"outcome": outcome})
            for outcome in ("used", "discarded")
        }

    parsed = [Prediction.parse(json.dumps(m)) for m in messages]
    per_key = Counter((p.symbol, p.model, p.bar_open_ms) for p in parsed)
    assert set(per_key.values()) == {1}, "exactly one message per series, model and bar"
    # the bar that had just closed when the daemon started is predicted too, then each new one
    assert len(per_key) == (BARS + 1) * series_count * 2
    truth = {s: [b[0] for b in sim.closed_bars(s)][-(BARS + 1) :] for s in sim.symbols}
    for p in parsed:
        assert p.bar_open_ms in truth[p.symbol]
        assert p.bar_close_ms == p.bar_open_ms + 3_600_000
        assert p.model_version == versions[p.model]
        if p.model == "direction":
            assert 0.0 <= p.value <= 1.0 and p.target == "p_up_next_bar"
        else:
            assert p.value > 0 and p.target == "next_bar_volume"
    # the last bars were stepped from primed states, and equal the full-window pass
    newest = {(p.symbol, p.model): p for p in parsed if p.bar_open_ms == truth[p.symbol][-1]}
    for (symbol, model), value in full.items():
        assert newest[(symbol, model)].value == float32_approx(value)
    # the first bar ran full windows; every later one stepped each series from its state
    assert stepped == {m: BARS * series_count for m in ("direction", "volume")}
    # each predicted bar's candles came in one batch: its pass ran while Redis stored them
    assert early == {"used": BARS + 1, "discarded": 0}
    stream = await redis_client.xrange("wc:predictions:stream")
    assert len(stream) == len(messages)
    latest = await redis_client.hgetall("wc:latest:direction")
    assert len(latest) == series_count


def stepped_and_full(daemon: Any) -> tuple[dict[str, int], dict[tuple[str, str], float]]:
    """Series stepped per model so far, and each model's full-window value now."""
    windows, ready = daemon.store.windows(daemon.series)
    assert ready.all()
    stepped, full = {}, {}
    for model, runtime in daemon.models.serving().items():
        sample = daemon.metrics.registry.get_sample_value
        stepped[model] = int(sample("whalecast_inference_series_total", {"model": model, "path": "step"}))  # fmt: skip
        for s, value in zip(daemon.series, runtime.predict(windows)[:, 0], strict=True):
            full[(s.symbol, model)] = float(value)
    return stepped, full


async def test_a_restarted_daemon_steps_its_first_bar_from_the_stored_windows(
    sim: Simulator, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    write_demo_models(tmp_path / "registry")
    settings = daemon_settings(sim, redis_url, tmp_path / "registry")
    expected = 2 * len(sim.symbols)
    async with Subscriber(redis_client, "wc:predictions") as sub:
        async with running_daemon(settings, redis_client) as first:
            await wait_until_ready(first)
            await sim.advance(bars=1)
            await sub.wait_for(2 * expected)  # the bar closed at start, then one more
        async with running_daemon(settings, redis_client) as second:
            await wait_until_ready(second)
            await bar_settled(second)  # primed at start-up, as an hour later
            await sim.advance(bars=1)  # the bar after the last one stored
            await sub.wait_for(3 * expected)
            paths = {
                (m, path): metric(second, "whalecast_inference_series_total", model=m, path=path)
                for m in ("direction", "volume")
                for path in ("step", "window")
            }
    # primed at start-up from the windows Redis kept: no full window at its first bar
    n = len(sim.symbols)
    assert paths == {("direction", "step"): n, ("direction", "window"): 0.0,
                     ("volume", "step"): n, ("volume", "window"): 0.0}  # fmt: skip


HORIZON_BARS = 3
HORIZON_MODELS = {"volume-horizons": "volume", "direction-horizons": "direction"}
#: The keys of a v1 message, in their order: what a v1 consumer has always received.
V1_KEYS = [
    "schema", "exchange", "symbol", "timeframe", "bar_open_ms", "bar_close_ms", "model",
    "model_version", "target", "value", "published_ms", "latency_ms",
]  # fmt: skip


async def test_horizon_models_publish_every_output_and_v1_messages_do_not_change(
    sim: Simulator, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    versions = write_demo_models(registry)
    models: dict[str, Any] = {}
    for i, (name, kind) in enumerate(HORIZON_MODELS.items()):
        versions[name], models[name] = write_horizon_model(registry, name, kind, seed=10 + i)
    settings = daemon_settings(
        sim, redis_url, registry, inference={"models": ["direction", "volume", *HORIZON_MODELS]}
    )
    per_series = 2 + len(VOLUME_HORIZONS) + len(DIRECTION_HORIZONS)  # 10 messages a bar
    n = len(sim.symbols)
    async with (
        Subscriber(redis_client, "wc:predictions") as sub,
        running_daemon(settings, redis_client) as daemon,
    ):
        await wait_until_ready(daemon)
        await close_bars(sim, sub, daemon, HORIZON_BARS, per_series * n)
        windows, ready = daemon.store.windows(daemon.series)
        assert ready.all()
        served = {
            name: dict(zip(daemon.series, horizon_values(kind, models[name], windows), strict=True))
            for name, kind in HORIZON_MODELS.items()
        }
        messages = sub.messages

    parsed = [Prediction.parse(json.dumps(m)) for m in messages]
    outputs = Counter(
        (p.symbol, p.model, p.bar_open_ms, p.target, p.horizon_bars, p.quantile) for p in parsed
    )
    assert set(outputs.values()) == {1}, "one message per series, model, bar and output"
    bars = {p.bar_open_ms for p in parsed}
    assert len(outputs) == len(bars) * n * per_series and len(bars) == HORIZON_BARS + 1
    for name, specs in (("volume-horizons", VOLUME_HORIZONS), ("direction-horizons", DIRECTION_HORIZONS)):  # fmt: skip
        got = {(p.target, p.horizon_bars, p.quantile) for p in parsed if p.model == name}
        assert got == {(s["target"], s["horizon_bars"], s.get("quantile")) for s in specs}
    # the newest bar's values are a direct Keras forward pass on the stored windows
    newest = max(bars)
    for s in daemon.series:
        for name, kind in HORIZON_MODELS.items():
            specs = VOLUME_HORIZONS if kind == "volume" else DIRECTION_HORIZONS
            mine = {(p.target, p.horizon_bars, p.quantile): p.value for p in parsed
                    if p.model == name and p.symbol == s.symbol and p.bar_open_ms == newest}  # fmt: skip
            for spec, want in zip(specs, served[name][s], strict=True):
                key = (spec["target"], spec["horizon_bars"], spec.get("quantile"))
                assert mine[key] == float32_approx(want), (s.symbol, name, key)
    assert all(p.model_version == versions[p.model] for p in parsed)

    # v1 models: the same messages as before horizons existed, key for key and byte for byte
    stream = [f[b"data"] for _, f in await redis_client.xrange("wc:predictions:stream")]
    assert len(stream) == len(messages)
    v1 = [raw for raw in stream if json.loads(raw)["model"] in ("direction", "volume")]
    assert len(v1) == len(bars) * n * 2
    for raw in v1:
        fields = json.loads(raw)
        assert list(fields) == V1_KEYS
        del fields["schema"]
        assert raw.decode() == encode_prediction(**fields)
        message = Prediction.parse(raw)
        assert message.horizon_bars is None and message.quantile is None
    assert len(await redis_client.hgetall("wc:latest:direction")) == n
    assert len(await redis_client.hgetall("wc:latest:volume-horizons")) == n * len(VOLUME_HORIZONS)
