"""A real Prometheus (Debian's ``prometheus``) scraping a running daemon.

The shipped ``deploy/prometheus/prometheus.yml`` and ``alerts.yml`` are copied with
only what a test must change: the whalecast job's target (the daemon's metrics
port here), one-second scrape and rule intervals, and the feed-stale rule's
threshold and ``for:`` shortened from minutes to seconds. Through Prometheus's
HTTP API the test checks that every Grafana dashboard query returns data, and
that when the simulator's feed goes silent, ``WhalecastFeedStale`` goes pending,
then firing, on real scraped data.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from streamer.simulator import SimulatorConfig
from testkit.daemon import simulated_daemon, wait_until_ready, write_demo_models
from testkit.models import write_horizon_model
from testkit.polling import wait_until_true
from testkit.process import serving_process
from testkit.redis_servers import free_port, require_tool
from tests.test_deploy_monitoring import PROMETHEUS, _dashboard_queries

pytestmark = [pytest.mark.deploy, pytest.mark.slow, pytest.mark.redis, pytest.mark.tf]

STALE_SECONDS = 4  # the test copy's threshold (shipped: 600 s)
STALE_FOR = "3s"  # the test copy's for: (shipped: 1m)
#: Grafana's template variables as a dashboard with "All" selected sends them.
VARIABLES = {"$__rate_interval": "15s", "$instance": ".*", "$exchange": ".*",
             "$timeframe": ".*", "$model": ".*"}  # fmt: skip


def shortened_config(directory: Path, metrics_port: int) -> Path:
    """The shipped configuration and rules, pointed at the daemon and made fast."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        job.update(scrape_interval="1s", scrape_timeout="1s")
        if job["job_name"] == "whalecast":
            job["static_configs"][0]["targets"] = [f"127.0.0.1:{metrics_port}"]
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    stale = next(
        rule for group in rules["groups"] for rule in group["rules"]
        if rule.get("alert") == "WhalecastFeedStale"
    )  # fmt: skip
    stale["expr"], replaced = re.subn(r"> 600$", f"> {STALE_SECONDS}", stale["expr"].strip())
    assert replaced == 1, stale["expr"]
    stale["for"] = STALE_FOR
    (directory / "alerts.yml").write_text(yaml.safe_dump(rules))
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def prometheus(config: Path, directory: Path) -> AsyncIterator[str]:
    """Debian's prometheus on a free loopback port; yields its base URL once ready."""
    base = f"http://127.0.0.1:{free_port()}"
    argv = [require_tool("prometheus"), f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address={base[7:]}"]  # fmt: skip
    async with serving_process(
        argv, directory / "prometheus.log", f"{base}/-/ready", timeout_seconds=60
    ):
        yield base


async def api(base: str, path: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/api/v1/{path}", params=params) as response:  # fmt: skip
        body = await response.json()
    assert body["status"] == "success", body
    return body["data"]


def grafana_query(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, re.S)
    return match.group(1) if match else expr


async def alert_state(base: str, name: str) -> str:
    alerts = (await api(base, "alerts"))["alerts"]
    states = {a["state"] for a in alerts if a["labels"].get("alertname") == name}
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


async def test_a_real_prometheus_scrapes_the_daemon_runs_every_dashboard_query_and_fires(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "models"
    write_demo_models(registry)
    # a horizon model of each kind, so the horizon panels' live scores have data too
    horizons = {"volume-horizons": "volume", "direction-horizons": "direction"}
    for seed, (name, kind) in enumerate(horizons.items()):
        write_horizon_model(registry, name, kind, seed=10 + seed)
    sim_config = SimulatorConfig(bar_seconds=0.5, history_bars=120)
    async with simulated_daemon(
        redis_url, redis_client, registry, config=sim_config,
        feed={"stale_after_seconds": 30.0},
        inference={"models": ["direction", "volume", *horizons]},
    ) as run:  # fmt: skip
        await wait_until_ready(run.daemon, timeout_seconds=120)
        assert run.daemon.http is not None
        config = shortened_config(tmp_path, run.daemon.http.port)
        async with prometheus(config, tmp_path) as base:

            async def whalecast_up() -> bool:
                targets = (await api(base, "targets"))["activeTargets"]
                return any(
                    t["labels"]["job"] == "whalecast" and t["health"] == "up" for t in targets
                )

            await wait_until_true(whalecast_up, 60, "the whalecast target to be up")
            missing: dict[str, str] = {}
            for expr in _dashboard_queries():
                query = grafana_query(expr)

                async def has_data(query: str = query) -> bool:
                    return bool((await api(base, "query", query=query))["result"])

                try:
                    await wait_until_true(has_data, 90 if not missing else 5, query)
                except AssertionError:
                    missing[expr] = query
            assert not missing, f"dashboard queries without data: {sorted(missing)}"
            assert await alert_state(base, "WhalecastFeedStale") == "inactive"
            # the simulator's exchange feed goes silent (connections stay open, nothing is sent)
            run.sim.faults.stall(3600)

            async def state_is(wanted: str) -> bool:
                return await alert_state(base, "WhalecastFeedStale") == wanted

            await wait_until_true(lambda: state_is("pending"), 60, "WhalecastFeedStale pending")
            await wait_until_true(lambda: state_is("firing"), 60, "WhalecastFeedStale firing")
