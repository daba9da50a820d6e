"""Scale-out: per-bar latency and throughput of 1, 2 and 3 daemon replicas, printed as JSON.

One simulator (in this process) serves ``--series`` synthetic series; each
configuration runs ``whalecast run`` processes sharing them (``shard.count`` =
replicas, the shard index in the environment as a StatefulSet sets it) on one Redis:
a private redis-server (unix socket, as ``redis.url: embedded`` runs it) or, with
``--cluster``, a 3-master Redis Cluster on loopback ports. The first configuration
fills the windows over REST; the next ones start from the state in Redis, as
replicas do after a change of replica count. Models: the seed architectures with
random weights (direction: seed 004's LSTM 128-64 over 29 features; volume: seed
000's LSTM(50, relu) over log volume), so this measures the system, not training.

Per bar, after the simulator has written every closed candle to the websockets:

- ``latency_external_ms``: until a subscriber on ``<prefix>:predictions`` has every
  prediction of the bar (all series, both models);
- ``latency_internal_ms``: the largest ``latency_ms`` in the bar's messages (each
  replica's "last closed candle in -> published", as the daemon reports it);
- each replica's resident memory after the measured bars (``process_resident_memory_bytes``);
- CPU seconds per bar of each replica (``process_cpu_seconds_total``), of this
  process (simulator and subscriber) and of Redis (``INFO cpu``), and the Redis
  commands per bar (``INFO commandstats``).

Every process shares this machine's cores: on one machine more replicas do not add
cores, they split them (the capacity model in the README works from these numbers).

    python -m benchmarks.bench_scale                       # 3000 series, 1/2/3 replicas
    python -m benchmarks.bench_scale --cluster --bars 10 --out scale.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio.cluster import RedisCluster

from benchmarks.bench_store import bar_rows, records_at
from inference.handover import PredictionMarks
from inference.publisher import PredictionOut, Publisher
from streamer.features import FEATURE_NAMES, HISTORY_BARS
from streamer.simulator import Simulator, SimulatorConfig
from streamer.store import WindowStore
from testkit.daemon import daemon_config
from testkit.models import deep_model, preprocess_for, volume_model, write_model
from testkit.redis_servers import ClusterServers
from testkit.replicas import Replica, write_config
from whalecast.artifact import read_current
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.metrics import Metrics
from whalecast.redisconn import EmbeddedRedis, connect
from whalecast.settings import RedisSettings
from whalecast.targets import VOLUME

MODELS = ("direction", "volume")
CLOCK_PAUSE_SECONDS = 0.3  # replicas' replay clocks see the last step before the next


def write_models(registry: Path) -> None:
    """Random-weight models of the seed architectures."""
    direction = preprocess_for(FEATURE_NAMES)
    write_model(registry, "direction", deep_model(seed=1), direction, graphs=True)
    volume = preprocess_for(["log_volume"], target=VOLUME, target_transform="log1p",
                            target_scaler={"mean": [5.0], "scale": [1.0]})  # fmt: skip
    write_model(registry, "volume", volume_model(seed=2), volume, graphs=True)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[rank], 1)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": round(max(values), 1), "mean": round(statistics.fmean(values), 1)}  # fmt: skip


class Collector:
    """Counts prediction messages per bar; notes when each bar is complete."""

    def __init__(self, redis: Any, channel: str, per_bar: int) -> None:
        self.pubsub = redis.pubsub()
        self.channel = channel
        self.per_bar = per_bar
        self.counts: dict[int, int] = {}
        self.worst_ms: dict[int, float] = {}
        self.done: dict[int, float] = {}
        self.duplicates = 0
        self._seen: set[tuple[str, str, int]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            body = json.loads(message["data"])
            bar = int(body["bar_open_ms"])
            key = (body["symbol"], body["model"], bar)
            if key in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(key)
            self.counts[bar] = self.counts.get(bar, 0) + 1
            self.worst_ms[bar] = max(self.worst_ms.get(bar, 0.0), float(body["latency_ms"]))
            if self.counts[bar] == self.per_bar:
                self.done[bar] = time.perf_counter()

    async def wait(self, bar: int, timeout_seconds: float) -> float:
        async with asyncio.timeout(timeout_seconds):
            while bar not in self.done:  # noqa: ASYNC110 - filled by the listener task
                await asyncio.sleep(0.002)
        return self.done[bar]

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pubsub.aclose()


async def scrape(replica: Replica) -> dict[str, float]:
    """The replica's counters and histogram sums that the report uses."""
    _status, text = await replica.get("/metrics")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = sample.labels.get("model") or sample.labels.get("operation") or ""
            out[f"{sample.name}{'/' + label if label else ''}"] = sample.value
    return out


