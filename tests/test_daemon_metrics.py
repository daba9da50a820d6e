"""The running daemon over real HTTP: ``/metrics`` parses and carries what the bar loop
did, ``/healthz`` answers, ``/readyz`` says 503 until the daemon is warm; live scoring
matches the hit rate and error computed here from the published predictions."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from streamer.simulator import Simulator
from testkit.daemon import (
    http_get,
    metric,
    simulated_daemon,
    wait_until_ready,
    write_demo_models,
)
from testkit.models import write_horizon_model
from testkit.polling import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

HOUR = 3_600_000


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> (labels, value) of a Prometheus text exposition."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(parsed: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    found = [v for lab, v in parsed.get(name, []) if labels.items() <= lab.items()]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


async def test_metrics_health_and_readiness_over_http(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    versions = write_demo_models(registry)

    def refuse(sim: Simulator) -> None:
        sim.faults.refuse(60.0)  # websocket handshakes fail: the feed is not up

    started_s = time.time()
    async with simulated_daemon(redis_url, redis_client, registry, prepare=refuse) as run:
        assert run.daemon.http is not None
        port = run.daemon.http.port
        # nothing published yet: the last-publish time is the daemon's start, so the
        # no-predictions alert can fire for a daemon that never gets going
        before = samples((await http_get(port, "/metrics"))[1])
        last = value(before, "whalecast_last_publish_timestamp_seconds", timeframe="1h")
        assert started_s <= last <= time.time()
        assert await http_get(port, "/healthz") == (200, json.dumps({"status": "ok"}))
        status, body = await http_get(port, "/readyz")
        assert status == 503 and "feeds" in json.loads(body)["missing"]
        refused = run.sim.faults.counters
        await wait_until(lambda: refused["exchange_refused"] >= 1, what="a refused handshake")
        status, body = await http_get(port, "/readyz")
        assert status == 503 and "feeds" in json.loads(body)["missing"]
        run.sim.faults.refuse(0)  # the exchange is back
        await wait_until_ready(run.daemon)
        status, body = await http_get(port, "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True

        await run.step(3)
        await wait_until(lambda: len(run.sub.messages) == 2 * 4 * 4, what="4 bars predicted")
        status, text = await http_get(port, "/metrics")
        assert status == 200

    parsed = samples(text)
    bars = 4  # the bar closed at start-up and three more
    assert value(parsed, "whalecast_bar_latency_seconds_count", timeframe="1h") == bars
    assert value(parsed, "whalecast_bar_latency_seconds_bucket", timeframe="1h", le="+Inf") == bars
    for model in ("direction", "volume"):
        assert value(parsed, "whalecast_inference_seconds_count", model=model) == bars
        assert value(parsed, "whalecast_inference_seconds_sum", model=model) > 0
        assert value(parsed, "whalecast_inference_batch_size_sum", model=model) == 4 * bars
        assert value(parsed, "whalecast_predictions_published_total", model=model) == 4 * bars
        info = value(parsed, "whalecast_model_info", model=model, version=versions[model])
        assert info == 1.0
        assert value(parsed, "whalecast_live_scored_total", model=model) == 4 * (bars - 1)
    assert 0.0 <= value(parsed, "whalecast_live_accuracy_ratio", model="direction") <= 1.0
    assert value(parsed, "whalecast_live_log_volume_mae", model="volume") >= 0.0
    assert value(parsed, "whalecast_feed_messages_total", exchange="binance", feed="candles") > 0
    assert value(parsed, "whalecast_event_loop_lag_seconds_count") > 0
    assert value(parsed, "whalecast_series_ready", timeframe="1h") == 4
    reconnect = value(parsed, "whalecast_feed_reconnects_total", exchange="binance",
                      feed="candles", cause="error")  # fmt: skip
    assert reconnect >= 1, "the refused handshakes were counted"
    assert value(parsed, "process_resident_memory_bytes") > 0


def expected_scores(
    messages: list[dict[str, Any]], closed: dict[str, dict[int, tuple[float, float]]]
) -> tuple[list[float], list[float]]:
    """Direction hits and log-volume errors of every prediction whose outcome bar closed."""
    hits: list[float] = []
    errors: list[float] = []
    for m in messages:
        bars = closed[m["symbol"]]
        if m["bar_close_ms"] not in bars:
            continue
        close, _ = bars[m["bar_open_ms"]]
        close_next, volume_next = bars[m["bar_close_ms"]]
        if m["model"] == "direction":
            hits.append(1.0 if (m["value"] >= 0.5) == (close_next > close) else 0.0)
        else:
            errors.append(abs(math.log1p(m["value"]) - math.log1p(volume_next)))
    return hits, errors


async def test_live_scores_match_the_published_predictions(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    write_demo_models(registry)
    async with simulated_daemon(redis_url, redis_client, registry) as run:
        daemon = run.daemon
        await wait_until_ready(daemon)
        await run.step(6)
        await wait_until(lambda: len(run.sub.messages) == 2 * 4 * 7, what="7 bars predicted")
        closed = {s: {b[0]: (b[4], b[5]) for b in run.sim.closed_bars(s)} for s in run.sim.symbols}
        hits, errors = expected_scores(run.sub.messages, closed)
        assert len(hits) == len(errors) == 4 * 6
        accuracy = metric(daemon, "whalecast_live_accuracy_ratio", model="direction")
        mae = metric(daemon, "whalecast_live_log_volume_mae", model="volume")
        assert accuracy == pytest.approx(sum(hits) / len(hits), abs=1e-12)
        assert mae == pytest.approx(sum(errors) / len(errors), rel=1e-9)
        assert metric(daemon, "whalecast_live_scored_total", model="direction") == len(hits)


def expected_horizon_scores(
    messages: list[dict[str, Any]], closed: dict[str, dict[int, tuple[float, float]]]
) -> dict[tuple[str, int, float | None, str], list[float]]:
    """Per (target, horizon, quantile, score) the scores of every horizon prediction whose
    last bar closed: computed here from the messages and the simulator's bars."""
    scores: dict[tuple[str, int, float | None, str], list[float]] = {}
    for m in messages:
        bars, h, q = closed[m["symbol"]], m["horizon_bars"], m.get("quantile")
        ahead = [m["bar_close_ms"] + k * HOUR for k in range(h)]
        if ahead[-1] not in bars:
            continue
        close, later = bars[m["bar_open_ms"]][0], bars[ahead[-1]][0]
        key = (m["target"], h, q)
        if m["target"] == "p_up_in_bars":
            up = 1.0 if later > close else 0.0
            scores.setdefault((*key, "brier"), []).append((m["value"] - up) ** 2)
            scores.setdefault((*key, "hit"), []).append(float((m["value"] >= 0.5) == bool(up)))
            continue
        total = math.fsum(bars[t][1] for t in ahead)
        scores.setdefault((*key, "coverage"), []).append(float(total <= m["value"]))
        error = math.log1p(total) - math.log1p(m["value"])
        scores.setdefault((*key, "pinball"), []).append(max(q * error, (q - 1) * error))
    return scores


