"""``whalecast bench`` section ``e2e``: the real daemon's bar latency against the simulator.

One process runs a private ``redis-server`` (unix socket, AOF, as ``url:
embedded`` does), the exchange simulator with ``series`` synthetic symbols
stepped bar by bar, and the daemon (:class:`inference.daemon.Daemon`) serving
two models with random weights: seed 004's ``direction-deep`` over all v1
features and seed 000's volume LSTM on ``log_volume``
(:mod:`benchmarks.benchmodels`). After start-up backfill and ``warmup_bars``
untimed bars, each of ``bars`` bars is measured from the daemon's own metrics
(deltas of histogram sums, one observation per bar):

- bar latency: the last closed candle of the bar handed to the bar loop →
  all predictions published (``whalecast_bar_latency_seconds``);
- inference seconds per model, store append and window read seconds;
- publish seconds (the pipeline call, timed around the publisher);
- predictions per bar per model, and how many were stepped from a primed state
  (:mod:`inference.incremental`) rather than run over the full window;
- priming seconds per model (between bars, off the critical path);
- event-loop lag (a :class:`~inference.looplag.LoopLagMonitor` ticking every
  ``lag_interval_seconds``): the largest lag of a timer due while a forward
  pass ran in its worker thread, and the largest during the whole bar
  processing (append, features, inference, publish);
- feed seconds: from the simulator starting to send the bar to the bar loop
  receiving its last candle; by default the simulator's sending and ccxt's parsing
  share this process's event loop, so this is an upper bound of the feed's share
  (``sim_process``: the simulator runs as a process of its own,
  :mod:`benchmarks.sim_process`, as an exchange would);
- sent → published: from the simulator starting to send the bar to its last
  prediction published (the feed plus the bar latency).

Each bar is sent ``bar_gap_seconds`` after the previous one was published. Real bars
are a bar period apart (an hour for ``1h``), and the daemon primes the next bar's
states in that gap; sent back to back, a bar's candles would arrive while the previous
bar is still being primed, which measures a catch-up burst, not a bar close.

Percentiles are over the measured bars (p99 of 40 bars is close to their maximum).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.benchmodels import write_bench_models
from benchmarks.redis_floor import measure_floor, read_shape
from benchmarks.sim_process import SimulatorProcess
from inference.daemon import Daemon
from inference.looplag import LoopLagMonitor
from streamer.simulator import Simulator, SimulatorConfig
from whalecast.domain import timeframe_ms
from whalecast.metrics import Metrics
from whalecast.redisconn import EmbeddedRedis, connect
from whalecast.settings import InferenceSettings, Settings, load_settings

LATENCY_P50_TARGET = 0.150
LATENCY_P99_TARGET = 0.300
LAG_TARGET = 0.020
FLOOR_FACTOR_TARGET = 3.0  # store + publish within 3x Redis's own time for their commands
PREFIX = "wcbench"


@dataclass
class E2EOptions:
    series: int = 1000
    bars: int = 40
    warmup_bars: int = 3
    backend: str = InferenceSettings().backend
    window: int = 24
    forming_updates: int = 2
    lag_interval_seconds: float = 0.005
    ready_timeout_seconds: float = 600.0
    bar_timeout_seconds: float = 120.0
    stream_maxlen: int = 100_000  # redis.stream_maxlen (the default)
    bar_gap_seconds: float = 0.5
    horizons: bool = False  # also serve a volume model of six outputs
    sim_process: bool = False  # the simulator in a process of its own (benchmarks.sim_process)


def bench_settings(
    sim: Simulator | SimulatorProcess, redis_url: str, registry: Path, opts: E2EOptions
) -> Settings:
    """The daemon's settings for the run: defaults, pointed at the simulator and the registry."""
    models = list(write_bench_models(registry, opts.window, horizons=opts.horizons))
    return load_settings(
        None,
        redis={"url": redis_url, "prefix": PREFIX, "stream_maxlen": opts.stream_maxlen},
        exchanges=[{**sim.exchange_section(), "subscribe_messages_per_second": 4.0}],
        feed={"clock": "replay"},
        whale=sim.whale_section(),
        features={"window": opts.window},
        inference={"registry": str(registry), "models": models, "backend": opts.backend},
        metrics={"host": "127.0.0.1", "port": 0},
    )  # fmt: skip


