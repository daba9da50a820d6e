"""Serving as its own process: start-up time and memory of ``whalecast run`` per backend.

For each backend the daemon runs as a child process (``python -m whalecast run``; with
``--python`` the interpreter of another install, such as a serving-only one from
``requirements/serve.txt``) against a private redis-server and the simulator with
``--series`` synthetic series (both in this process), serving the benchmark's two
models (``direction-deep`` and ``volume``, random weights, with their ONNX graphs).
Redis is emptied between backends, so each starts from the same state. Measured:

- start to ready: from spawning the process to its ``daemon started`` line (imports,
  settings, Redis, the store's load, every model loaded and checked against its
  reference, the HTTP server up; the feeds' backfill runs after it), and the CPU
  time the process had used by then (on a busy machine, wall time waits for a core);
- start to the first bar's predictions: spawning to every series' predictions of the
  first bar stepped after ``/readyz`` answered 200 (includes the backfill);
- RSS of the process after ``--bars`` bars were published for every series (``VmRSS``)
  and its peak (``VmHWM``);
- the model runtimes the process loaded (the start-up line's ``frameworks``).

    python -m benchmarks.bench_serve --series 1000 --bars 5
    python -m benchmarks.bench_serve --backends onnx --python /path/to/serve-venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.bench_e2e import E2EOptions, bench_settings, embedded_redis
from benchmarks.bench_memory import report_json
from streamer.simulator import Simulator, SimulatorConfig
from whalecast.domain import timeframe_ms
from whalecast.keys import STREAM_FIELD, Keys
from whalecast.redisconn import connect
from whalecast.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, settings: Settings, backend: str, port: int) -> Path:
    data: dict[str, Any] = settings.model_dump(mode="json", exclude={"training"})
    data["redis"] = {k: v for k, v in data["redis"].items() if k not in ("username", "password")}
    data["credentials"] = {}
    key = settings.whale.api_key  # the simulator's test key (dumped masked above)
    data["whale"]["api_key"] = key.get_secret_value() if key is not None else None
    data["inference"]["backend"] = backend
    data["metrics"]["port"] = port
    data["log"] = {"level": "INFO", "format": "json"}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return found


class Daemon:
    """``whalecast run`` as a child process, its JSON log in a file."""

    def __init__(self, python: str, config: Path, log: Path, port: int) -> None:
        self.log, self.port = log, port
        env = {k: v for k, v in os.environ.items() if not k.startswith("WHALECAST_")}
        env["WHALECAST_SECRETS_DIR"] = "/nonexistent-whalecast-secrets"
        self._out = log.open("ab")
        self.spawned = time.monotonic()
        self.process = subprocess.Popen(
            [python, "-m", "whalecast", "run", "--config", str(config)],
            cwd=ROOT if python == sys.executable else "/", env=env,
            stdout=self._out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in events(self.log) if e.get("event") == name), None)

    async def wait_event(self, name: str, limit: float) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(limit):
            while (found := self.event(name)) is None:
                self._check()
                await asyncio.sleep(0.02)
        return time.monotonic() - self.spawned, found

    async def wait_ready(self, limit: float) -> None:
        url = f"http://127.0.0.1:{self.port}/readyz"
        async with asyncio.timeout(limit), aiohttp.ClientSession() as session:
            while True:
                self._check()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as reply:
                        if reply.status == 200:
                            return
                await asyncio.sleep(0.2)

    def _check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the daemon exited {self.process.returncode}: {tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._out.close()


class Predictions:
    """Counts the prediction messages of each bar in the prediction stream (polled)."""

    def __init__(self, redis: Any, stream: str) -> None:
        self.redis, self.stream = redis, stream
        self.per_bar: dict[int, int] = {}
        self.last_id = "0-0"

    async def read(self) -> None:
        while entries := await self.redis.xrange(self.stream, f"({self.last_id}", "+", 5000):
            for entry_id, fields in entries:
                bar = json.loads(fields[STREAM_FIELD.encode()])["bar_open_ms"]
                self.per_bar[bar] = self.per_bar.get(bar, 0) + 1
                self.last_id = entry_id.decode()

    async def wait_bar(self, bar: int, count: int, limit: float) -> None:
        async with asyncio.timeout(limit):
            while True:
                await self.read()
                if self.per_bar.get(bar, 0) >= count:
                    return
                await asyncio.sleep(0.05)


async def serve_once(
    args: argparse.Namespace, backend: str, sim: Simulator, settings: Settings, workdir: Path
) -> dict[str, Any]:
    redis = connect(settings.redis, settings.redis.url)
    await redis.flushall()
    port = free_port()
    config = write_config(workdir / f"{backend}.yml", settings, backend, port)
    expected = args.series * len(settings.inference.models)
    bar_ms = timeframe_ms(sim.timeframe)
    preds = Predictions(redis, Keys(settings.redis.prefix).predictions_stream)
    daemon = Daemon(args.python, config, workdir / f"{backend}.log", port)
    try:
        ready_s, started = await daemon.wait_event("daemon started", args.limit)
        at_start = proc_status(daemon.process.pid)
        cpu_at_start = cpu_seconds(daemon.process.pid)
        await daemon.wait_ready(args.limit)
        readyz_s = time.monotonic() - daemon.spawned
        first_s = None
        for _ in range(args.bars):
            forming = sim.now_ms - sim.now_ms % bar_ms
            await sim.advance(1)
            await preds.wait_bar(forming, expected, args.limit)
            first_s = first_s or round(time.monotonic() - daemon.spawned, 2)
        memory = proc_status(daemon.process.pid)
        loads = [
            e
            for e in events(daemon.log)
            if str(e.get("event", "")).startswith("model version loaded")
        ]
    finally:
        daemon.stop()
        await redis.aclose()
        if args.logs:
            shutil.copy(daemon.log, Path(args.logs) / daemon.log.name)
    return {
        "backend": backend,
        "python": args.python,
        "start_to_ready_seconds": round(ready_s, 2),
        "daemon_startup_seconds": started.get("startup_seconds"),  # of which after the imports
        # CPU time to ready: what start to ready costs, less the waits of a busy machine
        "cpu_seconds_to_ready": cpu_at_start,
        "model_load_seconds": {e["model"]: e["seconds"] for e in loads},
        "frameworks": started.get("frameworks"),
        "incremental": {e["model"]: e.get("incremental") for e in loads},
        "start_to_readyz_seconds": round(readyz_s, 2),
        "start_to_first_bar_published_seconds": first_s,
        "bars": args.bars,
        "rss_at_ready_mib": at_start.get("VmRSS"),
        "rss_mib": memory.get("VmRSS"),
        "rss_peak_mib": memory.get("VmHWM"),
    }


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    config = SimulatorConfig(
        synthetic=args.series, bar_seconds=None, forming_updates=2,
        synthetic_bars=300 + len(args.backends) * (args.bars + 2), history_bars=250,
    )  # fmt: skip
    results = []
    with embedded_redis(workdir) as server:
        async with Simulator(config) as sim:
            settings = bench_settings(sim, server.url, workdir / "registry", E2EOptions())
            for backend in args.backends:
                results.append(await serve_once(args, backend, sim, settings, workdir))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return {
        "benchmark": "serve",
        "series": args.series,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_end": os.getloadavg(),
        },
        "runs": results,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["onnx", "tf-function"])
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that runs the daemon (default: this one)")  # fmt: skip
    parser.add_argument("--limit", type=float, default=600.0, help="seconds per wait")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--logs", metavar="DIR", help="keep each daemon's JSON log here")
    report_json(run, parser.parse_args(argv), "wcs-")


if __name__ == "__main__":
    main()
