"""Closed-bar throughput of the candle feed for many symbols, written as JSON.

The exchange simulator runs in its own process (``whalecast simulate --manual``,
synthetic symbols, stepped over HTTP) so this process's CPU time is the
streamer's alone: the real ccxt client, sharded websocket connections, closed
flag capture, validation, sequencing and the ``on_closed`` callback.

For each of ``--bars`` bars the simulator plays the forming updates and the
closed event of every symbol; the feed must hand all of them on. Reported:
closed bars and messages per second of wall time, CPU seconds per message and
per closed bar (``time.process_time``), and the time from the simulator
finishing a bar to the last closed bar of it reaching ``on_closed``. The
start-up REST backfill (``--warmup-bars`` per symbol) is timed too. With
``--profile`` the bars are played once more under cProfile and the report
splits that CPU by part (:func:`profile_split`).

    python -m benchmarks.bench_streamer --symbols 1000 --bars 20 --out bench_streamer.json
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
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import ccxt

from streamer.candles import CandleFeed
from whalecast.domain import Candle
from whalecast.metrics import Metrics
from whalecast.settings import ExchangeSettings, FeedSettings

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    """``whalecast simulate --manual`` in its own process; returns it and its base URL."""
    port = free_port()
    bars = args.history + args.bars * (2 if args.profile else 1) + 5
    command = [sys.executable, "-m", "whalecast", "simulate", "--manual", "--no-whale",
               "--synthetic", str(args.symbols), "--synthetic-bars", str(bars),
               "--history-bars", str(args.history), "--forming-updates", str(args.forming_updates),
               "--port", str(port)]  # fmt: skip
    env = {**os.environ, "WHALECAST_LOG__LEVEL": "WARNING"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


async def simulator_state(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(base + "/_sim/state") as response:
                    if response.status == 200:
                        state: dict[str, Any] = await response.json()
                        return state
            await asyncio.sleep(0.1)
    raise RuntimeError("the simulator did not start")


class Sink:
    """``on_closed``: counts closed bars per open time."""

    def __init__(self) -> None:
        self.by_open: dict[int, int] = {}
        self.total = 0
        self.batches = 0
        self.changed = asyncio.Event()

    async def __call__(self, candles: list[Candle]) -> None:
        self.batches += 1
        self.total += len(candles)
        for candle in candles:
            self.by_open[candle.open_ms] = self.by_open.get(candle.open_ms, 0) + 1
        self.changed.set()

    async def wait(self, condition: Any, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while not condition():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the feed did not deliver in time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def run(args: argparse.Namespace, base: str) -> dict[str, Any]:
    state = await simulator_state(base)
    async with aiohttp.ClientSession() as http:
        exchange = ExchangeSettings(
            id="binance", symbols=state["symbols"], timeframe=state["timeframe"],
            rest_url=state["rest_url"], ws_url=state["ws_url"], enable_rate_limit=False,
            max_streams_per_connection=args.max_streams,
        )  # fmt: skip
        settings = FeedSettings(
            clock="replay", grace_seconds=3600.0, stale_after_seconds=600.0,
            backfill_concurrency=8,
        )  # fmt: skip
        metrics, sink = Metrics(process=False), Sink()
        feed = CandleFeed(exchange, settings, metrics, sink, warmup_bars=args.warmup_bars)
        started, cpu_started = time.monotonic(), time.process_time()
        task = asyncio.create_task(feed.run())
        await sink.wait(lambda: sink.total >= args.symbols * args.warmup_bars)
        ok = sample(metrics, "whalecast_backfill_requests_total", exchange="binance", outcome="ok")
        startup = {
            "backfill_bars": sink.total,
            "wall_seconds": round(time.monotonic() - started, 3),
            "cpu_seconds": round(time.process_time() - cpu_started, 3),
            "rest_requests": ok,
            "connections": len(feed.connections),
        }
        await sink.wait(lambda: feed.connected)
        await asyncio.sleep(1.0)  # subscriptions are paced: let every one land
        steady = await step_bars(args, http=http, base=base, feed=feed, metrics=metrics, sink=sink)
        split = None
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await step_bars(args, http=http, base=base, feed=feed, metrics=metrics, sink=sink)
            profile.disable()
            split = profile_split(profile)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return {"startup": startup, "steady": steady, "cpu_split_profiled": split}


def profile_split(profile: cProfile.Profile) -> dict[str, float]:
    """Shares of the profiled CPU: ccxt's message handling (decoding, parsing, its caches)
    without our hooks, our per-kline work (validation, sequencer), our batching and
    callback, and the rest (websocket frames, the event loop, the HTTP stepping)."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(own for _cc, _nc, own, _cum, _callers in stats.values())

    def cumulative(path: str, name: str) -> float:
        return sum(v[3] for (f, _l, n), v in stats.items() if f.endswith(path) and n == name)

    ours_per_kline = cumulative("streamer/connection.py", "on_kline")
    ccxt_part = cumulative("ccxt/async_support/base/ws/client.py", "handle_text_or_binary_message")
    batching = cumulative("streamer/batches.py", "run")
    parts = {
        "ccxt message handling": ccxt_part - ours_per_kline,
        "whalecast per kline (validation, sequencer)": ours_per_kline,
        "whalecast batching and callback": batching,
    }
    parts["websocket frames, event loop and the rest"] = total - sum(parts.values())
    return {part: round(value / total, 3) for part, value in parts.items()}


