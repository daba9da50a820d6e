"""``whalecast run --shards N``: several daemon processes on one machine, one shard each.

The rules (each shard's environment, the parent's exit status) are pure and checked
here in milliseconds; the processes are real: ``whalecast run --shards 2`` against the
exchange simulator and a real Redis publishes every series, model and bar exactly
once, drains both children on SIGTERM, and when a child dies the parent stops the
other and exits with the child's status.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer.simulator import Simulator
from testkit.daemon import Subscriber, daemon_config, http_get, write_demo_models
from testkit.polling import wait_until, wait_until_true
from testkit.replicas import ROOT, write_config
from testkit.simulator import synthetic_simulator
from whalecast.schema import Prediction
from whalecast.supervisor import exit_status, shard_environment

SYMBOLS = 6
MODELS = ("direction", "volume")


def test_each_shard_gets_its_index_count_and_metrics_port() -> None:
    base = {"PATH": "/bin", "WHALECAST_SHARD__INDEX_FROM_HOSTNAME": "true"}
    env = shard_environment(base, 1, 3, 9108)
    assert env["WHALECAST_SHARD__INDEX"] == "1" and env["WHALECAST_SHARD__COUNT"] == "3"
    assert env["WHALECAST_SHARD__INDEX_FROM_HOSTNAME"] == "false"
    assert env["WHALECAST_METRICS__PORT"] == "9109" and env["PATH"] == "/bin"
    assert base == {"PATH": "/bin", "WHALECAST_SHARD__INDEX_FROM_HOSTNAME": "true"}
    # port 0 (any free port) stays with each child's own choice
    assert "WHALECAST_METRICS__PORT" not in shard_environment({}, 2, 3, 0)


def test_exit_status_is_zero_only_for_a_requested_clean_stop() -> None:
    assert exit_status([0, 0], stop_requested=True) == 0
    assert exit_status([0, 0], stop_requested=False) == 1  # a daemon never ends by itself
    assert exit_status([0, 3], stop_requested=True) == 3
    assert exit_status([-9, 0], stop_requested=False) == 137  # killed by SIGKILL
    assert exit_status([None, 0], stop_requested=True) == 1  # killed after the stop timeout


def test_shards_cannot_be_combined_with_a_shard_count(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml", {"shard": {"count": 2}})
    result = subprocess.run(
        [sys.executable, "-m", "whalecast", "run", "--shards", "2", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--shards" in result.stderr and "shard.count" in result.stderr


def two_free_ports() -> int:
    """A port ``p`` with ``p + 1`` free too (shard i serves /metrics on port + i)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with synthetic_simulator(SYMBOLS) as simulator:
        yield simulator


class Shards:
    """``whalecast run --shards 2`` as a process, its JSON log lines in a file."""

    def __init__(self, config: Path, log_path: Path, port: int) -> None:
        self.log_path, self.port = log_path, port
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "whalecast", "run", "--shards", "2", "--config", str(config)],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                out.append(record)
        return out

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    async def ready(self) -> None:
        async def both_ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.tail()}")
            try:
                answers = [await http_get(self.port + i, "/readyz") for i in (0, 1)]
            except (OSError, aiohttp.ClientError):
                # nothing listening yet; or, the port being in the ephemeral range, the
                # kernel connected the probe to itself and it read back its own request
                return False
            return all(status == 200 for status, _ in answers)

        await wait_until_true(
            both_ready, timeout_seconds=180, what=lambda: f"both shards ready\n{self.tail()}"
        )

    async def exited(self, timeout_seconds: float = 60.0) -> int:
        await wait_until(lambda: self.process.poll() is not None, timeout_seconds,
                         what=lambda: f"the parent to exit\n{self.tail()}")  # fmt: skip
        return self.process.returncode


@contextmanager
def cleaned_up(shards: list[Shards]) -> Iterator[None]:
    try:
        yield
    finally:
        for s in shards:
            if s.process.poll() is None:
                s.process.kill()
                s.process.wait(10)
            for record in s.events("shard started"):  # children of a killed parent
                with suppress(ProcessLookupError):
                    os.kill(int(record["pid"]), signal.SIGKILL)


@asynccontextmanager
async def started(
    sim: Simulator, redis_url: str, tmp_path: Path, name: str
) -> AsyncIterator[Shards]:
    port = two_free_ports()
    config = daemon_config(
        sim, redis_url, tmp_path / "registry", whale={"enabled": False},
        log={"format": "json"}, metrics={"port": port}, redis={"url": redis_url, "prefix": name},
    )  # fmt: skip
    shards = Shards(write_config(tmp_path / f"{name}.yml", config), tmp_path / f"{name}.log", port)
    with cleaned_up([shards]):
        await shards.ready()
        yield shards


def owned(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith("whalecast_series_owned"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("whalecast_series_owned not exported")


@pytest.mark.redis
@pytest.mark.tf
@pytest.mark.slow
async def test_two_shards_publish_every_series_once_and_drain_on_sigterm(
    sim: Simulator, redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    write_demo_models(tmp_path / "registry")
    per_bar = SYMBOLS * len(MODELS)
    async with (
        Subscriber(redis_client, "a:predictions") as sub,
        started(sim, redis_url, tmp_path, "a") as shards,
    ):
        split = [owned((await http_get(shards.port + i, "/metrics"))[1]) for i in (0, 1)]
        assert sum(split) == SYMBOLS and min(split) > 0, split
        await sub.wait_for(per_bar, timeout_seconds=60)  # the bar that had just closed
        for bar in (2, 3):
            await wait_until(lambda: sim.clocks_behind() == 0, what="every replay clock")
            await sim.advance(bars=1)
            await sub.wait_for(bar * per_bar, timeout_seconds=60)
        shards.process.send_signal(signal.SIGTERM)
        assert await shards.exited() == 0, shards.tail()
        await sub.drained()
        messages = list(sub.messages)
    seen = Counter(
        (p.symbol, p.model, p.bar_open_ms)
        for p in (Prediction.parse(json.dumps(m)) for m in messages)
    )
    bars = [b[0] for b in sim.closed_bars(sim.symbols[0])][-3:]
    assert seen == {(s, m, b): 1 for s in sim.symbols for m in MODELS for b in bars}
    assert len(shards.events("shard started")) == 2
    assert shards.events("shards stopped")[0]["statuses"] == [0, 0]


@pytest.mark.redis
@pytest.mark.tf
@pytest.mark.slow
async def test_a_dead_shard_stops_the_others_and_the_parent_fails(
    sim: Simulator, redis_url: str, tmp_path: Path
) -> None:
    write_demo_models(tmp_path / "registry")
    async with started(sim, redis_url, tmp_path, "b") as shards:
        children = {r["shard"]: int(r["pid"]) for r in shards.events("shard started")}
        os.kill(children[1], signal.SIGKILL)
        assert await shards.exited() == 128 + signal.SIGKILL, shards.tail()
        [stopped] = shards.events("shards stopped")
        assert stopped["statuses"] == [0, -signal.SIGKILL]  # shard 0 drained and exited 0
        assert shards.events("shard exited on its own, stopping the others")[0]["shard"] == 1
        with pytest.raises(ProcessLookupError):
            os.kill(children[0], 0)