async def redis_stats(redis: Any) -> dict[str, float]:
    """Redis CPU seconds and commands run, summed over every node."""
    out: dict[str, float] = {"cpu_seconds": 0.0}
    nodes = redis.get_primaries() if isinstance(redis, RedisCluster) else [None]
    for node in nodes:
        extra = {} if node is None else {"target_nodes": node}
        cpu = await redis.info("cpu", **extra)
        out["cpu_seconds"] += float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
        for name, stats in (await redis.info("commandstats", **extra)).items():
            key = "calls/" + name.removeprefix("cmdstat_")
            out[key] = out.get(key, 0.0) + float(stats["calls"])
    return out


async def wait_stored(redis: Any, keys: Keys, sim: Simulator, timeout_seconds: float) -> None:
    """Until every series has its last closed bar stored (start-up backfill finished)."""
    series = [Series("binance", symbol, sim.timeframe) for symbol in sim.symbols]
    newest = sim.now_ms - series[0].bar_ms
    async with asyncio.timeout(timeout_seconds):
        while True:
            pipe = redis.pipeline(transaction=False)
            for s in series:
                pipe.hget(keys.meta(s), "last_open_ms")
            stored = await pipe.execute()
            if all(v is not None and int(v) >= newest for v in stored):
                return
            await asyncio.sleep(1.0)


async def measure_parts(
    redis: Any, registry: Path, count: int, bars: int, backend: str
) -> dict[str, Any]:
    """One replica's per-bar work for ``count`` series, in this process, by part.

    Python parts are timed in CPU seconds of the event-loop thread (``thread_time``:
    what one core must do, however busy the machine); inference in wall and process
    CPU seconds (it runs on every core).
    """
    from inference.runtime import ModelRuntime  # noqa: PLC0415 - TensorFlow, only here

    keys = Keys("whalecast-bench-parts")
    series = [Series("binance", f"P{i:05d}/USDT", "1h") for i in range(count)]
    store = WindowStore(redis, keys, series)
    await store.load()
    publisher = Publisher(redis, keys, 100_000, Metrics(process=False),
                          marks=PredictionMarks(redis, keys, 86_400.0))  # fmt: skip
    runtimes = [
        ModelRuntime.load(registry, m, read_current(registry, m) or "", backend) for m in MODELS
    ]
    rows = bar_rows(HISTORY_BARS + store.window + bars + 1)
    for t in range(HISTORY_BARS + store.window):
        await store.append(records_at(series, rows[t]))
    parts: dict[str, list[float]] = {"append_cpu": [], "publish_cpu": [], "windows_cpu": []}
    parts |= {f"{m}_wall": [] for m in MODELS} | {f"{m}_cpu": [] for m in MODELS}
    for t in range(HISTORY_BARS + store.window, HISTORY_BARS + store.window + bars):
        started = time.thread_time()
        await store.append(records_at(series, rows[t]))
        parts["append_cpu"].append(time.thread_time() - started)
        started = time.thread_time()
        windows, _ready = store.windows(series)
        parts["windows_cpu"].append(time.thread_time() - started)
        out = []
        for runtime in runtimes:
            wall, cpu = time.perf_counter(), time.process_time()
            values = runtime.predict(windows)
            parts[f"{runtime.model}_wall"].append(time.perf_counter() - wall)
            parts[f"{runtime.model}_cpu"].append(time.process_time() - cpu)
            out += [PredictionOut(s, int(rows[t][0]), int(rows[t][0]) + s.bar_ms, runtime.model,
                                  runtime.version, runtime.target, float(v), time.time())
                    for s, v in zip(series, values[:, 0], strict=True)]  # fmt: skip
        started = time.thread_time()
        await publisher.publish(out)
        parts["publish_cpu"].append(time.thread_time() - started)
    return {
        "series": count,
        "bars": bars,
        "ms_per_bar_median": {k: round(statistics.median(v) * 1000, 1) for k, v in parts.items()},
        "us_per_series_median": {
            k: round(statistics.median(v) * 1e6 / count, 1) for k, v in parts.items()
        },
    }


