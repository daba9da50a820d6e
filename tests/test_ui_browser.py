"""The web page in a real headless Chromium, fed by a real daemon through a real Redis."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from testkit.daemon import simulated_daemon, wait_until, wait_until_ready, write_demo_models
from tests.browser import Page, browser_page
from tests.ui_helpers import HOSTILE_SYMBOL, publish, publish_horizons, running_ui
from whalecast.domain import Series

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.tf]

ROW_NAMES = "[...document.querySelectorAll('#grid-rows .row')].filter(r => r.style.display !== 'none').map(r => r.querySelector('.name').textContent)"  # fmt: skip


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``UI_SCREENSHOT_DIR`` if set (to refresh docs/img)."""
    return Path(os.environ.get("UI_SCREENSHOT_DIR") or tmp_path)


async def rows_shown(page: Page) -> list[str]:
    names: list[str] = await page.evaluate(ROW_NAMES)
    return names


async def test_the_page_shows_live_predictions_models_feeds_and_a_chart(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    registry = tmp_path / "models"
    versions = write_demo_models(registry)
    async with simulated_daemon(
        redis_url, redis_client, registry, metrics={"port": 0, "status_seconds": 0.2}
    ) as run:
        await wait_until_ready(run.daemon)
        symbols = run.sim.symbols
        await run.step(3)
        per_bar = 2 * len(symbols)  # two models
        # the bar that had just closed at start and the 3 stepped ones, all published
        await wait_until(lambda: len(run.sub.messages) >= per_bar * 4, what="4 bars")
        reader = aioredis.Redis.from_url(redis_url)
        try:
            async with (
                running_ui(run.daemon.settings, reader) as ui,
                browser_page(tmp_path / "profile") as page,
            ):
                await page.navigate(ui.url)
                # every series is listed
                await page.wait_for(f"({ROW_NAMES}).length === {len(symbols)}")
                assert sorted(await rows_shown(page)) == sorted(f"binance:{s}" for s in symbols)
                # models (the versions in service) and feeds (connected) from the daemon's status
                await page.wait_for(
                    f"document.querySelector('#models tbody').textContent.includes({json.dumps(versions['direction'])})"
                )
                models = await page.evaluate("document.querySelector('#models tbody').textContent")
                assert versions["volume"] in models
                # the candle feed's row comes with the replica's next status write: wait for it
                feeds_text = "document.querySelector('#feeds tbody').textContent"
                await page.wait_for(f"{feeds_text}.includes('candles')")
                feeds = await page.evaluate(feeds_text)
                assert "candles" in feeds and "yes" in feeds
                # the chart draws the first series' stored bars and its predictions
                await page.wait_for("window.whalecastStats.chartBars > 20")
                assert await page.evaluate("document.querySelectorAll('#chart canvas').length") > 0
                # a new bar's predictions show up without a reload, within 2 s of publishing
                before = len(run.sub.messages)
                events = await page.evaluate("window.whalecastStats.events")
                await run.step(1)
                await wait_until(lambda: len(run.sub.messages) >= before + per_bar)
                newest = max(m["bar_open_ms"] for m in run.sub.messages)
                shown = await page.wait_for(
                    f"window.whalecastStats.latencies.length >= {len(symbols)} && "
                    "window.whalecastStats.latencies.slice(-3)", timeout_seconds=5
                )  # fmt: skip
                assert max(shown) <= 2000, shown
                assert await page.evaluate("window.whalecastStats.events") > events
                bar_text = await page.evaluate(
                    "document.querySelector('#grid-rows .row .bar').textContent"
                )
                from datetime import UTC, datetime

                assert bar_text == datetime.fromtimestamp(newest / 1000, UTC).strftime(
                    "%Y-%m-%d %H:%M"
                )
                assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1
                await page.screenshot(screenshot_dir(tmp_path) / "ui.png")
                # a horizon model's outputs show in the selected series' view
                title = await page.evaluate("document.getElementById('detail-title').textContent")
                shown_series = Series("binance", title.split(":", 1)[1].split(" ")[0], "1h")
                assert await publish_horizons(reader, "wc", shown_series, newest) == 6
                horizons = await page.wait_for(
                    "(t => t.includes('volume next 24 bars p90') && t)"
                    "(document.getElementById('detail-horizons').textContent)"
                )
                assert "volume next 6 bars p50 600.5" in horizons, horizons
                # a hostile symbol name stored in Redis is shown as text, never as markup
                hostile = Series("binance", HOSTILE_SYMBOL, "1h")
                await publish(reader, "wc", [hostile], newest)
                await page.wait_for(
                    f"({ROW_NAMES}).includes({json.dumps('binance:' + HOSTILE_SYMBOL)})"
                )
                # clicked until the detail shows it: a live update can re-render the grid
                # between finding the row and the click, and the click then hits a row
                # that is no longer on the page
                await page.wait_for(
                    "(() => { const row = [...document.querySelectorAll('#grid-rows .row')].find(r => "
                    f"r.querySelector('.name').textContent === {json.dumps('binance:' + HOSTILE_SYMBOL)}); "
                    "if (row) row.click(); "
                    f"return document.getElementById('detail-title').textContent.includes({json.dumps(HOSTILE_SYMBOL)}); }})()"
                )
                assert await page.evaluate("document.querySelectorAll('img').length") == 0
                assert await page.evaluate("window.pwned === undefined")
        finally:
            await reader.aclose()