@dataclass
class BarSample:
    latency: float
    feed: float
    sent_to_published: float  # the simulator starts sending the bar -> its last prediction out
    append: float
    windows: float
    publish: float
    inference: dict[str, float]
    predictions: dict[str, int]
    stepped: dict[str, int]
    prime: dict[str, float]
    lag_inference: float
    lag_bar: float
    observations: int


@dataclass
class Probe:
    """Times what the metrics do not: publish calls, forward-pass windows, loop lag."""

    daemon: Daemon
    lag_interval: float
    publishes: list[tuple[float, float, int]] = field(default_factory=list)  # start, end, count
    forward: list[tuple[float, float]] = field(default_factory=list)  # monotonic start, end
    lags: list[tuple[float, float]] = field(default_factory=list)  # due (monotonic), lag
    published: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0
    count: int = 0
    bar_open_ms: int = 0  # the stepped bar

    def install(self) -> None:
        publisher = self.daemon.publisher
        publish = publisher.publish

        async def timed_publish(predictions: Any) -> int:
            started = time.time()
            sent = await publish(predictions)
            self.publishes.append((started, time.time(), sent))
            # only the stepped bar's predictions count: a publish of an earlier bar
            # finishing during this step must not end it
            self.count += sum(1 for p in predictions if p.bar_open_ms >= self.bar_open_ms)
            if self.count >= self.expected:
                self.published.set()
            return sent

        publisher.publish = timed_publish  # type: ignore[method-assign]

    def time_forward_passes(self) -> None:
        for runtime in self.daemon.models.serving().values():
            runtime.predict_bar = self._timed(runtime.predict_bar)  # type: ignore[method-assign]

    def _timed(self, predict: Callable[..., tuple[np.ndarray, int]]) -> Callable[..., Any]:
        def timed(windows: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, int]:
            started = time.monotonic()
            try:
                return predict(windows, positions)
            finally:
                self.forward.append((started, time.monotonic()))

        return timed

    def monitor(self) -> LoopLagMonitor:
        def keep(due: float, lag: float) -> None:
            self.lags.append((due, lag))

        return LoopLagMonitor(Metrics(process=False), self.lag_interval, on_sample=keep)

    def start_bar(self, bar_open_ms: int, expected: int) -> None:
        self.publishes.clear()
        self.forward.clear()
        self.lags.clear()
        self.published.clear()
        self.expected, self.count = expected, 0
        self.bar_open_ms = bar_open_ms

    def max_lag(self, spans: list[tuple[float, float]]) -> float:
        return max(
            (lag for due, lag in self.lags if any(a <= due <= b for a, b in spans)), default=0.0
        )


class MetricReader:
    """Sums and counts of the daemon's histograms and counters, read between bars."""

    def __init__(self, metrics: Metrics, timeframe: str, models: list[str]) -> None:
        self.registry = metrics.registry
        self.timeframe = timeframe
        self.models = models

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def snapshot(self) -> dict[str, float]:
        tf = self.timeframe
        out = {
            "latency": self.value("whalecast_bar_latency_seconds_sum", timeframe=tf),
            "latency_n": self.value("whalecast_bar_latency_seconds_count", timeframe=tf),
            "append": self.value("whalecast_store_seconds_sum", operation="append"),
            "windows": self.value("whalecast_store_seconds_sum", operation="windows"),
        }
        for model in self.models:
            out[f"inference:{model}"] = self.value("whalecast_inference_seconds_sum", model=model)
            out[f"predictions:{model}"] = self.value(
                "whalecast_predictions_published_total", model=model
            )
            out[f"stepped:{model}"] = self.value(
                "whalecast_inference_series_total", model=model, path="step"
            )
            out[f"prime:{model}"] = self.value("whalecast_inference_prime_seconds_sum", model=model)
        return out


