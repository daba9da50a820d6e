"""Window-store cost per bar for 10 / 100 / 1000 series, printed as JSON.

For each series count: warm the store with real BTC bars (shipped slice), then
for ``--bars`` bar closes time ``append`` (feature rows from the mirror plus
one script call for every series; the feature part alone is timed too),
``read_windows`` (Redis, one round trip) and ``windows`` (the in-memory
mirror), and count the requests written to Redis per bar (one request = one
round trip) and the commands Redis ran (``INFO commandstats``). The client
packs commands as the daemon's does (:func:`whalecast.redisconn.with_fast_packing`).

    python -m benchmarks.bench_store                 # private redis-server (unix socket, AOF)
    python -m benchmarks.bench_store --redis-url redis://127.0.0.1:6379/0 --series 10 100

The target database is flushed: never point it at a server holding data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from streamer.features import HISTORY_BARS
from streamer.history import bar_table, load_candles_csv, load_whale_flows_csv
from streamer.store import WindowStore
from streamer.store_format import BarRecord
from whalecast.domain import Candle, Series, WhaleBar
from whalecast.keys import Keys
from whalecast.redisconn import EmbeddedRedis, with_fast_packing

DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"
KEYS = Keys("whalecast-bench")


def counting_client(url: str) -> tuple[aioredis.Redis, list[int]]:
    """A client whose connections count the requests they send."""
    client = with_fast_packing(aioredis.Redis.from_url(url))
    pool = client.connection_pool
    sent = [0]
    base = pool.connection_class

    async def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await base.send_packed_command(self, command, check_health)

    pool.connection_class = type("Counting" + base.__name__, (base,), {"send_packed_command": send_packed_command})  # fmt: skip
    return client, sent


def bar_rows(bars: int) -> np.ndarray:
    candles = load_candles_csv(DATA / "binance_BTC-USDT_1h.csv.gz")
    whale = load_whale_flows_csv(DATA / "whalealert_BTC_exchange_flows_1h.csv.gz")
    return bar_table(candles, whale, "1h").to_numpy()[:bars]


def records_at(series: Sequence[Series], row: np.ndarray) -> list[BarRecord]:
    whale = WhaleBar(float(row[6]), float(row[7]), int(row[8]), float(row[9]))
    return [
        BarRecord(
            Candle(s.exchange, s.symbol, s.timeframe, int(row[0]), *map(float, row[1:6])), whale
        )
        for s in series
    ]


async def commands_run(client: aioredis.Redis) -> int:
    """Commands Redis executed so far (script-internal calls included), INFO excluded."""
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in {"cmdstat_info"})


async def timed(samples: list[float], call: Awaitable[object]) -> None:
    start = time.perf_counter()
    await call
    samples.append((time.perf_counter() - start) * 1000)


async def bench_count(url: str, count: int, rows: np.ndarray, bars: int) -> dict[str, Any]:
    client, sent = counting_client(url)
    await client.flushdb()
    series = [Series("binance", f"S{i}/USDT", "1h") for i in range(count)]
    store = WindowStore(client, KEYS, series)
    await store.load()
    warm = HISTORY_BARS + store.window
    for t in range(warm):
        await store.append(records_at(series, rows[t]))
    positions = store.mirror.positions(series)
    features_ms: list[float] = []
    append_ms: list[float] = []
    read_ms: list[float] = []
    mirror_ms: list[float] = []
    trips, commands = [], []
    for t in range(warm, warm + bars):
        records = records_at(series, rows[t])
        start = time.perf_counter()
        store.mirror.advance(positions, np.tile(rows[t], (count, 1)))  # not committed
        features_ms.append((time.perf_counter() - start) * 1000)
        before_cmds = await commands_run(client)
        before_sent = sent[0]
        await timed(append_ms, store.append(records))
        await timed(read_ms, store.read_windows(series))
        trips.append(sent[0] - before_sent)
        commands.append(await commands_run(client) - before_cmds)
        start = time.perf_counter()
        _, ready = store.windows(series)
        mirror_ms.append((time.perf_counter() - start) * 1000)
        assert ready.all(), "every window should be ready after the warm-up"
    redis_rows, _ = await store.read_windows(series)
    mirror_rows, _ = store.windows(series)
    assert np.array_equal(redis_rows, mirror_rows), "mirror and Redis disagree"
    await client.flushdb()
    await client.aclose()
    median = statistics.median
    both = [a + r for a, r in zip(append_ms, read_ms, strict=True)]
    return {
        "series": count,
        "bars": bars,
        "append_ms_median": round(median(append_ms), 3),
        "of_which_feature_rows_ms_median": round(median(features_ms), 3),
        "read_windows_ms_median": round(median(read_ms), 3),
        "mirror_windows_ms_median": round(median(mirror_ms), 3),
        "append_plus_read_ms_median": round(median(both), 3),
        "round_trips_per_bar": max(trips),
        "redis_commands_per_bar": round(median(commands)),  # incl. calls inside the script
    }


async def run(url: str, counts: Sequence[int], bars: int) -> dict[str, Any]:
    rows = bar_rows(HISTORY_BARS + 24 + bars)
    results = [await bench_count(url, count, rows, bars) for count in counts]
    info = aioredis.Redis.from_url(url)
    server = (await info.info("server"))["redis_version"]
    await info.aclose()
    return {
        "benchmark": "window_store",
        "python": platform.python_version(),
        "redis": server,
        "redis_url_kind": url.split(":", 1)[0],
        "note": "append = feature rows from the mirror + one script call for every series; "
        "read_windows = one pipelined round trip; round trips counted client-side",
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="existing server (flushed!); default: a private one")
    parser.add_argument("--series", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--bars", type=int, default=30, help="timed bar closes per count (≥ 20)")
    args = parser.parse_args(argv)
    if args.redis_url:
        report = asyncio.run(run(args.redis_url, args.series, args.bars))
    else:
        with (
            tempfile.TemporaryDirectory(prefix="wcb-", dir="/tmp") as tmp,
            EmbeddedRedis(Path(tmp)) as server,
        ):
            report = asyncio.run(run(server.url, args.series, args.bars))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
