"""Signals to a real daemon process (``python -m whalecast run``) fed by the simulator.

SIGTERM while a bar is being predicted: the bar in flight is published, the process
exits 0. SIGKILL, bars closing while it is down, then a restart: the state comes back
from Redis, the missed bars from REST, and nothing is stored or predicted twice.

The direction model here is deliberately slow (a wide LSTM over 64 series: about a
second per bar on two cores, with incremental steps off so every bar runs full
windows) so the signal lands while the forward pass runs.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from streamer.features import FEATURE_NAMES
from streamer.simulator import Simulator, SimulatorConfig
from testkit.faults import Invariant, advance, connect_plain, fault_settings
from testkit.models import preprocess_for, small_model, write_model
from testkit.process import DaemonProcess, write_config
from testkit.redis_servers import free_port
from whalecast.keys import Keys

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

SERIES = 64
STOP_EVENT = "stop requested, finishing the bar in flight"


@pytest.fixture(scope="module")
def slow_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    registry = tmp_path_factory.mktemp("registry")
    keras.utils.set_random_seed(3)
    wide = keras.Sequential(
        [keras.Input((24, len(FEATURE_NAMES))), keras.layers.LSTM(768),
         keras.layers.Dense(1, activation="sigmoid")]
    )  # fmt: skip
    write_model(registry, "direction", wide, preprocess_for(FEATURE_NAMES))
    write_model(
        registry, "volume", small_model(24, 1, seed=1),
        preprocess_for(["log_volume"], target="next_bar_volume", target_transform="log1p",
                       target_scaler={"mean": [5.0], "scale": [1.0]}),
    )  # fmt: skip
    return registry


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(
        SimulatorConfig(synthetic=SERIES, synthetic_bars=400, history_bars=120, bar_seconds=None)
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
def config(sim: Simulator, slow_registry: Path, redis_url: str, tmp_path: Path) -> Path:
    settings = fault_settings(
        sim, redis_url, slow_registry,
        metrics={"port": free_port()}, log={"level": "INFO", "format": "json"},
        inference={"shutdown_grace_seconds": 60.0, "incremental": False},
    )  # fmt: skip
    return write_config(tmp_path / "config.yml", settings)


@pytest.fixture
def secrets(sim: Simulator, tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "whale_api_key").write_text(sim.config.whale_api_key)
    return directory


class Launcher:
    """Starts daemon processes on one config; kills what is left at the end."""

    def __init__(self, config: Path, secrets: Path, tmp_path: Path) -> None:
        import yaml

        self.config, self.secrets, self.tmp_path = config, secrets, tmp_path
        self.port = int(yaml.safe_load(config.read_text())["metrics"]["port"])
        self.started: list[DaemonProcess] = []

    def start(self) -> DaemonProcess:
        log = self.tmp_path / f"daemon-{len(self.started)}.log"
        process = DaemonProcess(self.config, log, secrets_dir=self.secrets, metrics_port=self.port)
        self.started.append(process)
        return process


@pytest.fixture
def launcher(config: Path, secrets: Path, tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(config, secrets, tmp_path)
    yield launcher
    for process in launcher.started:
        process.close()


async def check_process(invariant: Invariant, process: DaemonProcess, alive: bool = True) -> object:
    async def scrape() -> str:
        return await process.metrics_text() if alive else ""

    return await invariant.check(scrape, process.problem if alive else lambda: None)


async def wait_stored(sim: Simulator, redis_url: str) -> None:
    """Until every series' newest closed bar is in Redis (the bar loop is predicting it)."""
    import asyncio

    keys = Keys("wc")
    want = sim.now_ms - sim.market.bar_ms
    client = connect_plain(redis_url)
    try:
        async with asyncio.timeout(30):
            while True:
                pipe = client.pipeline(transaction=False)
                for symbol in sim.symbols:
                    pipe.hget(keys.meta(_series(sim, symbol)), "last_open_ms")
                if all(v is not None and int(v) == want for v in await pipe.execute()):
                    return
                await asyncio.sleep(0.01)
    finally:
        await client.aclose()


def _series(sim: Simulator, symbol: str) -> object:
    from whalecast.domain import Series

    return Series("binance", symbol, sim.timeframe)


async def test_sigkill_restart_then_sigterm_while_predicting(
    sim: Simulator, redis_url: str, launcher: Launcher
) -> None:
    invariant = Invariant(sim, redis_url)
    first = launcher.start()
    invariant.daemon_started()
    await first.wait_ready()
    await check_process(invariant, first)
    await advance(sim)
    await check_process(invariant, first)

    # SIGKILL: nothing is flushed; bars close while no daemon runs
    first.signal(signal.SIGKILL)
    assert await first.wait_exit() == -signal.SIGKILL
    invariant.daemon_stopped()
    await advance(sim, 3)

    # restart: windows from Redis, the three missed bars over REST, nothing twice
    second = launcher.start()
    invariant.daemon_started()
    await second.wait_ready()
    await check_process(invariant, second)  # the backfill is in before the next bar closes
    await advance(sim)
    await check_process(invariant, second)

    # SIGTERM while the next bar is being predicted: it is published, the exit status is 0
    await advance(sim)
    await wait_stored(sim, redis_url)
    second.signal(signal.SIGTERM)
    assert await second.wait_exit() == 0
    invariant.daemon_stopped()
    outcome = await check_process(invariant, second, alive=False)
    # before the kill: the bar that had just closed and one more; after the restart: the
    # bar that had just closed (the other two missed ones are history), then two
    outcome.assert_all_predicted(SERIES, bars=2 + 3)  # type: ignore[attr-defined]

    events = [e["event"] for e in second.log_events()]
    last_bar = len(events) - 1 - events[::-1].index("bar")
    assert events.index(STOP_EVENT) < last_bar, "the signal came after the bar was done"
    stopped = [e for e in second.log_events() if e["event"] == "daemon stopped"]
    assert stopped and stopped[-1]["drained"] is True
