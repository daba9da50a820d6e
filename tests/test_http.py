"""The HTTP endpoints over real HTTP: a parsed /metrics scrape, health, readiness, 404; loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from inference.http import HttpServer
from inference.looplag import LoopLagMonitor
from inference.readiness import Report
from testkit.redis_servers import free_port
from whalecast.metrics import Metrics
from whalecast.settings import MetricsSettings


async def test_endpoints_on_the_configured_address() -> None:
    settings = MetricsSettings(host="127.0.0.1", port=free_port())
    metrics = Metrics()
    metrics.predictions.labels("direction").inc(3)
    missing = ["feeds", "models"]

    def readiness() -> Report:
        return Report(not missing, {"ready": not missing, "missing": list(missing)})

    async with (
        HttpServer(metrics, readiness, settings.host, settings.port) as server,
        aiohttp.ClientSession() as http,
    ):
        assert server.port == settings.port
        base = f"http://{settings.host}:{settings.port}"
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            text = await response.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        published = families["whalecast_predictions_published"].samples
        assert any(s.labels == {"model": "direction"} and s.value == 3 for s in published)
        assert "process_resident_memory_bytes" in families

        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503
            assert await response.json() == {"ready": False, "missing": ["feeds", "models"]}
        missing.clear()
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
            assert await response.json() == {"ready": True, "missing": []}
        for path in ("/", "/admin", "/metrics/x"):
            async with http.get(f"{base}{path}") as response:
                assert response.status == 404, path
        async with http.post(f"{base}/metrics") as response:
            assert response.status == 405


async def test_port_zero_binds_a_free_port() -> None:
    ready = Report(True, {"ready": True})
    async with HttpServer(Metrics(process=False), lambda: ready, "127.0.0.1", 0) as server:
        assert server.port > 0
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.port}/readyz") as response,
        ):
            assert response.status == 200  # no checks, nothing missing


async def test_loop_lag_sees_a_blocked_loop() -> None:
    metrics = Metrics(process=False)
    monitor = LoopLagMonitor(metrics, interval_seconds=0.01)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)
    assert monitor.samples >= 2 and monitor.max_lag < 0.1
    monitor.reset()
    await asyncio.sleep(0.005)
    time.sleep(0.2)  # noqa: ASYNC251 - on purpose: something blocks the event loop
    await asyncio.sleep(0.03)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert monitor.max_lag >= 0.15
    assert metrics.loop_lag._sum.get() >= 0.15
