"""The Redis window store against a real redis-server: parity, idempotence, gaps, bounds."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.crc import key_slot

from streamer.features import FEATURE_NAMES, HISTORY_BARS, compute_features
from streamer.history import bar_table, load_candles_csv, load_whale_flows_csv
from streamer.store import WindowStore
from streamer.store_format import AppendResult, BarRecord
from testkit.redis_servers import RedisServer, free_port
from whalecast.domain import Candle, Series, WhaleBar
from whalecast.keys import Keys
from whalecast.metrics import Metrics

pytestmark = pytest.mark.redis

DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"
WINDOW = 24
BTC = Series("binance", "BTC/USDT", "1h")
ETH = Series("binance", "ETH/USDT", "1h")
KEYS = Keys("wctest")


def _table(asset: str, bars: int) -> pd.DataFrame:
    candles = load_candles_csv(DATA / f"binance_{asset}-USDT_1h.csv.gz")
    whale = load_whale_flows_csv(DATA / f"whalealert_{asset}_exchange_flows_1h.csv.gz")
    return bar_table(candles, whale, "1h").iloc[:bars].reset_index(drop=True)


@pytest.fixture(scope="module")
def tables() -> dict[Series, pd.DataFrame]:
    return {BTC: _table("BTC", 2000), ETH: _table("ETH", 2000)}


def record(series: Series, row: pd.Series) -> BarRecord:
    candle = Candle(series.exchange, series.symbol, series.timeframe, int(row["open_ms"]),
                    float(row["open"]), float(row["high"]), float(row["low"]),
                    float(row["close"]), float(row["volume"]))  # fmt: skip
    whale = WhaleBar(float(row["whale_inflow_usd"]), float(row["whale_outflow_usd"]),
                     int(row["whale_count"]), float(row["stable_inflow_usd"]))  # fmt: skip
    return BarRecord(candle, whale)


def expected_window(features: np.ndarray, t: int) -> np.ndarray:
    """Offline rows t-23..t as stored (float32), NaN before the first bar."""
    out = np.full((WINDOW, len(FEATURE_NAMES)), np.nan, dtype=np.float32)
    rows = features[max(0, t - WINDOW + 1) : t + 1].astype(np.float32)
    out[WINDOW - len(rows) :] = rows
    return out


async def dump_all(client: aioredis.Redis) -> dict[bytes, bytes | None]:
    keys = sorted(await client.keys("*"))
    return {key: await client.dump(key) for key in keys}


@pytest.mark.slow  # hundreds of bars through the store, a restart included
async def test_online_equals_offline_across_a_gap_and_a_restart(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    gaps = {BTC: {700}, ETH: {1200, 1201, 1202}}  # bars the exchange never had
    holed = {s: t.drop(index=sorted(gaps[s])) for s, t in tables.items()}
    length = len(tables[BTC])
    offline = {s: compute_features(holed[s], "1h").reindex(range(length)).to_numpy() for s in holed}
    metrics = Metrics(process=False)
    store = WindowStore(redis_client, KEYS, [BTC, ETH], WINDOW, metrics)
    await store.load()
    checked, ready_count = 0, 0
    for t in range(length):
        if t == 1000:  # restart mid-replay: a fresh process state comes back from Redis
            store = WindowStore(redis_client, KEYS, [BTC, ETH], WINDOW, metrics)
            await store.load()
        records = [record(s, holed[s].loc[t]) for s in (BTC, ETH) if t in holed[s].index]
        results = await store.append(records)
        gapped = [r for r in results if r.status == "gap"]
        if gapped:
            # reported, not written; the bars are proven absent, so append across the gap
            for result in gapped:
                missing_from = min(gaps[result.series])
                assert result.expected_open_ms == int(
                    tables[result.series].at[missing_from, "open_ms"]
                )
            retry = [r for r in records if r.series in {g.series for g in gapped}]
            results = [r for r in results if r.status != "gap"]
            results += await store.append(retry, allow_gap=True)
        assert {r.status for r in results} == {"appended"}, results
        rows, ready = await store.read_windows([BTC, ETH])
        mirror_rows, mirror_ready = store.windows([BTC, ETH])
        np.testing.assert_array_equal(mirror_rows, rows)
        np.testing.assert_array_equal(mirror_ready, ready)
        for j, series in enumerate((BTC, ETH)):
            if t in gaps[series]:
                continue  # no bar this hour: the window stays the previous bar's
            expected = expected_window(offline[series], t)
            np.testing.assert_allclose(rows[j], expected, rtol=1e-6, atol=1e-6, equal_nan=True)
            assert ready[j] == np.isfinite(expected).all()
            checked, ready_count = checked + 1, ready_count + int(ready[j])
    # not ready: the first HISTORY_BARS - 2 + WINDOW bars, and as many after each gap
    assert checked - ready_count == 4 * (HISTORY_BARS - 2 + WINDOW)
    assert store.last_open_ms(BTC) == int(tables[BTC]["open_ms"].iloc[-1])
    sample = metrics.registry.get_sample_value
    assert sample("whalecast_gaps_detected_total", {"exchange": "binance", "timeframe": "1h"}) == 2
    assert sample("whalecast_store_seconds_count", {"operation": "append"}) == length + 2
    assert sample("whalecast_store_seconds_count", {"operation": "read"}) == length


async def _replayed(
    client: aioredis.Redis, tables: dict[Series, pd.DataFrame], n: int
) -> WindowStore:
    store = WindowStore(client, KEYS, [BTC, ETH], WINDOW)
    await store.load()
    for t in range(n):
        await store.append([record(s, tables[s].loc[t]) for s in (BTC, ETH)])
    return store


async def test_the_ring_holds_the_mirrors_window_across_gaps_of_every_length(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    """Each append overwrites one slot of the stored ring; gaps shorter than, equal to and
    longer than the window (wrapping past slot 0 or not) leave NaN rows where the mirror has
    them, so the window read back from Redis is the mirror's after every bar."""
    store = WindowStore(redis_client, KEYS, [BTC], WINDOW)
    await store.load()
    t = 0
    for skip in (0, 0, 1, 0, 5, 0, 23, 0, 24, 0, 40, 0, 2, 3, 0, 17):
        t += skip + 1
        result = await store.append([record(BTC, tables[BTC].loc[t])], allow_gap=True)
        assert result[0].status == "appended"
        stored, _ = await store.read_windows([BTC])
        mirror, _ = store.windows([BTC])
        np.testing.assert_array_equal(stored, mirror)
        header = await redis_client.getrange(KEYS.window(BTC), 8, 11)
        newest = int(tables[BTC].at[t, "open_ms"]) // 3_600_000 % WINDOW
        assert struct.unpack("<I", header)[0] == newest
    assert not np.isnan(mirror[0, -1]).all() and np.isnan(mirror[0, -18:-1]).all()