async def measure_bar(
    run: BenchRun, reader: MetricReader, limit_seconds: float, gap_seconds: float
) -> BarSample:
    probe, models = run.probe, reader.models
    before = reader.snapshot()
    started_wall, started_mono = time.time(), time.monotonic()
    await run.step(limit_seconds)
    ended_mono = time.monotonic()
    await asyncio.sleep(gap_seconds)  # the daemon primes the next bar's states meanwhile
    after = reader.snapshot()
    delta = {k: after[k] - before[k] for k in after}
    published_end = max(end for _s, end, _n in probe.publishes)
    latency = delta["latency"] / max(delta["latency_n"], 1.0)
    arrived_mono = started_mono + (published_end - latency - started_wall)
    return BarSample(
        latency=latency,
        feed=published_end - latency - started_wall,
        sent_to_published=published_end - started_wall,
        append=delta["append"],
        windows=delta["windows"],
        publish=sum(end - start for start, end, _n in probe.publishes),
        inference={m: delta[f"inference:{m}"] for m in models},
        predictions={m: int(delta[f"predictions:{m}"]) for m in models},
        stepped={m: int(delta[f"stepped:{m}"]) for m in models},
        prime={m: delta[f"prime:{m}"] for m in models},
        lag_inference=probe.max_lag(probe.forward),
        lag_bar=probe.max_lag([(arrived_mono, ended_mono)]),
        observations=int(delta["latency_n"]),
    )


