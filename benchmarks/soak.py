"""Soak: a long replay through a real daemon process, with faults at a steady rhythm.

The simulator (this process, stepped bar by bar, synthetic series) feeds a
``whalecast run`` child process whose Redis is a private redis-server with an
append-only file. Every ``--fault-every`` bars one fault from a fixed rotation
hits: websocket drop, bad kline messages, a silent stall, a Redis restart with a
bar closing while it is down, whale feed flapping, websocket refused for a while.

After every bar the prediction stream is read: each bar must get exactly one
prediction per series and model (a duplicate or a missing one is a violation).
Every ``--check-every`` bars and at the end the store is checked against the
simulator's bars and ``compute_features`` (the fault suite's invariant,
testkit/faults.py). Every ``--sample-every`` bars the daemon's RSS, open
file descriptors and asyncio task count and Redis' used_memory are sampled; the
report says whether each stayed flat after warm-up (the first ``--warmup``
fraction of the bars).

    python -m benchmarks.soak --series 100 --bars 5000 --out soak.json    # 13 min here
    python -m benchmarks.soak --series 20 --bars 500       # a few minutes

Needs redis-server on PATH. Not a test: nothing here is collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from streamer.simulator import Simulator, SimulatorConfig
from testkit.daemon import write_demo_models
from testkit.faults import Invariant, fault_settings, metric_values
from testkit.process import DaemonProcess, write_config
from testkit.redis_servers import RedisServer, free_port
from whalecast.keys import Keys
from whalecast.logs import configure_logging
from whalecast.settings import LogSettings

MODELS = ("direction", "volume")
PREFIX = "wc"
BAR_TIMEOUT_SECONDS = 90.0


@dataclass
class Sample:
    bar: int
    wall_seconds: float
    rss_bytes: int
    open_fds: int
    tasks: float
    redis_used_memory: int
    predictions: int


@dataclass
class Tally:
    """Predictions per bar from the stream: complete, duplicated or missing."""

    expected: int
    open_bars: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    complete: set[int] = field(default_factory=set)
    predictions: int = 0
    duplicates: list[str] = field(default_factory=list)
    cursor: bytes = b"0-0"

    def add(self, message: dict[str, Any]) -> None:
        bar = int(message["bar_open_ms"])
        key = (message["symbol"], message["model"])
        self.predictions += 1
        if bar in self.complete:
            self.duplicates.append(f"bar {bar}: {key} after the bar was complete")
            return
        seen = self.open_bars.setdefault(bar, set())
        if key in seen:
            self.duplicates.append(f"bar {bar}: {key} twice")
        seen.add(key)
        if len(seen) == self.expected:
            self.complete.add(bar)
            del self.open_bars[bar]

    async def read(self, client: Any, stream: str) -> None:
        while True:
            reply = await client.xread({stream: self.cursor}, count=10_000)
            if not reply:
                return
            for entry_id, fields in reply[0][1]:
                self.add(json.loads(fields[b"data"]))
                self.cursor = entry_id


@dataclass
class Soak:
    args: argparse.Namespace
    workdir: Path
    sim: Simulator
    redis: RedisServer
    daemon: DaemonProcess
    invariant: Invariant
    client: Any
    tally: Tally
    samples: list[Sample] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: list[tuple[int, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    # -- one bar ---------------------------------------------------------------------

    async def bar(self, index: int) -> None:
        fault = self.fault_for(index)
        if fault is not None:
            self.faults.append((index, fault.__name__))
            await fault()
        else:
            await self.sim.advance(1)
        await self.wait_predicted(self.sim.now_ms - self.sim.market.bar_ms)
        if index % self.args.sample_every == 0:
            await self.sample(index)
        if index % self.args.check_every == 0:
            await self.check_store(index)

    async def wait_predicted(self, bar_open_ms: int) -> None:
        deadline = time.monotonic() + BAR_TIMEOUT_SECONDS
        while bar_open_ms not in self.tally.complete:
            if time.monotonic() > deadline:
                seen = len(self.tally.open_bars.get(bar_open_ms, ()))
                self.violations.append(f"bar {bar_open_ms}: {seen} predictions after the timeout")
                return
            with contextlib.suppress(OSError, aioredis.RedisError):  # Redis restarting
                await self.tally.read(self.client, Keys(PREFIX).predictions_stream)
            await asyncio.sleep(0.005)

    async def check_store(self, index: int) -> None:
        try:
            found = await self.invariant.store_violations()
        except (OSError, aioredis.RedisError) as e:
            found = [f"store unreadable: {e!r}"]
        self.violations += [f"bar #{index}: {v}" for v in found]

    async def sample(self, index: int) -> None:
        pid = self.daemon.process.pid
        text = await self.daemon.metrics_text()
        values = metric_values(text)
        info = await self.client.info("memory")
        self.samples.append(
            Sample(
                bar=index,
                wall_seconds=round(time.monotonic() - self.started, 2),
                rss_bytes=rss_bytes(pid),
                open_fds=open_fds(pid),
                tasks=values.get("whalecast_event_loop_tasks", float("nan")),
                redis_used_memory=int(info["used_memory"]),
                predictions=self.tally.predictions,
            )
        )
        last = self.samples[-1]
        print(f"bar {index:>6}  {last.wall_seconds:>8.1f} s  rss {last.rss_bytes / 2**20:7.1f} MiB"
              f"  fds {last.open_fds:>4}  tasks {last.tasks:>4.0f}"
              f"  redis {last.redis_used_memory / 2**20:6.1f} MiB", flush=True)  # fmt: skip

    # -- faults ----------------------------------------------------------------------

    def fault_for(self, index: int) -> Callable[[], Awaitable[None]] | None:
        every = self.args.fault_every
        if every <= 0 or index == 0 or index % every:
            return None
        rotation = [self.drop, self.bad_messages, self.stall, self.redis_restart,
                    self.whale_flap, self.refuse]  # fmt: skip
        return rotation[(index // every - 1) % len(rotation)]

    async def drop(self) -> None:
        await self.sim.faults.drop_connections()
        await self.sim.advance(1)

    async def bad_messages(self) -> None:
        for kind in ("malformed_json", "duplicate", "out_of_order", "nan", "off_grid"):
            self.sim.faults.inject(kind)
        await self.sim.advance(1)

    async def stall(self) -> None:
        self.sim.faults.stall(self.args.stale_after_seconds + 1.0)
        await self.sim.advance(1)

    async def redis_restart(self) -> None:
        await self.tally.read(self.client, Keys(PREFIX).predictions_stream)
        self.redis.stop()
        await self.sim.advance(1)  # a bar closes while Redis is away
        await asyncio.sleep(1.0)
        self.redis.start()

    async def whale_flap(self) -> None:
        self.sim.faults.whale_flap(1)
        await self.sim.advance(1)

    async def refuse(self) -> None:
        self.sim.faults.refuse(1.0)
        await self.sim.faults.drop_connections()
        await self.sim.advance(1)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def flatness(samples: list[Sample], warmup_bar: int) -> dict[str, Any]:
    """Growth of each resource from the end of warm-up to the end of the run."""
    after = [s for s in samples if s.bar >= warmup_bar]
    if len(after) < 3:
        return {"note": "too few samples after warm-up"}
    half = len(after) // 2
    report: dict[str, Any] = {}
    limits = {"rss_bytes": 0.10, "redis_used_memory": 0.10, "open_fds": 0.0, "tasks": 0.0}
    slack = {"rss_bytes": 16 * 2**20, "redis_used_memory": 4 * 2**20, "open_fds": 4, "tasks": 4}
    for name, fraction in limits.items():
        first = statistics.median(getattr(s, name) for s in after[:half])
        last = statistics.median(getattr(s, name) for s in after[half:])
        allowed = max(first * fraction, slack[name])
        report[name] = {"first_half_median": first, "second_half_median": last,
                        "growth": last - first, "allowed": allowed,
                        "flat": last - first <= allowed}  # fmt: skip
    return report


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="wc-soak-"))
    redis = RedisServer(workdir / "redis", extra_args=["--appendonly", "yes"]).start()
    sim = Simulator(SimulatorConfig(
        synthetic=args.series, synthetic_bars=args.bars + 200, history_bars=120,
        bar_seconds=None, forming_updates=1,
    ))  # fmt: skip
    await sim.start()
    registry = workdir / "registry"
    write_demo_models(registry)
    port = free_port()
    settings = fault_settings(
        sim, redis.url, registry, metrics={"port": port}, log={"level": "INFO", "format": "json"},
        feed={"stale_after_seconds": args.stale_after_seconds},
        inference={"backend": args.backend, "batch_buckets": [1, 8, 32, 128, 512, 1024]},
    )  # fmt: skip
    config = write_config(workdir / "config.yml", settings)
    secrets = workdir / "secrets"
    secrets.mkdir()
    (secrets / "whale_api_key").write_text(sim.config.whale_api_key)
    daemon = DaemonProcess(config, workdir / "daemon.log", secrets_dir=secrets, metrics_port=port)
    client = aioredis.Redis.from_url(redis.url, socket_timeout=5.0)
    invariant = Invariant(sim, redis.url)
    soak = Soak(args, workdir, sim, redis, daemon, invariant, client,
                Tally(expected=args.series * len(MODELS)))  # fmt: skip
    try:
        await daemon.wait_ready(timeout_seconds=180)
        await soak.wait_predicted(sim.now_ms - sim.market.bar_ms)
        soak.started = time.monotonic()
        for index in range(args.bars):
            await soak.bar(index)
            if daemon.problem() is not None:
                soak.violations.append(f"bar #{index}: {daemon.problem()}")
                break
        await soak.sample(args.bars)
        await soak.check_store(args.bars)
        daemon.signal(signal.SIGTERM)
        code = await daemon.wait_exit()
        if code != 0:
            soak.violations.append(f"exit status {code} after SIGTERM")
    finally:
        daemon.close()
        await client.aclose()
        await sim.stop()
        redis.stop()
    return report(soak, args)


def report(soak: Soak, args: argparse.Namespace) -> dict[str, Any]:
    wall = soak.samples[-1].wall_seconds if soak.samples else 0.0
    violations = soak.violations + soak.tally.duplicates
    return {
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "series": args.series, "bars": args.bars, "backend": args.backend,
        "wall_seconds": wall, "bars_per_second": round(args.bars / wall, 2) if wall else None,
        "predictions": soak.tally.predictions,
        "faults": len(soak.faults), "fault_kinds": sorted({name for _, name in soak.faults}),
        "violations": len(violations), "violation_examples": violations[:20],
        "flat_after_warmup": flatness(soak.samples, int(args.bars * args.warmup)),
        "samples": [asdict(s) for s in soak.samples],
        "workdir": str(soak.workdir),
    }  # fmt: skip


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--bars", type=int, default=5_000)
    parser.add_argument("--fault-every", type=int, default=250, help="bars between faults")
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--check-every", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of bars")
    parser.add_argument("--stale-after-seconds", type=float, default=3.0)
    parser.add_argument("--backend", default="tf-function")
    parser.add_argument("--out", help="write the report (with every sample) as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(LogSettings(level="WARNING", format="console"))  # the simulator's logs
    result = asyncio.run(run(args))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    flat = all(v.get("flat", False) for v in result["flat_after_warmup"].values()
               if isinstance(v, dict))  # fmt: skip
    return 0 if result["violations"] == 0 and flat else 1


if __name__ == "__main__":
    sys.exit(main())
