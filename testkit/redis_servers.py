"""Helpers shared by tests: free ports, real redis-server processes, required tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The Debian package that brings each command the tests run (scripts/bootstrap.sh installs
# them as root; .ci/run always does).
TOOL_PACKAGES = {
    "redis-server": "redis-server",
    "redis-cli": "redis-server",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "systemd-analyze": "systemd",
    "shellcheck": "shellcheck",
}
MISSING_TOOL = "tool not installed:"  # how a skip for a missing tool starts (see conftest)


def require_tool(name: str) -> str:
    """Path of a command-line tool; skip the test locally, fail it in CI, when missing."""
    path = shutil.which(name)
    if path is None:
        package = TOOL_PACKAGES.get(name, name)
        message = f"{MISSING_TOOL} {name} (Debian package {package})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class RedisServer:
    """A real redis-server on a loopback port, started and stopped by the tests."""

    directory: Path
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_seconds: float = 10.0) -> RedisServer:
        binary = require_tool("redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--appendonly", "no", "--logfile", "redis.log", *self.extra_args]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited: {log[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@dataclass
class ClusterServers:
    """A real Redis Cluster of ``masters`` redis-server processes on loopback ports.

    Created with ``redis-cli --cluster create`` (no replicas); :meth:`start` returns when
    every node reports ``cluster_state:ok``.
    """

    directory: Path
    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A URL naming the first node (the cluster client discovers the others)."""
        return self.nodes[0].url

    def start(self, timeout_seconds: float = 30.0) -> ClusterServers:
        cli = require_tool("redis-cli")
        for i in range(self.masters):
            cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                            "--cluster-port", str(free_port()), "--cluster-node-timeout", "5000"]  # fmt: skip
            node = RedisServer(self.directory / f"node{i}", extra_args=cluster_args)
            self.nodes.append(node.start())
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout_seconds,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_seconds
        while not all(self._state_ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        return self

    @staticmethod
    def _state_ok(node: RedisServer) -> bool:
        import redis

        with redis.Redis(port=node.port) as client:
            return bool(client.cluster("info")["cluster_state"] == "ok")

    def flushall(self) -> None:
        import redis

        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def wait_for_subscriber(redis: Any, channel: str, timeout_seconds: float = 30.0) -> None:
    """Until ``channel`` has a subscriber on the server (PUBSUB NUMSUB).

    The marker that a listener is in place, where a test would otherwise pause and hope.
    ``redis`` is an async client or a URL.
    """
    import redis.asyncio as aioredis

    from testkit.polling import wait_until_true

    client = aioredis.Redis.from_url(redis) if isinstance(redis, str) else redis

    async def subscribed() -> bool:
        counts = dict(await client.pubsub_numsub(channel))
        return int(counts.get(channel.encode(), 0)) > 0

    try:
        await wait_until_true(subscribed, timeout_seconds, what=f"a subscriber on {channel}")
    finally:
        if isinstance(redis, str):
            await client.aclose()