async def wait_ready(daemon: Daemon, limit_seconds: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(limit_seconds):
        while True:
            _windows, ready = daemon.store.windows(daemon.series)
            if daemon.feeds and all(f.connected for f in daemon.feeds) and ready.all():
                return time.monotonic() - started
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def embedded_redis(workdir: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(workdir / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class BenchRun:
    """A running daemon, its simulator and Redis, ready to be stepped bar by bar."""

    sim: Simulator | SimulatorProcess
    daemon: Daemon
    probe: Probe
    redis: Any
    settings: Settings
    startup_seconds: float
    ready_wait_seconds: float

    async def step(self, limit_seconds: float) -> None:
        """Play one bar and wait until the daemon published every prediction of it."""
        bar_ms = timeframe_ms(self.sim.timeframe)
        forming = self.sim.now_ms - self.sim.now_ms % bar_ms  # the bar the step closes
        outputs = sum(len(r.published) for r in self.daemon.models.serving().values())
        expected = len(self.daemon.series) * outputs  # one message per series and output
        self.probe.start_bar(forming, expected)
        await self.sim.advance(1)
        async with asyncio.timeout(limit_seconds):
            await self.probe.published.wait()


def simulator(opts: E2EOptions) -> contextlib.AbstractAsyncContextManager[Any]:
    """The simulator with enough bars for ``warmup_bars + bars``, in this process or its own."""
    bars, history = 300 + opts.warmup_bars + opts.bars, 250
    if opts.sim_process:
        return SimulatorProcess(synthetic=opts.series, synthetic_bars=bars, history_bars=history,
                                forming_updates=opts.forming_updates)  # fmt: skip
    config = SimulatorConfig(
        synthetic=opts.series, bar_seconds=None, forming_updates=opts.forming_updates,
        synthetic_bars=bars, history_bars=history,
    )  # fmt: skip
    return Simulator(config)


@contextlib.asynccontextmanager
async def bench_daemon(opts: E2EOptions, workdir: Path) -> AsyncIterator[BenchRun]:
    """Redis, the simulator and a ready daemon."""
    with embedded_redis(workdir) as server:
        async with simulator(opts) as sim:
            settings = bench_settings(sim, server.url, workdir / "registry", opts)
            redis = connect(settings.redis, server.url)
            daemon = Daemon(settings, Metrics(), redis)
            probe = Probe(daemon, opts.lag_interval_seconds)
            probe.install()
            started = time.monotonic()
            try:
                await daemon.start()
                probe.time_forward_passes()
                ready = await wait_ready(daemon, opts.ready_timeout_seconds)
                startup = time.monotonic() - started
                yield BenchRun(sim, daemon, probe, redis, settings, startup, ready)
            finally:
                await daemon.stop()
                await redis.aclose()


async def run_e2e(opts: E2EOptions, workdir: Path) -> dict[str, Any]:
    async with bench_daemon(opts, workdir) as run:
        lag_task = asyncio.create_task(run.probe.monitor().run())
        try:
            models = list(run.settings.inference.models)
            reader = MetricReader(run.daemon.metrics, run.sim.timeframe, models)
            samples = []
            for i in range(opts.warmup_bars + opts.bars):
                sample = await measure_bar(
                    run, reader, opts.bar_timeout_seconds, opts.bar_gap_seconds
                )
                if i >= opts.warmup_bars:
                    samples.append(sample)
        finally:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
        stream_len = int(await run.redis.xlen(run.daemon.keys.predictions_stream))
        floor = await redis_floor(run)
    result = summarize(samples, opts)
    result.update(startup_seconds=run.startup_seconds, ready_wait_seconds=run.ready_wait_seconds,
                  stream_length=stream_len, redis_floor=floor)  # fmt: skip
    result["floor_factor"] = floor_factor(result)
    return result


async def redis_floor(run: BenchRun) -> dict[str, float]:
    """Redis's own time for one bar's store and publish commands, in the same server."""
    daemon = run.daemon
    shape = await read_shape(
        run.redis, daemon.keys, series=daemon.series, models=run.settings.inference.models,
        bar_ms=timeframe_ms(run.sim.timeframe), stream_maxlen=run.settings.redis.stream_maxlen,
    )  # fmt: skip
    return (await measure_floor(run.redis, shape)).as_dict()


def floor_factor(r: dict[str, Any]) -> dict[str, Any]:
    """The bar's store append and publish (p50) as multiples of Redis's floor for them."""
    floor = r["redis_floor"]
    ours = r["append_ms"]["p50"] + r["publish_ms"]["p50"]
    total = floor["store_ms"] + floor["publish_ms"]
    factor = ours / total if total > 0 else float("nan")
    return {
        "store": r["append_ms"]["p50"] / floor["store_ms"] if floor["store_ms"] else float("nan"),
        "publish": r["publish_ms"]["p50"] / floor["publish_ms"]
        if floor["publish_ms"]
        else float("nan"),
        "both": factor,
        "target_met": factor <= FLOOR_FACTOR_TARGET,
    }


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def stats_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50) * 1000.0,
        "p99": percentile(values, 99) * 1000.0,
        "max": max(values, default=float("nan")) * 1000.0,
    }


def summarize(samples: list[BarSample], opts: E2EOptions) -> dict[str, Any]:
    models = list(samples[0].inference) if samples else []
    latency = stats_ms([s.latency for s in samples])
    lag_inference = max((s.lag_inference for s in samples), default=float("nan"))
    return {
        "series": opts.series, "bars": len(samples), "backend": opts.backend, "models": models,
        "latency_ms": latency,
        "feed_ms": stats_ms([s.feed for s in samples]),
        "sent_to_published_ms": stats_ms([s.sent_to_published for s in samples]),
        "simulator": "own process" if opts.sim_process else "this process",
        "forming_updates": opts.forming_updates,
        "append_ms": stats_ms([s.append for s in samples]),
        "windows_ms": stats_ms([s.windows for s in samples]),
        "publish_ms": stats_ms([s.publish for s in samples]),
        "inference_ms": {m: stats_ms([s.inference[m] for s in samples]) for m in models},
        "predictions_per_bar": {
            m: statistics.median(s.predictions[m] for s in samples) for m in models
        },
        "stepped_per_bar": {m: statistics.median(s.stepped[m] for s in samples) for m in models},
        "prime_ms": {m: stats_ms([s.prime[m] for s in samples]) for m in models},
        "bar_gap_seconds": opts.bar_gap_seconds,
        "latency_observations_per_bar": max((s.observations for s in samples), default=0),
        "lag_inference_max_ms": lag_inference * 1000.0,
        "lag_bar_max_ms": stats_ms([s.lag_bar for s in samples]),
        "targets": {
            "p50_met": latency["p50"] <= LATENCY_P50_TARGET * 1000.0,
            "p99_met": latency["p99"] <= LATENCY_P99_TARGET * 1000.0,
            "lag_met": lag_inference <= LAG_TARGET,
        },
        "per_bar": [
            {"latency_ms": s.latency * 1000.0, "lag_inference_ms": s.lag_inference * 1000.0}
            for s in samples
        ],
    }  # fmt: skip


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def format_e2e(r: dict[str, Any]) -> list[str]:
    """The section's lines of the ``whalecast bench`` table."""
    lat, targets = r["latency_ms"], r["targets"]
    inference = ", ".join(f"{m} {v['p50']:.1f}" for m, v in r["inference_ms"].items())
    per_bar = ", ".join(
        f"{m} {n:g} ({r['stepped_per_bar'][m]:g} stepped)"
        for m, n in r["predictions_per_bar"].items()
    )
    prime = ", ".join(f"{m} {v['p50']:.1f}" for m, v in r["prime_ms"].items())
    sent = r["sent_to_published_ms"]
    return [
        f"end to end: {r['series']} series, models {', '.join(r['models'])}, backend "
        f"{r['backend']}, {r['bars']} bars (start-up {r['startup_seconds']:.0f} s)",
        f"  bar latency ms: p50 {lat['p50']:.1f}, p99 {lat['p99']:.1f}, max {lat['max']:.1f}; "
        f"target p50 <= {LATENCY_P50_TARGET * 1000:g}: {_verdict(targets['p50_met'])}, "
        f"p99 <= {LATENCY_P99_TARGET * 1000:g}: {_verdict(targets['p99_met'])}",
        f"  p50 ms: inference {inference}; store append {r['append_ms']['p50']:.1f}, windows "
        f"{r['windows_ms']['p50']:.2f}; publish {r['publish_ms']['p50']:.1f}; feed (bar sent "
        f"-> last candle in) {r['feed_ms']['p50']:.1f}",
        f"  bar sent -> all published ms: p50 {sent['p50']:.1f}, p99 {sent['p99']:.1f} (the "
        f"simulator in {r['simulator']}, sending {r['forming_updates']} forming updates a "
        "series before each close)",
        f"  event-loop lag during inference: max {r['lag_inference_max_ms']:.1f} ms; target <= "
        f"{LAG_TARGET * 1000:g}: {_verdict(targets['lag_met'])} (whole bar processing: p50 "
        f"{r['lag_bar_max_ms']['p50']:.1f}, max {r['lag_bar_max_ms']['max']:.1f})",
        f"  predictions per bar: {per_bar}",
        _format_floor(r),
        f"  priming between bars (p50 ms, off the critical path): {prime}; bars sent "
        f"{r['bar_gap_seconds']:g} s after the previous one was published",
    ]


def _format_floor(r: dict[str, Any]) -> str:
    floor, factor = r["redis_floor"], r["floor_factor"]
    return (
        f"  Redis floor (its own time for the bar's commands, a Lua loop): store "
        f"{floor['store_ms']:.1f} ms ({floor['store_commands']:.0f} commands, "
        f"{floor['store_us_per_command']:.2f} us each), publish {floor['publish_ms']:.1f} ms "
        f"({floor['publish_commands']:.0f}, {floor['publish_us_per_command']:.2f} us); store "
        f"{factor['store']:.1f}x, publish {factor['publish']:.1f}x, both {factor['both']:.1f}x; "
        f"target <= {FLOOR_FACTOR_TARGET:g}x: {_verdict(factor['target_met'])}"
    )