async def test_a_window_of_the_older_layout_is_rebuilt_then_appended_to(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    """A window a previous release stored (oldest first behind an 8-byte header, no
    ``window_layout`` in meta) is never read as a ring: the load rebuilds it from the bars,
    and an append against it is refused as stale until then."""
    await _replayed(redis_client, tables, 60)
    offline = compute_features(tables[BTC].iloc[:61], "1h").to_numpy()
    old = struct.pack("<4sHH", b"WCFW", 1, len(FEATURE_NAMES))
    await redis_client.set(KEYS.window(BTC), old + b"\x00" * 4 * len(FEATURE_NAMES) * WINDOW)
    await redis_client.hdel(KEYS.meta(BTC), "window_layout")
    writer = WindowStore(redis_client, KEYS, [BTC], WINDOW)
    await writer.load()
    assert await redis_client.hget(KEYS.meta(BTC), "window_layout") == b"ring1"
    assert (await writer.append([record(BTC, tables[BTC].loc[60])]))[0].status == "appended"
    rows, ready = await writer.read_windows([BTC])
    np.testing.assert_array_equal(rows[0], expected_window(offline, 60))
    assert ready.tolist() == [True]
    # a writer whose mirror was loaded before the layout changed under it resyncs
    await redis_client.hdel(KEYS.meta(BTC), "window_layout")
    assert (await writer.append([record(BTC, tables[BTC].loc[61])]))[0].status == "appended"
    assert await redis_client.hget(KEYS.meta(BTC), "window_layout") == b"ring1"


async def test_replaying_any_bar_leaves_redis_byte_identical(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    store = await _replayed(redis_client, tables, 80)
    before = await dump_all(redis_client)
    assert len(before) == 6
    old = [record(s, tables[s].loc[t]) for t in (79, 78, 40, 0) for s in (BTC, ETH)]
    results = await store.append(old)
    assert {r.status for r in results} == {"duplicate"}
    assert {r.status for r in await store.append(old, allow_gap=True)} == {"duplicate"}
    # a fresh process whose mirror is empty: Redis decides, nothing changes
    fresh = WindowStore(redis_client, KEYS, [BTC, ETH], WINDOW)
    assert {r.status for r in await fresh.append(old[:2])} == {"duplicate"}
    assert await dump_all(redis_client) == before
    # a gap is reported and not written either
    ahead = [record(BTC, tables[BTC].loc[85])]
    assert await store.append(ahead) == [
        AppendResult(
            BTC, int(tables[BTC].at[85, "open_ms"]), "gap", int(tables[BTC].at[80, "open_ms"])
        )
    ]
    assert await dump_all(redis_client) == before
    assert (await fresh.append([record(BTC, tables[BTC].loc[80])]))[0].status == "appended"


async def test_feature_version_change_rebuilds_windows_from_stored_bars(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    await _replayed(redis_client, tables, 60)
    offline = compute_features(tables[BTC].iloc[:60], "1h").to_numpy()
    # the stored window came from another feature-list version: other rows, other length
    await redis_client.hset(KEYS.meta(BTC), "feature_version", "0")
    old_header = struct.pack("<4sHH", b"WCFW", 0, 7)
    await redis_client.set(KEYS.window(BTC), old_header + b"\x00" * 4 * 7 * 3)
    reader = WindowStore(redis_client, KEYS, [BTC, ETH], WINDOW)
    rows, ready = await reader.read_windows([BTC, ETH])
    assert ready.tolist() == [False, True]  # rows of an unknown version are never served
    assert np.isnan(rows[0]).all()
    await reader.load()
    assert await redis_client.hget(KEYS.meta(BTC), "feature_version") == b"1"
    rows, ready = await reader.read_windows([BTC])
    np.testing.assert_array_equal(rows[0], expected_window(offline, 59))
    assert ready.tolist() == [True]
    # a writer whose mirror predates the change resyncs instead of mixing versions
    writer = WindowStore(redis_client, KEYS, [BTC], WINDOW)
    await writer.load()
    await redis_client.hset(KEYS.meta(BTC), "feature_version", "0")
    assert (await writer.append([record(BTC, tables[BTC].loc[60])]))[0].status == "appended"
    offline = compute_features(tables[BTC].iloc[:61], "1h").to_numpy()
    rows, _ = await writer.read_windows([BTC])
    np.testing.assert_array_equal(rows[0], expected_window(offline, 60))


async def test_every_key_is_bounded(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    store = await _replayed(redis_client, tables, 120)
    bars_kept = HISTORY_BARS + WINDOW
    assert await redis_client.zcard(KEYS.bars(BTC)) == bars_kept
    assert await redis_client.strlen(KEYS.window(BTC)) == 12 + WINDOW * len(FEATURE_NAMES) * 4
    assert await redis_client.hlen(KEYS.meta(BTC)) == 5
    assert await redis_client.hget(KEYS.meta(BTC), "appended") == b"120"
    for key in await redis_client.keys("*"):
        assert 0 < await redis_client.pttl(key) <= 7 * 86_400_000
    far = tables[BTC].loc[119].copy()
    far["open_ms"] += 1000 * 3_600_000
    result = await store.append([record(BTC, far)], allow_gap=True)
    assert result[0].status == "appended"
    assert await redis_client.zcard(KEYS.bars(BTC)) == 1  # bars trimmed by open time
    assert await redis_client.hget(KEYS.meta(BTC), "gap_bars") == b"999"
    _, ready = store.windows([BTC])
    assert not ready[0]


async def test_the_plan_forecasts_the_windows_its_commit_leaves(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    store = WindowStore(redis_client, KEYS, [BTC, ETH], WINDOW)
    await store.load()

    async def append(rows: dict[Series, pd.Series], allow_gap: bool = False) -> None:
        plan = store.plan([record(s, row) for s, row in rows.items()], allow_gap=allow_gap)
        series, windows = plan.series, plan.windows()
        results = await store.commit(plan)
        assert {r.status for r in results} == {"appended"}
        assert sorted(series, key=str) == sorted(rows, key=str)
        np.testing.assert_array_equal(windows, store.windows(series)[0])

    await append({BTC: tables[BTC].loc[0]})  # a new series
    for t in range(1, 30):
        await append({s: tables[s].loc[t] for s in (BTC, ETH) if s == BTC or t >= 5})
    await append({BTC: tables[BTC].loc[33], ETH: tables[ETH].loc[30]}, allow_gap=True)
    await redis_client.hset(KEYS.meta(ETH), "feature_version", "0")  # Redis disagrees: reload
    stale = store.plan([record(ETH, tables[ETH].loc[31])])
    assert (await store.commit(stale))[0].status == "appended"  # reloaded, planned again
    assert not stale.current
    with pytest.raises(RuntimeError, match="stale"):
        stale.windows()  # the mirror moved on: no forecast from an old plan
    duplicate = store.plan([record(BTC, tables[BTC].loc[33])])
    assert duplicate.series == [] and len(duplicate.windows()) == 0  # nothing to forecast
    assert (await store.commit(duplicate))[0].status == "duplicate"


async def test_ttls_are_renewed_each_quarter_ttl_not_each_bar(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    store = WindowStore(redis_client, KEYS, [BTC], WINDOW, ttl_seconds=8 * 3600.0)
    await store.load()
    quarter = 2 * 3_600_000  # a quarter of the 8-hour TTL: every second bar
    short = 60_000
    renewed = []
    for t in range(6):
        row = tables[BTC].loc[t]
        three = (KEYS.bars(BTC), KEYS.window(BTC), KEYS.meta(BTC))
        for key in three:
            await redis_client.pexpire(key, short)
        assert (await store.append([record(BTC, row)]))[0].status == "appended"
        ttls = [await redis_client.pttl(k) for k in three]
        assert (ttls[0] > short) == (ttls[1] > short) == (ttls[2] > short)
        renewed.append(ttls[0] > short)
    opens = [int(tables[BTC].loc[t, "open_ms"]) for t in range(6)]
    crossed = [t == 0 or opens[t] // quarter != opens[t - 1] // quarter for t in range(6)]
    assert renewed == crossed and renewed.count(False) == 3  # the first bar is a new series


async def test_warm_up_makes_the_window_complete_at_once(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    table = tables[BTC]
    store = WindowStore(redis_client, KEYS, [BTC], WINDOW)
    await store.load()
    await store.append([record(BTC, table.loc[t]) for t in range(10)])  # stale, short history
    history = [record(BTC, table.loc[t]) for t in range(300, 360) if t != 330]
    await store.warm_up(BTC, history)
    offline = compute_features(table.drop(index=330).iloc[:359], "1h").to_numpy()
    rows, ready = await store.read_windows([BTC])
    np.testing.assert_array_equal(rows[0], expected_window(offline, len(offline) - 1))
    assert not ready[0]  # the missing bar 330 is still inside the feature lookbacks
    before = await dump_all(redis_client)
    await store.warm_up(BTC, history)  # nothing new: nothing written
    await WindowStore(redis_client, KEYS, [BTC], WINDOW).warm_up(
        BTC, history
    )  # nor by a new process
    assert await dump_all(redis_client) == before
    await store.warm_up(BTC, [record(BTC, table.loc[330])])  # the bar turned up after all
    rows, ready = await store.read_windows([BTC])
    offline = compute_features(table.iloc[300:360], "1h").to_numpy()
    np.testing.assert_array_equal(rows[0], expected_window(offline, len(offline) - 1))
    assert ready[0]
    assert (await store.append([record(BTC, table.loc[360])]))[0].status == "appended"
    with pytest.raises(ValueError, match="passed for"):
        await store.warm_up(BTC, [record(ETH, table.loc[361])])


class CountingConnection(Connection):
    """A real connection that counts the requests it writes (one per round trip)."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sent += 1
        await super().send_packed_command(command, check_health)


@pytest.mark.parametrize(("count", "per_call"), [(5, 1000), (60, 1000), (60, 7)])
async def test_one_round_trip_per_bar_whatever_the_series_count(
    redis_url: str,
    tables: dict[Series, pd.DataFrame],
    count: int,
    per_call: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("streamer.store_script.MAX_SERIES_PER_CALL", per_call)
    series = [Series("binance", f"C{i}/USDT", "1h") for i in range(count)]
    client = aioredis.Redis.from_url(redis_url, connection_class=CountingConnection)
    await client.config_resetstat()
    try:
        store = WindowStore(client, KEYS, series, WINDOW)
        await store.load()
        table = tables[BTC]
        await store.append([record(s, table.loc[0]) for s in series])
        CountingConnection.sent = 0
        for t in range(1, 4):
            results = await store.append([record(s, table.loc[t]) for s in series])
            assert {r.status for r in results} == {"appended"}
            await store.read_windows(series)
        assert CountingConnection.sent == 3 * 2
        calls = (await client.info("commandstats"))["cmdstat_evalsha"]["calls"]
        assert calls == 4 * -(-count // per_call)  # one script call per chunk of series
    finally:
        await client.aclose()


async def test_each_series_of_one_call_gets_its_own_status(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    sol = Series("binance", "SOL/USDT", "1h")
    store = WindowStore(redis_client, KEYS, [BTC, ETH, sol], WINDOW)
    await store.load()
    table = tables[BTC]
    for t in range(10):
        await store.append([record(s, table.loc[t]) for s in (BTC, ETH)])
    results = await store.append(
        [record(BTC, table.loc[9]), record(ETH, table.loc[12]), record(sol, table.loc[0])]
    )
    assert results == [
        AppendResult(BTC, int(table.at[9, "open_ms"]), "duplicate"),
        AppendResult(ETH, int(table.at[12, "open_ms"]), "gap", int(table.at[10, "open_ms"])),
        AppendResult(sol, int(table.at[0, "open_ms"]), "appended"),
    ]
    assert await redis_client.hget(KEYS.meta(ETH), "last_open_ms") == str(table.at[9, "open_ms"]).encode()  # fmt: skip
    assert store.last_open_ms(sol) == int(table.at[0, "open_ms"])
    assert store.last_open_times([sol, ETH, BTC]).tolist() == [
        int(table.at[t, "open_ms"]) for t in (0, 9, 9)
    ]


async def test_unknown_series_and_invalid_bars_are_refused(
    redis_client: aioredis.Redis, tables: dict[Series, pd.DataFrame]
) -> None:
    store = WindowStore(redis_client, KEYS, [BTC], WINDOW)
    with pytest.raises(KeyError, match="not one of this store's series"):
        store.windows([ETH])
    row = tables[BTC].loc[0].copy()
    row["high"] = 1.0
    with pytest.raises(ValueError, match="high_below_low"):
        await store.append([record(BTC, row)])
    assert await redis_client.keys("*") == []


@pytest.fixture
def cluster_url(short_tmp: Path) -> Iterator[str]:
    """A one-node Redis Cluster holding every slot (real cluster mode, real routing)."""
    import redis

    server = RedisServer(short_tmp, extra_args=["--cluster-enabled", "yes", "--cluster-config-file",
                                                "nodes.conf", "--cluster-port", str(free_port())])  # fmt: skip
    server.start()
    try:
        with redis.Redis(port=server.port) as admin:
            admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + 10
            while admin.cluster("info")["cluster_state"] != "ok" and time.monotonic() < deadline:
                time.sleep(0.02)
        yield server.url
    finally:
        server.stop()


def same_slot_pair() -> list[Series]:
    """Two series whose keys hash to one Cluster slot (one script call appends both)."""
    seen: dict[int, Series] = {}
    for i in range(100_000):
        series = Series("binance", f"P{i}/USDT", "1h")
        slot = key_slot(KEYS.bars(series).encode())
        if slot in seen:
            return [seen[slot], series]
        seen[slot] = series
    raise AssertionError("no two series share a slot")


async def test_works_on_a_cluster_and_survives_a_script_flush(
    cluster_url: str, tables: dict[Series, pd.DataFrame]
) -> None:
    client = RedisCluster.from_url(cluster_url)
    try:
        series = [Series("binance", f"C{i}/USDT", "1h") for i in range(4)] + same_slot_pair()
        store = WindowStore(client, KEYS, series, WINDOW)
        await store.load()
        table = tables[BTC]
        for t in range(55):
            if t == 50:
                await client.script_flush()  # e.g. a failover to a replica without the script
            results = await store.append([record(s, table.loc[t]) for s in series])
            assert {r.status for r in results} == {"appended"}
        rows, ready = await store.read_windows(series)
        assert ready.all()
        expected = expected_window(compute_features(table.iloc[:55], "1h").to_numpy(), 54)
        for j in range(len(series)):
            np.testing.assert_array_equal(rows[j], expected)
    finally:
        await client.aclose()