async def step_bars(
    args: argparse.Namespace,
    *,
    http: aiohttp.ClientSession,
    base: str,
    feed: CandleFeed,
    metrics: Metrics,
    sink: Sink,
) -> dict[str, Any]:
    messages0 = sample(metrics, "whalecast_feed_messages_total", exchange="binance", feed="candles")
    closed0 = sink.total
    wall0, cpu0 = time.monotonic(), time.process_time()
    tails, per_bar = [], []
    for _ in range(args.bars):
        bar_started = time.monotonic()
        async with http.post(base + "/_sim/advance", json={"bars": 1}) as response:
            body = await response.json()
        sent = time.monotonic()
        open_ms = body["now_ms"] - (body["now_ms"] % 3_600_000) - 3_600_000
        await sink.wait(lambda o=open_ms: sink.by_open.get(o, 0) >= args.symbols)
        done = time.monotonic()
        tails.append(done - sent)
        per_bar.append(done - bar_started)
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    for connection in feed.connections:
        connection.flush_counters()
    messages = sample(metrics, "whalecast_feed_messages_total", exchange="binance",
                      feed="candles") - messages0  # fmt: skip
    closed = sink.total - closed0
    rejected = sum(
        s.value for m in metrics.feed_rejected.collect() for s in m.samples
        if s.name.endswith("_total")
    )  # fmt: skip
    return {
        "bars": args.bars,
        "closed_bars": closed,
        "messages": messages,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "closed_bars_per_second": round(closed / wall, 1),
        "messages_per_second": round(messages / wall, 1),
        "cpu_seconds_per_message": cpu / messages if messages else None,
        "cpu_seconds_per_closed_bar": cpu / closed if closed else None,
        "closed_bars_per_cpu_second": round(closed / cpu, 1) if cpu else None,
        "bar_seconds_median": round(statistics.median(per_bar), 4),
        "tail_seconds_median": round(statistics.median(tails), 4),
        "tail_seconds_max": round(max(tails), 4),
        "rejected": rejected,
        "callback_batches": sink.batches,
        "sources": {src: closed_by(metrics, src) for src in ("ws_flag", "next_bar", "rest")},
    }


def closed_by(metrics: Metrics, source: str) -> float:
    labels = {"exchange": "binance", "timeframe": "1h", "source": source}
    return sample(metrics, "whalecast_bars_closed_total", **labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=20, help="timed bar closes")
    parser.add_argument("--history", type=int, default=100, help="bars closed before the start")
    parser.add_argument("--warmup-bars", type=int, default=48, help="start-up backfill per symbol")
    parser.add_argument("--forming-updates", type=int, default=2)
    parser.add_argument("--max-streams", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="also split the CPU by part")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    report = {
        "benchmark": "streamer closed-bar throughput",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "ccxt": ccxt.__version__,
        },
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "load_average": os.getloadavg(),
    }
    process, base = start_simulator(args)
    try:
        report.update(asyncio.run(run(args, base)))
    finally:
        process.terminate()
        process.wait(timeout=10)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