async def test_live_horizon_scores_match_the_published_predictions(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Each horizon output is scored when its last bar closes: 1-bar outputs after every
    bar, 6-bar ones from the sixth bar on, 24-bar ones not yet."""
    registry = tmp_path / "registry"
    for kind in ("volume", "direction"):
        write_horizon_model(registry, f"{kind}-horizons", kind)
    models = {"models": ["volume-horizons", "direction-horizons"]}
    async with simulated_daemon(redis_url, redis_client, registry, inference=models) as run:
        daemon = run.daemon
        await wait_until_ready(daemon)
        await run.step(7)
        await wait_until(lambda: len(run.sub.messages) == 8 * 4 * 8, what="8 bars predicted")
        closed = {s: {b[0]: (b[4], b[5]) for b in run.sim.closed_bars(s)} for s in run.sim.symbols}
        expected = expected_horizon_scores(run.sub.messages, closed)
        gauges = {
            "coverage": "whalecast_live_quantile_coverage_ratio",
            "pinball": "whalecast_live_log_volume_pinball",
            "brier": "whalecast_live_direction_brier",
            "hit": "whalecast_live_direction_hit_ratio",
        }
        for (target, h, q, kind), scores in expected.items():
            assert len(scores) == 4 * (8 - h), (target, h, q, kind)
            model = "volume-horizons" if q is not None else "direction-horizons"
            labels = {"model": model, "horizon": str(h)}
            if q is not None:
                labels["quantile"] = repr(q)
            got = metric(daemon, gauges[kind], **labels)
            # the scorer has the unrounded value, a message the value to 8 decimal places
            assert got == pytest.approx(sum(scores) / len(scores), rel=1e-7, abs=1e-9), labels
        assert {h for _, h, _, _ in expected} == {1, 6}
        scored = 4 * (7 * 3 + 2 * 3)  # per series: three 1-bar outputs 7 times, three 6-bar twice
        assert (
            sum(metric(daemon, "whalecast_live_scored_total", model=m) for m in models["models"])
            == scored
        )
