"""Memory over a long replay: is the daemon's footprint flat after warm-up?

The real daemon (two models, whale feed on) against the simulator with
``--series`` synthetic series, stepped ``--bars`` bars as fast as the daemon
takes them (each bar waits for all its predictions to be published). Every
``--every`` bars it samples this process's RSS, open file descriptors, asyncio
tasks, Python objects tracked by the GC, and Redis ``used_memory``; it prints
JSON with the samples and the verdict of the 5% rule: RSS at the end is at most
5% above RSS at the end of warm-up (``--warmup-fraction`` of the bars).

The prediction stream is capped at ``--stream-maxlen`` entries (XADD MAXLEN ~),
smaller than the default so Redis reaches its steady size within the run.

    python -m benchmarks.bench_memory                      # 20 series, 10,000 bars
    python -m benchmarks.bench_memory --series 5 --bars 300 --every 50
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_e2e import BenchRun, E2EOptions, bench_daemon
from benchmarks.soak import open_fds, rss_bytes
from whalecast.logs import configure_logging
from whalecast.settings import LogSettings

GROWTH_LIMIT = 0.05


async def sample(run: BenchRun, bar: int, started: float) -> dict[str, Any]:
    redis_memory = await run.redis.info("memory")
    return {
        "bar": bar,
        "seconds": round(time.monotonic() - started, 1),
        "rss_mb": round(rss_bytes(os.getpid()) / 2**20, 2),
        "fds": open_fds(os.getpid()),
        "tasks": len(asyncio.all_tasks()),
        "gc_objects": len(gc.get_objects()),
        "redis_used_mb": round(int(redis_memory["used_memory"]) / 2**20, 2),
        "bar_states": len(run.daemon.bar_loop.bars) if run.daemon.bar_loop else 0,
        "scorer_pending": run.daemon.scorer.pending,
    }


def verdict(samples: list[dict[str, Any]], warmup_bar: int) -> dict[str, Any]:
    after = [s for s in samples if s["bar"] >= warmup_bar]
    base, end = after[0], after[-1]
    growth = end["rss_mb"] / base["rss_mb"] - 1.0
    return {
        "warmup_bars": warmup_bar,
        "rss_mb_after_warmup": base["rss_mb"],
        "rss_mb_end": end["rss_mb"],
        "rss_mb_max_after_warmup": max(s["rss_mb"] for s in after),
        "rss_growth_ratio": round(growth, 4),
        "rss_flat": growth <= GROWTH_LIMIT,
        "fds_growth": end["fds"] - base["fds"],
        "tasks_growth": end["tasks"] - base["tasks"],
        "gc_objects_growth": end["gc_objects"] - base["gc_objects"],
        "redis_used_mb_growth": round(end["redis_used_mb"] - base["redis_used_mb"], 2),
    }


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    opts = E2EOptions(series=args.series, bars=args.bars, warmup_bars=0, backend=args.backend,
                      stream_maxlen=args.stream_maxlen)  # fmt: skip
    warmup_bar = int(args.bars * args.warmup_fraction)
    samples = []
    async with bench_daemon(opts, workdir) as bench:
        started = time.monotonic()
        samples.append(await sample(bench, 0, started))
        for bar in range(1, args.bars + 1):
            await bench.step(opts.bar_timeout_seconds)
            if bar % args.every == 0 or bar == warmup_bar:
                samples.append(await sample(bench, bar, started))
                print(json.dumps(samples[-1]), file=sys.stderr, flush=True)  # progress
    return {
        "benchmark": "memory",
        "series": args.series,
        "bars": args.bars,
        "backend": args.backend,
        "stream_maxlen": args.stream_maxlen,
        "python": platform.python_version(),
        "load_average_end": os.getloadavg(),
        "verdict": verdict(samples, warmup_bar),
        "samples": samples,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--bars", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=250, help="sample every N bars")
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--backend", default=E2EOptions().backend)
    parser.add_argument("--stream-maxlen", type=int, default=10_000)
    parser.add_argument("--out", help="also write the JSON here")
    report_json(run, parser.parse_args(argv), "wcm-")


def report_json(
    run: Callable[[argparse.Namespace, Path], Awaitable[dict[str, Any]]],
    args: argparse.Namespace,
    prefix: str,
) -> None:
    """Run a benchmark in a temporary directory; print its JSON report (and write ``--out``)."""
    configure_logging(LogSettings(level="WARNING", format="console"))
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as tmp:
        report = asyncio.run(run(args, Path(tmp)))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
