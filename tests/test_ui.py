"""``whalecast ui`` without a browser: its board, its HTTP answers over a real Redis,
a read-only ACL user, and the daemon's status documents it shows."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from inference.status import ServedModel, feed_rows, heldout_score, model_rows, status_document
from streamer.store_format import pack_bars
from testkit.polling import wait_until, wait_until_true
from tests.security_helpers import PREFIX, AclRedis
from tests.ui_helpers import HOSTILE_SYMBOL, get_json, publish, running_ui
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.schema import encode_prediction
from whalecast.settings import load_settings
from whalecast.ui.redisread import decode_bar
from whalecast.ui.state import Board

BTC = Series("binance", "BTC/USDT", "1h")
BAR = 1_767_225_600_000
VENDORED = Path(__file__).resolve().parents[1] / "whalecast/ui/static/vendor"


def message(series: Series = BTC, bar: int = BAR, target: str = "p_up_next_bar", value: float = 0.6) -> str:  # fmt: skip
    return encode_prediction(
        exchange=series.exchange, symbol=series.symbol, timeframe=series.timeframe,
        bar_open_ms=bar, bar_close_ms=bar + series.bar_ms,
        model="direction" if target == "p_up_next_bar" else "volume",
        model_version="20261122T060000Z-3f2a", target=target, value=value,
        published_ms=bar + series.bar_ms + 40, latency_ms=40.0,
    )  # fmt: skip


# --- the board (pure) ------------------------------------------------------------------------


def test_board_keeps_the_newest_bar_per_series_and_a_sorted_bounded_history() -> None:
    board = Board(history_bars=3)
    for bar in (
        BAR + 3 * 3_600_000,
        BAR,
        BAR + 3_600_000,
        BAR + 2 * 3_600_000,
        BAR + 4 * 3_600_000,
    ):
        board.add_raw(message(bar=bar))
    board.add_raw(message(bar=BAR + 4 * 3_600_000, target="next_bar_volume", value=12.5))
    row = board.rows[BTC.tag]
    assert (row.bar_open_ms, row.p_up, row.volume) == (BAR + 4 * 3_600_000, 0.6, 12.5)
    history = board.histories[BTC.tag].as_json()["p_up_next_bar"]
    assert [h["bar_open_ms"] for h in history] == [BAR + k * 3_600_000 for k in (2, 3, 4)]
    board.add_raw(message(bar=BAR))  # an old bar: history only, the row stays
    assert board.rows[BTC.tag].bar_open_ms == BAR + 4 * 3_600_000
    assert [r.series for r in board.take_changed()] == [BTC]
    assert board.take_changed() == []


def test_a_new_bar_clears_the_other_targets_value_until_it_arrives() -> None:
    board = Board(10)
    board.add_raw(message(target="next_bar_volume", value=5.0))
    board.add_raw(message(bar=BAR + 3_600_000))
    assert board.rows[BTC.tag].volume is None


def test_a_horizon_output_is_a_line_of_the_series_chart_and_leaves_the_row() -> None:
    board = Board(10)
    board.add_raw(message(target="next_bar_volume", value=5.0))
    fields = json.loads(message(target="next_bar_volume"))
    del fields["schema"]
    fields.update(target="volume_next_bars", value=80.0, horizon_bars=6, quantile=0.9)
    horizon = encode_prediction(**fields)
    board.take_changed()
    assert board.add_raw(horizon) == BTC.tag and board.malformed == 0
    assert board.rows[BTC.tag].volume == 5.0
    assert [r.series for r in board.take_changed()] == [BTC]  # the series view has news
    lines = board.histories[BTC.tag].as_json()
    assert [h["value"] for h in lines["volume_next_bars|6|0.9"]] == [80.0]
    assert [h["value"] for h in lines["next_bar_volume"]] == [5.0]


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"schema": "other"}', message().replace("0.6", '"x"').encode()])  # fmt: skip
def test_malformed_messages_are_counted_and_dropped(raw: bytes) -> None:
    board = Board(10)
    assert board.add_raw(raw) is None
    assert board.malformed == 1 and not board.rows


def test_a_stored_bar_decodes_in_the_stores_column_order() -> None:
    import numpy as np

    values = np.arange(10, dtype=float) + 0.5
    bar = decode_bar(pack_bars(values.reshape(1, -1))[0])
    assert list(bar) == ["open_ms", "open", "high", "low", "close", "volume", "whale_inflow_usd",
                         "whale_outflow_usd", "whale_count", "stable_inflow_usd"]  # fmt: skip
    assert list(bar.values()) == list(values)


# --- the daemon's status document (pure) --------------------------------------------------------


def test_status_document_carries_models_feeds_and_the_held_out_score() -> None:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {
        "whalecast_model_reloads_total": [({"model": "direction", "outcome": "refused"}, 2.0)],
        "whalecast_model_reload_failing": [({"model": "direction"}, 1.0)],
        "whalecast_live_scored_total": [({"model": "direction"}, 30.0)],
        "whalecast_live_accuracy_ratio": [({"model": "direction"}, 0.55)],
        "whalecast_feed_connected": [({"exchange": "binance", "feed": "candles"}, 1.0)],
        "whalecast_feed_last_message_timestamp_seconds": [({"exchange": "binance", "feed": "candles"}, 100.5)],
        "whalecast_feed_reconnects_total": [({"exchange": "binance", "feed": "candles", "cause": "error"}, 1.0),
                                            ({"exchange": "binance", "feed": "candles", "cause": "stale"}, 2.0)],
        "whalecast_bars_missing_total": [({"exchange": "binance", "timeframe": "1h"}, 4.0)],
        "whalecast_series_owned": [({}, 3.0)],
    }  # fmt: skip
    report = {"promotion": {"metric": "auc", "new": 0.53, "baseline": 0.51,
                            "baseline_name": "logistic", "reason": "better"}}  # fmt: skip
    served = [ServedModel("direction", "v1", "onnx", "p_up_next_bar", "2026-11-22T06:00:00+00:00", 10.0, report)]  # fmt: skip
    doc = status_document(replica="h:1", shard=(0, 2), started_s=1.0, now_s=2.0, samples=samples,
                          served=served, refusals={"direction": ("v2", "bad shape")})  # fmt: skip
    (model,) = doc["models"]
    assert model["reload_failing"] is True and model["reloads_refused"] == 2
    assert model["last_refusal"] == {"version": "v2", "reason": "bad shape"}
    assert (model["live_scored"], model["live_accuracy"]) == (30, 0.55)
    assert model["heldout"]["baseline"] == "logistic" and model["heldout"]["value"] == 0.53
    assert doc["feeds"] == feed_rows(samples)
    (feed,) = doc["feeds"]
    assert feed == {"exchange": "binance", "feed": "candles", "connected": 1, "last_message_ms": 100500,
                    "messages": 0, "reconnects": 3, "bars_missing": 4}  # fmt: skip
    assert (doc["series"], doc["shard"], doc["updated_ms"]) == (3, [0, 2], 2000)
    assert heldout_score(None) is None and heldout_score({"promotion": "odd"}) is None
    assert model_rows([], samples, {}) == []
    json.dumps(doc, allow_nan=False)


# --- the server over a real Redis ---------------------------------------------------------------


async def _store_bars(redis: Any, prefix: str, series: Series, opens: list[int]) -> None:
    import numpy as np

    rows = np.array(
        [[t, 100.0, 102.0, 99.0, 101.0 + k, 50.0 + k, 0, 0, 0, 0] for k, t in enumerate(opens)]
    )
    members = pack_bars(rows)
    await redis.zadd(
        Keys(prefix).bars(series), {m: float(t) for m, t in zip(members, opens, strict=True)}
    )


async def _read_events(url: str, last: str) -> list[tuple[str, Any]]:
    """Server-sent events from ``url`` (name, parsed data), up to the first named ``last``."""
    events: list[tuple[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        name = None
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((str(name), json.loads(line[6:])))
                if name == last:
                    break
    return events


@pytest.mark.redis
async def test_rows_series_and_events_over_http(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    prefix = "wc"
    opens = [BAR + k * 3_600_000 for k in range(5)]
    await _store_bars(redis_client, prefix, BTC, opens)
    await publish(redis_client, prefix, [BTC], opens[-2])
    settings = load_settings(None, redis={"url": redis_url, "prefix": prefix})
    async with running_ui(settings, redis_client) as ui:
        status, rows = await get_json(ui.url + "api/rows")
        assert status == 200
        (row,) = rows
        assert (row["tag"], row["p_up"], row["volume"]) == (BTC.tag, 0.61, 1234.5)
        assert (row["close"], row["close_open_ms"]) == (105.0, opens[-1])
        listen = asyncio.create_task(_read_events(ui.url + "events", last="rows"))
        await asyncio.sleep(0)  # let it connect
        await wait_until(lambda: bool(ui.ui.clients), what="the event stream's connection")
        await publish(redis_client, prefix, [BTC], opens[-1], p_up=0.3)
        events = await asyncio.wait_for(listen, 30)
        # the models-and-feeds refresh ("status", every ui.status_seconds) may come in between
        (first, snapshot), *_, (last, changed) = [e for e in events if e[0] != "status"]
        assert first == "snapshot" and snapshot["rows"][0]["p_up"] == 0.61
        assert last == "rows" and changed[0]["p_up"] == 0.3
        assert changed[0]["bar_open_ms"] == opens[-1]
        assert len(events) == 2 + sum(name == "status" for name, _ in events)
        status, detail = await get_json(ui.url + "api/series?tag=" + aiohttp.helpers.quote(BTC.tag, safe=""))  # fmt: skip
        assert status == 200
        assert [b["open_ms"] for b in detail["bars"]] == opens
        assert [p["bar_open_ms"] for p in detail["predictions"]["p_up_next_bar"]] == opens[-2:]
        assert (await get_json(ui.url + "api/series?tag=nope"))[0] == 404


@pytest.mark.redis
async def test_the_server_writes_nothing_and_sends_strict_headers(redis_url: str, redis_client: aioredis.Redis) -> None:  # fmt: skip
    await publish(redis_client, "wc", [Series("binance", HOSTILE_SYMBOL, "1h")], BAR)
    settings = load_settings(None, redis={"url": redis_url, "prefix": "wc"})
    async with running_ui(settings, redis_client) as ui, aiohttp.ClientSession() as session:
        async with session.get(ui.url) as page:
            assert page.status == 200
            csp = page.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            html = await page.text()
            assert "<script>" not in html  # no inline script: every script is a file
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("", "api/rows", "events", "api/series"):
                async with session.request(method, ui.url + path) as response:
                    assert response.status == 405, (method, path)
        async with session.get(ui.url + "static/../../settings.py") as response:
            assert response.status in (403, 404)
        async with session.get(ui.url + "api/rows") as response:
            body = await response.text()
        # JSON carries the hostile name as data; the page puts it in the DOM as text
        assert json.loads(body)[0]["symbol"] == HOSTILE_SYMBOL


def test_the_vendored_chart_library_is_the_pinned_release() -> None:
    script = (VENDORED / "lightweight-charts.standalone.production.js").read_bytes()
    assert hashlib.sha256(script).hexdigest() == "338a625ece52c5b85fb026e222dad5d0f365f745060afbfae96bda91636142e9"  # fmt: skip
    assert b"Lightweight Charts\xe2\x84\xa2 v5.3.0" in script[:300]
    assert "Apache License" in (VENDORED / "LICENSE-lightweight-charts.txt").read_text()


def test_the_package_ships_the_page() -> None:
    import tomllib

    data = tomllib.loads((VENDORED.parents[3] / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["whalecast.ui"]
    static = VENDORED.parent
    shipped = {p.relative_to(static.parent) for pattern in patterns for p in static.parent.glob(pattern)}  # fmt: skip
    files = {p.relative_to(static.parent) for p in static.rglob("*") if p.is_file()}
    assert files <= shipped, files - shipped


@pytest.mark.redis
async def test_a_read_only_acl_user_is_enough(tmp_path: Path, redis_client: aioredis.Redis) -> None:
    acl = AclRedis(tmp_path / "acl")
    acl.server.start()
    try:
        admin = acl.admin()
        await admin.execute_command(
            "ACL", "SETUSER", "viewer", "on", ">viewer-pass", f"~{PREFIX}:*", "-@all", "+@read", "+ping"
        )  # fmt: skip
        await _store_bars(admin, PREFIX, BTC, [BAR, BAR + 3_600_000])
        await publish(admin, PREFIX, [BTC], BAR)
        await admin.set(Keys(PREFIX).replica("h:1"), json.dumps({"replica": "h:1", "models": [], "feeds": []}))  # fmt: skip
        settings = load_settings(None, redis={"url": acl.server.url, "prefix": PREFIX,
                                              "username": "viewer", "password": "viewer-pass"})  # fmt: skip
        viewer = aioredis.Redis.from_url(acl.server.url, username="viewer", password="viewer-pass")
        try:
            async with running_ui(settings, viewer) as ui:
                status, rows = await get_json(ui.url + "api/rows")
                assert status == 200 and rows[0]["close"] == 102.0
                status, replicas = await get_json(ui.url + "api/status")
                assert [r["replica"] for r in replicas["replicas"]] == ["h:1"]
                await publish(admin, PREFIX, [BTC], BAR + 3_600_000, p_up=0.2)

                async def shown() -> bool:
                    return bool((await get_json(ui.url + "api/rows"))[1][0]["p_up"] == 0.2)

                await wait_until_true(shown, what="the new prediction in /api/rows")
            with pytest.raises(aioredis.ResponseError, match="no permissions"):
                await viewer.set(f"{PREFIX}:x", 1)  # the user really cannot write
        finally:
            await viewer.aclose()
            await admin.aclose()
    finally:
        acl.server.stop()


@pytest.mark.redis
async def test_stopping_ends_the_reading_loops_even_when_a_cancel_is_swallowed(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """A cancel landing inside the Redis client can come back as a connection error; the
    page's reading loops end anyway, so shutdown never hangs on them."""
    settings = load_settings(None, redis={"url": redis_url, "prefix": "wc-stop"})
    entered = asyncio.Event()

    async def follow_turning_cancel_into_error(last_id: str, block_ms: int, count: int) -> Any:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ConnectionError("Connection closed by server.") from None
        return last_id, []

    async with running_ui(settings, redis_client) as runner:
        runner.ui.reader.follow = follow_turning_cancel_into_error  # type: ignore[method-assign]
        await asyncio.wait_for(entered.wait(), 30)
        stopping = asyncio.create_task(runner.ui.stop_tasks())
        done, _ = await asyncio.wait({stopping}, timeout=30)  # waits without cancelling
        assert stopping in done, "the reading loops outlived their stop"
