"""``whalecast demo``: the whole product on one machine, with nothing configured.

It starts the embedded Redis and the exchange simulator replaying the shipped
real data (1h candles and Whale Alert exchange flows) on the protocols of the chosen
exchanges (Binance by default; Bybit and OKX too with ``--exchanges``), trains small
direction and volume models if the demo registry has none, runs the daemon
against the simulator, and prints the predictions as they are published.
The replay starts where the small models' held-out test period starts, so
what they predict is data they were not trained on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from whalecast.artifact import REPORT_FILE, baseline_label, read_current, version_dir
from whalecast.settings import LogSettings, Settings, load_settings

DEMO_MODELS = ("direction", "volume")
HOUR_MS = 3_600_000


@dataclass
class DemoOptions:
    bars: int | None = None
    bar_seconds: float = 1.0
    state_dir: Path = Path(".whalecast/demo")
    metrics_port: int = 0
    ui_port: int = 9110
    config: str | None = None
    exchanges: tuple[str, ...] = ("binance",)
    out: TextIO = field(default_factory=lambda: sys.stdout)


def replay_start_ms(test_days: float) -> int:
    """Open time of the first bar of the small models' test period in the shipped slice."""
    from streamer.history import load_candles_csv
    from training.quick import DATA, SLICE

    last = int(load_candles_csv(DATA / SLICE[0])["open_ms"].iloc[-1])
    return last - int(test_days * 24) * HOUR_MS + HOUR_MS


def demo_settings(options: DemoOptions, sim: Any) -> Settings:
    return load_settings(
        options.config,
        log={"level": "WARNING", "format": "console"},
        redis={"url": "embedded", "state_dir": str(options.state_dir / "redis"), "prefix": "whalecast"},
        exchanges=sim.exchange_sections(),
        feed={"clock": "replay", "grace_seconds": min(2.0, options.bar_seconds / 2)},
        whale=sim.whale_section(),
        inference={"registry": str(options.state_dir / "models"), "models": list(DEMO_MODELS),
                   "backend": "tf-function"},
        metrics={"port": options.metrics_port, "status_seconds": 1.0},
        ui={"port": options.ui_port},
    )  # fmt: skip


def ensure_models(settings: Settings, out: TextIO) -> None:
    """Train small models when the registry has none in service (progress on ``out``)."""
    registry = settings.inference.registry
    missing = [m for m in DEMO_MODELS if read_current(registry, m) is None]
    if not missing:
        print(f"models in service from {registry}: " + ", ".join(
            f"{m} {read_current(registry, m)}" for m in DEMO_MODELS), file=out)  # fmt: skip
        return
    from training.quick import train_quick

    started = time.monotonic()
    print(f"no model in {registry}: training small {', '.join(missing)} models "
          "on the shipped slice (about a minute)", file=out)  # fmt: skip
    # no daemon runs yet to notify: it reads CURRENT when it starts
    train_quick(settings, registry, missing, publish=False,
                progress=lambda m: print(f"  {m}", file=out, flush=True))  # fmt: skip
    print(f"  trained in {time.monotonic() - started:.0f} s", file=out)
    for model in missing:
        if read_current(registry, model) is None:
            print(f"  {model}: nothing beat the strong baseline on the slice's test period; "
                  "no model of it is served", file=out)  # fmt: skip


class Table:
    """Prints one line per series and bar once both models' values are in.

    ``bars`` holds the bars whose every series (``series_count``) has been printed.
    """

    def __init__(
        self, out: TextIO, series_count: int, models: tuple[str, ...] = DEMO_MODELS
    ) -> None:
        self.out = out
        self.series_count = series_count
        self.models = models  # the models in service: a row waits for each of them
        self.rows: dict[tuple[str, int], dict[str, Any]] = defaultdict(dict)
        self.printed: Counter[int] = Counter()
        self.bars: set[int] = set()
        self.latencies: list[float] = []
        self.count = 0

    def header(self) -> None:
        print(f"{'series':<22} {'bar (UTC)':<17} {'p_up_next':>9} {'next_volume':>13} {'latency':>9}",
              file=self.out)  # fmt: skip

    def add(self, message: dict[str, Any]) -> None:
        self.count += 1
        self.latencies.append(float(message["latency_ms"]))
        key = (f"{message['exchange']}:{message['symbol']}", int(message["bar_open_ms"]))
        row = self.rows[key]
        row[message["model"]] = message["value"]
        row["latency"] = max(row.get("latency", 0.0), float(message["latency_ms"]))
        if all(m in row for m in self.models):
            self.printed[key[1]] += 1
            if self.printed[key[1]] == self.series_count:
                self.bars.add(key[1])
            bar = datetime.fromtimestamp(key[1] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
            p_up = f"{row['direction']:>9.3f}" if "direction" in row else f"{'–':>9}"
            volume = f"{row['volume']:>13,.1f}" if "volume" in row else f"{'–':>13}"
            print(f"{key[0]:<22} {bar:<17} {p_up} {volume} {row['latency']:>7.1f}ms",
                  file=self.out, flush=True)  # fmt: skip
            del self.rows[key]


async def _follow(
    daemon: Any, table: Table, options: DemoOptions, sim: Any, stop: asyncio.Event
) -> None:
    pubsub = daemon.redis.pubsub()
    await pubsub.subscribe(daemon.keys.predictions_channel)
    try:
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            table.add(json.loads(message["data"]))
            if options.bars is not None and len(table.bars) >= options.bars:
                break
            if sim.market.finished and not table.rows:
                break
    finally:
        stop.set()
        await pubsub.aclose()


def held_out(registry: Path, model: str) -> str | None:
    """What the version in service scored on its held-out test period, beside the strong
    baseline, and why it was promoted (from its ``report.json``)."""
    version = read_current(registry, model)
    if version is None:
        return None
    try:
        report = json.loads((version_dir(registry, model, version) / REPORT_FILE).read_text())
        promotion = report["promotion"]
    except (OSError, ValueError, KeyError):
        return f"{model}: serving {version} (no report)"
    baseline = report.get("baseline")
    what = baseline_label(baseline) if baseline else "network"
    metric = promotion["metric"]
    return (
        f"{model}: serving {version} ({what}); held-out {metric} {promotion['new']:.4f} vs "
        f"{promotion['baseline_name']} {promotion['baseline']:.4f} ({promotion['reason']})"
    )


def summary(table: Table, daemon: Any, out: TextIO) -> None:
    lat = sorted(table.latencies) or [0.0]
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"\n{len(table.bars)} bars, {table.count} predictions; latency median "
          f"{statistics.median(lat):.1f} ms, p99 {p99:.1f} ms", file=out)  # fmt: skip
    for model in DEMO_MODELS:
        score = daemon.scorer.rolling(model)
        what = "live direction accuracy" if model == "direction" else "live log-volume MAE"
        scored = int(daemon.metrics.live_scored.labels(model)._value.get())
        if score is not None:
            print(f"{model}: {what} {score:.3f} over {scored} scored predictions", file=out)
    for model in DEMO_MODELS:
        line = held_out(daemon.settings.inference.registry, model)
        if line is not None:
            print(line, file=out)


