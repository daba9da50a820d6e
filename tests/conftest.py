"""Session-wide fixtures: one real redis-server for the run, a clean database per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from testkit.redis_servers import MISSING_TOOL, ClusterServers, RedisServer

# Tests never read the developer's config or secrets.
for _name in [n for n in os.environ if n.upper().startswith("WHALECAST_")]:
    del os.environ[_name]
os.environ["WHALECAST_SECRETS_DIR"] = "/nonexistent-whalecast-secrets"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(directory=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    """A real 3-master Redis Cluster on loopback ports, started once for the run."""
    cluster = ClusterServers(directory=tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: ClusterServers) -> str:
    """URL of one node of the session's Redis Cluster; every node is flushed before the test."""
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
async def cluster_client(redis_cluster_url: str) -> AsyncIterator[RedisCluster]:
    """A redis.asyncio cluster client of the flushed session Cluster, slot map loaded."""
    client = RedisCluster.from_url(redis_cluster_url)
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server; the database is flushed before the test."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client packing commands as the daemon's do (``whalecast.redisconn.connect``)."""
    from whalecast.redisconn import with_fast_packing

    client = with_fast_packing(aioredis.Redis.from_url(redis_url))
    yield client
    await client.aclose()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory (unix socket paths must stay under ~100 bytes)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="wc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def whalecast_image() -> str:
    """The whalecast image, built once for the run by scripts/image.sh (as `make image`)."""
    from tests.container_helpers import build_image, require_podman

    require_podman()
    return build_image()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the checks a missing tool skipped, and the one command that enables them."""
    packages: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        if MISSING_TOOL in reason:
            package = reason.rsplit("Debian package ", 1)[-1].rstrip(")")
            packages[package] = packages.get(package, 0) + 1
    if packages:
        names = " ".join(sorted(packages))
        terminalreporter.write_sep("=", "checks skipped for missing tools", yellow=True)
        terminalreporter.write_line(
            f"{sum(packages.values())} test(s) skipped: {names} not installed. "
            f"Enable them with: sudo apt-get install {names}   (or, as root: ./scripts/bootstrap.sh)"
        )