@asynccontextmanager
async def redis_target(cluster: bool, directory: Path) -> AsyncIterator[tuple[str, bool]]:
    if cluster:
        servers = ClusterServers(directory / "cluster").start()
        try:
            yield servers.url, True
        finally:
            servers.stop()
    else:
        with EmbeddedRedis(directory / "redis") as server:
            yield server.url, False


@dataclass
class Sample:
    """Counters read before and after the measured bars."""

    replicas: list[dict[str, float]]
    redis: dict[str, float]
    own_cpu: float

    @classmethod
    async def take(cls, fleet: Sequence[Replica], redis: Any) -> Sample:
        replicas = [await scrape(r) for r in fleet]
        return cls(replicas, await redis_stats(redis), time.process_time())


@dataclass
class Run:
    replicas: int
    series: int
    bars: int
    ready_seconds: float = 0.0
    external: list[float] = field(default_factory=list)
    internal: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    duplicates: int = 0


async def run_configuration(
    sim: Simulator, config: Path, replicas: int, args: argparse.Namespace, redis: Any
) -> dict[str, Any]:
    collector = Collector(redis, f"{args.prefix}:predictions", len(sim.symbols) * len(MODELS))
    await collector.start()
    logs = config.parent
    fleet = [
        Replica(config, i, replicas, logs / f"r{i}-of-{replicas}.log") for i in range(replicas)
    ]
    run = Run(replicas, len(sim.symbols), args.bars)
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        for replica in fleet:
            stack.callback(replica.stop_quietly)
            replica.start()
        await asyncio.gather(*(r.wait_ready(args.ready_timeout) for r in fleet))
        await wait_stored(redis, Keys(args.prefix), sim, args.ready_timeout)
        run.ready_seconds = time.perf_counter() - started
        for k in range(args.warmup_bars + args.bars):
            if k == args.warmup_bars:
                before = await Sample.take(fleet, redis)
            await asyncio.sleep(CLOCK_PAUSE_SECONDS)
            bar = sim.now_ms  # the bar that closes now
            step_started = time.perf_counter()
            await sim.advance(bars=1)
            sent = time.perf_counter()
            done = await collector.wait(bar, args.bar_timeout)
            if k >= args.warmup_bars:
                run.external.append((done - sent) * 1000)
                run.internal.append(collector.worst_ms[bar])
                run.wall.append(done - step_started)
        after = await Sample.take(fleet, redis)
        for replica in fleet:
            await replica.terminate()
    await collector.aclose()
    run.duplicates = collector.duplicates
    return report(run, before, after)