async def _drive(daemon: Any, sim: Any, options: DemoOptions, stop: asyncio.Event) -> None:
    """Play one bar every ``bar_seconds`` once the daemon is warm, until history ends."""
    while not daemon.readiness().ready:  # noqa: ASYNC110 - readiness is polled state
        await asyncio.sleep(0.05)
    while await sim.advance(bars=1):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), options.bar_seconds)
        if stop.is_set():
            break


async def start_ui(settings: Settings, redis: Any) -> Any:
    """The web page on ``ui.port``, or on any free port when that one is taken."""
    from whalecast.ui.runner import UiRunner

    try:
        return await UiRunner(settings, redis).start()
    except OSError:
        ui = settings.ui.model_copy(update={"port": 0})
        return await UiRunner(settings.model_copy(update={"ui": ui}), redis).start()


async def run_demo(options: DemoOptions) -> int:
    from inference.lifecycle import install_signal_handlers, serve
    from streamer.simulator import Simulator, SimulatorConfig
    from training.quick import QUICK_TRAINING
    from whalecast.logs import configure_logging
    from whalecast.metrics import Metrics

    configure_logging(LogSettings(level="WARNING", format="console"))
    start_ms = replay_start_ms(float(QUICK_TRAINING["test_days"]))
    sim = Simulator(
        SimulatorConfig(bar_seconds=None, start_ms=start_ms, exchanges=options.exchanges)
    )
    await sim.start()
    try:
        settings = demo_settings(options, sim)
        configure_logging(settings.log)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing chatter while training
        await asyncio.to_thread(ensure_models, settings, options.out)
        registry = settings.inference.registry
        served = tuple(m for m in DEMO_MODELS if read_current(registry, m) is not None)
        if not served:
            print("no model to serve", file=options.out)
            return 1
        # only what is in service: the daemon is ready when each configured model is
        inference = settings.inference.model_copy(update={"models": list(served)})
        settings = settings.model_copy(update={"inference": inference})
        print(f"replaying {', '.join(sim.symbols)} 1h on {', '.join(sim.exchanges)} from "
              f"{datetime.fromtimestamp(start_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC, "
              f"one bar every {options.bar_seconds:g} s", file=options.out)  # fmt: skip
        stop = asyncio.Event()
        install_signal_handlers(stop)
        table = Table(options.out, len(sim.symbols) * len(sim.exchanges), served)
        holder: dict[str, Any] = {}

        async def started(daemon: Any) -> None:
            holder["daemon"] = daemon
            holder["ui"] = ui = await start_ui(settings, daemon.redis)
            print(f"daemon up; metrics on http://{settings.metrics.host}:{daemon.http.port}/metrics",
                  file=options.out)  # fmt: skip
            print(
                f"web page: {ui.url} (live; open it in a browser)\n", file=options.out, flush=True
            )
            table.header()
            holder["task"] = asyncio.create_task(_follow(daemon, table, options, sim, stop))
            holder["driver"] = asyncio.create_task(_drive(daemon, sim, options, stop))

        async def stopping() -> None:  # before the daemon stops and Redis goes with it
            if "ui" in holder:
                await holder["ui"].stop()
            for task in (holder.get("task"), holder.get("driver")):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

        await serve(settings, Metrics(), stop, on_started=started, on_stopping=stopping)
        if "daemon" in holder:
            summary(table, holder["daemon"], options.out)
    finally:
        await sim.stop()
    return 0
