"""Streamer throughput: closed bars of 1000 symbols through the candle feed, messages/s and
CPU per message.

The simulator runs in its own process (``whalecast simulate --synthetic N
--manual``), so this process's CPU is the streamer's alone: ccxt's websocket
client and kline parsing, validation, the sequencer and the batching of
:class:`streamer.candles.CandleFeed`, up to the ``on_closed`` callback (which
only counts). The simulator's sending usually sets the pace: the capacity of
the streamer is messages per CPU second (``capacity_messages_per_cpu_second``),
the observed rate is ``messages_per_second``. Each round plays
``--bars-per-round`` bars one after the other (``POST /_sim/advance``: forming
updates, then the closed events, as fast as the sockets take them), each once
every closed candle of the previous one was delivered (bars arrive one by one
live; a burst of several bars would let the virtual clock pass the close
deadlines and turn part of the load into REST backfill). Each bar is ``--forming-updates`` + 1 messages per symbol; the
feed's own count (``whalecast_feed_messages_total``) is checked against that
over the whole run. With ``--profile`` one extra round runs
under cProfile and the report splits its CPU by package (see
:func:`profile_split`).

    python -m benchmarks.bench_streamer                     # 1000 symbols
    python -m benchmarks.bench_streamer --symbols 200 --rounds 3 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import platform
import pstats
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from streamer.candles import CandleFeed
from whalecast.domain import Candle
from whalecast.logs import configure_logging
from whalecast.metrics import Metrics
from whalecast.settings import ExchangeSettings, FeedSettings, LogSettings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Counter:
    """The feed's callback: counts closed candles, wakes the waiter."""

    def __init__(self) -> None:
        self.closed = 0
        self.changed = asyncio.Event()

    async def on_closed(self, candles: list[Candle]) -> None:
        self.closed += len(candles)
        self.changed.set()

    async def wait_for(self, count: int, limit_seconds: float) -> None:
        async with asyncio.timeout(limit_seconds):
            while self.closed < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.contextmanager
def simulator(args: argparse.Namespace) -> Iterator[str]:
    """A simulator process stepped over HTTP; yields its base URL."""
    port = free_port()
    bars = 300 + (args.rounds + 2) * args.bars_per_round
    command = [sys.executable, "-m", "whalecast", "simulate", "--synthetic", str(args.symbols),
               "--synthetic-bars", str(bars), "--history-bars", "250", "--manual", "--no-whale",
               "--forming-updates", str(args.forming_updates), "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        yield base
    finally:
        process.terminate()
        process.wait(30)


async def state(http: aiohttp.ClientSession, base: str, limit_seconds: float = 120.0) -> Any:
    async with asyncio.timeout(limit_seconds):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/_sim/state") as response:
                    return await response.json()
            await asyncio.sleep(0.2)


@dataclass
class Rig:
    http: aiohttp.ClientSession
    base: str
    feed: CandleFeed
    counter: Counter
    forming_updates: int

    async def round(self, bars: int) -> dict[str, float]:
        """Play ``bars`` bars one by one; rates and CPU per message."""
        symbols = len(self.feed.series)
        before_cpu, started = cpu_seconds(), time.perf_counter()
        for _ in range(bars):
            target = self.counter.closed + symbols
            async with self.http.post(self.base + "/_sim/advance", json={"bars": 1}) as response:
                response.raise_for_status()
            await self.counter.wait_for(target, 300.0)
        wall = time.perf_counter() - started
        count = bars * symbols * (1 + self.forming_updates)
        cpu = cpu_seconds() - before_cpu
        return {
            "wall_seconds": wall,
            "messages": count,
            "closed_bars": bars * symbols,
            "messages_per_second": count / wall,
            "closed_bars_per_second": bars * symbols / wall,
            "cpu_us_per_message": cpu / count * 1e6,
            "cpu_share_of_one_core": cpu / wall,
            "capacity_messages_per_cpu_second": count / cpu,
        }


def profile_split(profile: cProfile.Profile) -> dict[str, float]:
    """Shares of the profiled CPU: ccxt's message handling (decoding, parsing, its caches)
    without our hooks, our per-kline work (validation, sequencer), our batching and
    callback, and the rest (websocket frames, the event loop)."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(own for _cc, _nc, own, _cum, _callers in stats.values())

    def cumulative(path: str, name: str) -> float:
        return sum(v[3] for (f, _l, n), v in stats.items() if f.endswith(path) and n == name)

    ours_per_kline = cumulative("streamer/connection.py", "on_kline")
    ccxt = cumulative("ccxt/async_support/base/ws/client.py", "handle_text_or_binary_message")
    batching = cumulative("streamer/candles.py", "_flush_loop")
    parts = {
        "ccxt message handling": ccxt - ours_per_kline,
        "whalecast per kline (validation, sequencer)": ours_per_kline,
        "whalecast batching and callback": batching,
    }
    parts["websocket frames and event loop"] = total - sum(parts.values())
    return {part: round(value / total, 3) for part, value in parts.items()}


async def run(args: argparse.Namespace, base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        sim = await state(http, base)
        exchange = ExchangeSettings(
            id="binance", symbols=sim["symbols"], timeframe=sim["timeframe"],
            rest_url=sim["rest_url"], ws_url=sim["ws_url"], enable_rate_limit=False,
            max_streams_per_connection=args.streams_per_connection,
        )  # fmt: skip
        counter = Counter()
        feed = CandleFeed(exchange, FeedSettings(clock="replay"), Metrics(), counter.on_closed)
        task = asyncio.create_task(feed.run())
        try:
            async with asyncio.timeout(120):
                while not feed.connected:  # noqa: ASYNC110 - the feed's own tasks connect it
                    await asyncio.sleep(0.1)
            messages = feed.metrics.feed_messages.labels(exchange.id, "candles")
            counted = messages._value.get()
            rig = Rig(http, base, feed, counter, args.forming_updates)
            await rig.round(1)  # warm-up
            rounds = [await rig.round(args.bars_per_round) for _ in range(args.rounds)]
            split = None
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                await rig.round(args.bars_per_round)
                profile.disable()
                split = profile_split(profile)
            await asyncio.sleep(1.0)  # the feed adds its message count to the metric every tick
            counted = messages._value.get() - counted
            expected = 1 + len(rounds) * args.bars_per_round + bool(split) * args.bars_per_round
            expected *= len(exchange.symbols) * (1 + args.forming_updates)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return {
        "benchmark": "streamer",
        "symbols": args.symbols,
        "connections": len(feed.connections),
        "forming_updates_per_bar": args.forming_updates,
        "bars_per_round": args.bars_per_round,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "messages_counted_by_feed": counted,
        "messages_expected": expected,
        "median": median,
        "rounds": rounds,
        "cpu_split_profiled": split,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bars-per-round", type=int, default=5)
    parser.add_argument("--forming-updates", type=int, default=2)
    parser.add_argument("--streams-per-connection", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="also split CPU by package")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    configure_logging(LogSettings(level="WARNING", format="console"))
    with simulator(args) as base:
        report = asyncio.run(run(args, base))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
