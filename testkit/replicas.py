"""Daemon replicas as real ``whalecast run`` processes, the way a StatefulSet runs them.

Each :class:`Replica` is one process with its shard in the environment
(``WHALECAST_SHARD__INDEX`` / ``WHALECAST_SHARD__COUNT``, as the StatefulSet sets
them), its own metrics port, and JSON logs in a file (shown when it fails).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from testkit.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Replica:
    config: Path
    index: int
    count: int
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"replica {self.index}/{self.count}"

    def start(self) -> Replica:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "WHALECAST_SHARD__INDEX": str(self.index),
            "WHALECAST_SHARD__COUNT": str(self.count),
            "WHALECAST_METRICS__PORT": str(self.port),
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "whalecast", "run", "--config", str(self.config)],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"http://127.0.0.1:{self.port}{path}") as response,
        ):
            return response.status, await response.text()

    async def wait_ready(self, timeout_seconds: float = 120.0) -> None:
        """Until ``/readyz`` answers 200 (feeds connected, windows complete, models loaded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while loop.time() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.tail()}"
                )
            try:
                status, _ = await self.get("/readyz")
                if status == 200:
                    return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout_seconds} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: the process dies wherever it is, nothing is drained."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    async def terminate(self, timeout_seconds: float = 30.0) -> int:
        """SIGTERM (what Kubernetes sends): the replica drains and exits; its status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while self.process.poll() is None:
            if loop.time() > deadline:
                self.process.kill()
                raise TimeoutError(f"{self.name} did not stop:\n{self.tail()}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
