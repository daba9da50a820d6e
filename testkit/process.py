"""The daemon as a real process (``python -m whalecast run``), for signal and secret tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from whalecast.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, settings: Settings) -> Path:
    """The settings as a config file (secrets are left out: they come from secret files)."""
    data: dict[str, Any] = settings.model_dump(mode="json", exclude={"training"})
    data["redis"] = {k: v for k, v in data["redis"].items() if k not in ("username", "password")}
    data["whale"].pop("api_key", None)
    data["credentials"] = {}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class DaemonProcess:
    """One ``whalecast run`` child process with its output captured in a file."""

    def __init__(
        self, config: Path, log_path: Path, *, secrets_dir: Path | None = None, metrics_port: int
    ) -> None:
        self.config = config
        self.log_path = log_path
        self.metrics_port = metrics_port
        env = {k: v for k, v in os.environ.items() if not k.startswith("WHALECAST_")}
        env["WHALECAST_SECRETS_DIR"] = str(secrets_dir or "/nonexistent-whalecast-secrets")
        env["PYTHONPATH"] = str(ROOT)
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "whalecast", "run", "--config", str(config)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def problem(self) -> str | None:
        code = self.process.poll()
        return None if code is None else f"daemon process exited with {code}"

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines the daemon wrote (other lines are skipped)."""
        events = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.base_url + path) as reply:
            return reply.status, await reply.text()

    async def metrics_text(self) -> str:
        _status, text = await self.get("/metrics")
        return text

    async def wait_ready(self, timeout_seconds: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the daemon exited:\n{self.output()[-3000:]}")
            try:
                status, _ = await self.get("/readyz")
                if status == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"the daemon was not ready in time:\n{self.output()[-3000:]}")

    async def wait_exit(self, timeout_seconds: float = 60.0) -> int:
        deadline = time.monotonic() + timeout_seconds
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError("the daemon did not exit in time")
            await asyncio.sleep(0.05)
        self._log.flush()
        return int(self.process.returncode)

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@contextlib.asynccontextmanager
async def serving_process(
    argv: list[str],
    log_path: Path,
    ready_url: str,
    *,
    env: dict[str, str] | None = None,
    timeout_seconds: float = 120.0,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process (output in ``log_path``), yielded once GET ``ready_url`` answers 200;
    terminated on exit. Fails with the output's tail if it exits before answering."""
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        async with asyncio.timeout(timeout_seconds), aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None:
                    output = await asyncio.to_thread(log_path.read_text, errors="replace")
                    raise RuntimeError(f"{argv[0]} exited {process.returncode}: {output[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(ready_url) as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