def report(run: Run, before: Sample, after: Sample) -> dict[str, Any]:
    def per_bar(a: dict[str, float], b: dict[str, float], key: str) -> float:
        return round((b.get(key, 0.0) - a.get(key, 0.0)) / run.bars, 4)

    def replicas_sum(key: str) -> float:
        pairs = zip(before.replicas, after.replicas, strict=True)
        return sum(per_bar(a, b, key) for a, b in pairs)

    replica_cpu = [
        per_bar(a, b, "process_cpu_seconds_total")
        for a, b in zip(before.replicas, after.replicas, strict=True)
    ]
    rss = [round(b.get("process_resident_memory_bytes", 0.0) / 2**20, 1) for b in after.replicas]
    inference = {
        model: {
            "passes_per_bar": round(replicas_sum(f"whalecast_inference_seconds_count/{model}"), 2),
            "ms_per_bar_all_replicas": round(
                replicas_sum(f"whalecast_inference_seconds_sum/{model}") * 1000, 1
            ),
        }
        for model in MODELS
    }
    store = {
        op: round(replicas_sum(f"whalecast_store_seconds_sum/{op}") * 1000, 1)
        for op in ("append", "windows")
    }
    commands = {
        k.removeprefix("calls/"): n
        for k in after.redis
        if k.startswith("calls/") and (n := per_bar(before.redis, after.redis, k)) >= 1
    }
    predictions = run.series * len(MODELS)
    return {
        "replicas": run.replicas,
        "series": run.series,
        "bars_measured": run.bars,
        "ready_seconds": round(run.ready_seconds, 1),
        "latency_external_ms": summary(run.external),
        "latency_internal_ms": summary(run.internal),
        "throughput_predictions_per_second": round(predictions * run.bars / sum(run.wall), 1),
        "cpu_seconds_per_bar": {
            "replicas": replica_cpu,
            "replicas_total": round(sum(replica_cpu), 3),
            "simulator_and_subscriber": round((after.own_cpu - before.own_cpu) / run.bars, 3),
            "redis": per_bar(before.redis, after.redis, "cpu_seconds"),
        },
        "rss_mib_at_end": {"replicas": rss, "replicas_total": round(sum(rss), 1)},
        "inference": inference,
        "store_ms_per_bar_all_replicas": store,
        "redis_commands_per_bar": dict(sorted(commands.items())),
        "duplicates": run.duplicates,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="wc-scale-", dir="/tmp"))
    registry = work / "registry"
    write_models(registry)
    sim_config = SimulatorConfig(
        synthetic=args.series, synthetic_bars=args.history_bars + 20 + 4 * args.bars,
        history_bars=args.history_bars, bar_seconds=None, whale=False,
        max_streams_per_connection=args.streams_per_connection,
        forming_updates=args.forming_updates,
    )  # fmt: skip
    load_before = os.getloadavg()
    results = []
    parts: dict[str, Any] = {}
    async with redis_target(args.cluster, work) as (url, cluster), Simulator(sim_config) as sim:
        redis = connect(RedisSettings(url=url, cluster=cluster))
        if cluster:
            await redis.initialize()
        config = daemon_config(
            sim, url, registry,
            redis={"url": url, "cluster": cluster, "prefix": args.prefix},
            whale={"enabled": False}, log={"format": "json"},
            feed={"clock": "replay", "backfill_concurrency": 16, "grace_seconds": 10.0,
                  "stale_after_seconds": 3600.0},
            inference={"registry": str(registry), "models": list(MODELS), "backend": args.backend,
                       "batch_buckets": args.buckets, "reload_poll_seconds": 3600.0},
        )  # fmt: skip
        config["exchanges"][0]["max_streams_per_connection"] = args.streams_per_connection
        path = write_config(work / "config.yml", config)
        if args.parts:
            parts = await measure_parts(redis, registry, args.series, args.bars, args.backend)
            print(json.dumps({"parts": parts}), flush=True)
        for replicas in args.replicas:
            results.append(await run_configuration(sim, path, replicas, args, redis))
            print(json.dumps(results[-1]), flush=True)
        await redis.aclose()
    return {
        "benchmark": "scale",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "redis": "3-master cluster" if args.cluster else "one redis-server (unix socket)",
        "backend": args.backend,
        "batch_buckets": args.buckets,
        "feed_messages_per_series_per_bar": args.forming_updates + 1,
        "models": {
            "direction": "seed 004 LSTM 128-64, 29 features, random weights",
            "volume": "seed 000 LSTM(50, relu), log volume, random weights",
        },
        "parts_in_one_process": parts,
        "results": results,
        "logs": str(work),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=3000)
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--bars", type=int, default=20, help="measured bars per configuration")
    parser.add_argument("--warmup-bars", type=int, default=2, dest="warmup_bars")
    parser.add_argument("--history-bars", type=int, default=80, dest="history_bars")
    parser.add_argument("--cluster", action="store_true", help="a 3-master Redis Cluster")
    parser.add_argument("--backend", default="onnx",
                        choices=["onnx", "tf-function", "tf-xla", "keras"])  # fmt: skip
    parser.add_argument("--buckets", type=int, nargs="+", default=[1, 8, 32, 128, 512, 1024, 4096],
                        help="inference.batch_buckets (tf-function pads each batch up to one)")  # fmt: skip
    parser.add_argument("--streams-per-connection", type=int, default=1000,
                        dest="streams_per_connection")  # fmt: skip
    parser.add_argument("--forming-updates", type=int, default=2, dest="forming_updates",
                        help="still-forming kline messages per series before each close")  # fmt: skip
    parser.add_argument("--parts", action="store_true",
                        help="first time one replica's per-bar work by part, in this process")  # fmt: skip
    parser.add_argument("--prefix", default="whalecast-bench")
    parser.add_argument("--ready-timeout", type=float, default=900.0, dest="ready_timeout")
    parser.add_argument("--bar-timeout", type=float, default=120.0, dest="bar_timeout")
    parser.add_argument("--out", metavar="PATH", help="also write the JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    text = json.dumps(result, indent=2)
    print(text)
    if arguments.out:
        Path(arguments.out).write_text(text + "\n", encoding="utf-8")
