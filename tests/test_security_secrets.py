"""Secrets never leave the process, and the daemon listens on its one configured address.

A real ``whalecast run`` (JSON logs at DEBUG) runs with planted secret values: the Redis
user and password of a confined ACL user, the Whale Alert key and an exchange key and
secret, all from secret files. It runs, reconnects through faults (its error paths log
exceptions), is scraped, and stops. Then ``check-config`` prints the settings, and a run
with a wrong Redis password fails. None of that output holds any planted value.
"""

# ruff: noqa: F401, F811 - the registry fixture comes from testkit.faults

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from streamer.simulator import Simulator, SimulatorConfig
from testkit.faults import Invariant, advance, fault_settings, registry
from testkit.process import ROOT, DaemonProcess, write_config
from testkit.redis_servers import free_port
from tests.security_helpers import AclRedis

pytestmark = [pytest.mark.redis, pytest.mark.tf, pytest.mark.slow]

PLANTED = {name: f"{name}-{secrets.token_hex(10)}" for name in (
    "redis_username", "redis_password", "whale_api_key", "exchange_binance_api_key",
    "exchange_binance_secret",
)}  # fmt: skip


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(
        bar_seconds=None, history_bars=120, whale_api_key=PLANTED["whale_api_key"]
    )
    simulator = Simulator(config)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    server = AclRedis(
        tmp_path / "redis", user=PLANTED["redis_username"], password=PLANTED["redis_password"]
    )
    server.server.start()
    yield server
    server.server.stop()


def secrets_dir(directory: Path, **changes: str) -> Path:
    directory.mkdir()
    for name, value in {**PLANTED, **changes}.items():
        (directory / name).write_text(value + "\n")
    return directory


def listening(pid: int) -> list[tuple[str, int]]:
    """The TCP addresses process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found.append((_address(address), int(port, 16)))
    return found


def _address(hex_address: str) -> str:
    if len(hex_address) == 8:
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_address)[::-1])
    words = bytes.fromhex(hex_address)
    return socket.inet_ntop(
        socket.AF_INET6, b"".join(words[i : i + 4][::-1] for i in range(0, 16, 4))
    )


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return False
    except OSError:
        return True


def other_addresses() -> list[str]:
    """Addresses of this host that are not 127.0.0.1 (another loopback one always)."""
    try:
        found = socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        found = []
    return sorted({"127.0.0.2", *found} - {"127.0.0.1"})


def cli(*args: str, secrets_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "WHALECAST_SECRETS_DIR": str(secrets_path),
    }
    return subprocess.run(
        [sys.executable, "-m", "whalecast", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


async def test_no_secret_in_logs_metrics_errors_or_check_config(
    sim: Simulator, registry: Path, acl_redis: AclRedis, tmp_path: Path
) -> None:
    await acl_redis.set_user()
    port = free_port()
    settings = fault_settings(
        sim, acl_redis.server.url, registry,
        metrics={"port": port}, log={"level": "DEBUG", "format": "json"},
    )  # fmt: skip
    config = write_config(tmp_path / "config.yml", settings)
    assert not any(v in config.read_text() for v in PLANTED.values())
    good = secrets_dir(tmp_path / "secrets")
    daemon = DaemonProcess(config, tmp_path / "daemon.log", secrets_dir=good, metrics_port=port)
    outputs: dict[str, str] = {}
    try:
        invariant = Invariant(sim, acl_redis.server.url,
                              redis_kwargs={"password": acl_redis.admin_password})  # fmt: skip
        invariant.daemon_started()
        await daemon.wait_ready()
        await advance(sim)
        await invariant.check(daemon.metrics_text, daemon.problem)
        metrics = await daemon.metrics_text()
        assert 'whalecast_feed_connected{exchange="whale",feed="alerts"} 1.0' in metrics

        # error paths: connections dropped and refused, so exceptions get logged
        await sim.faults.whale_down(1.0)
        sim.faults.refuse(1.0)
        await sim.faults.drop_connections()
        await advance(sim)
        await invariant.check(daemon.metrics_text, daemon.problem)

        # the HTTP server: on 127.0.0.1 only, nothing else listening
        assert listening(daemon.process.pid) == [("127.0.0.1", port)]
        for address in other_addresses():
            assert refused(address, port), address
        for path in ("/metrics", "/healthz", "/readyz", "/", "/debug", "/metrics/../config"):
            status, body = await daemon.get(path)
            outputs[f"GET {path}"] = body
            assert (status == 200) == (path in ("/metrics", "/healthz", "/readyz")), path

        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit() == 0
    finally:
        daemon.close()
    outputs["daemon"] = daemon.output()
    events = {e["event"]: e for e in daemon.log_events()}
    assert events["whale feed reconnecting"]["error"]  # the error paths did log

    checked = cli("check-config", "--config", str(config), secrets_path=good)
    assert checked.returncode == 0, checked.stderr
    assert '"password": "**********"' in checked.stdout
    outputs["check-config"] = checked.stdout + checked.stderr

    wrong = secrets_dir(tmp_path / "wrong", redis_password="wrong-" + secrets.token_hex(8))
    failed = cli("run", "--config", str(config), secrets_path=wrong)
    assert failed.returncode == 1
    lines = [line for line in failed.stderr.splitlines() if line.startswith("whalecast: ")]
    assert len(lines) == 1 and "refused the configured credentials" in lines[0], failed.stderr
    assert "Traceback" not in failed.stderr + failed.stdout
    outputs["wrong password run"] = failed.stdout + failed.stderr
    assert (tmp_path / "wrong" / "redis_password").read_text().strip() not in failed.stderr

    for where, text in outputs.items():
        for name, value in PLANTED.items():
            assert value not in text, f"{name} appears in {where}"
