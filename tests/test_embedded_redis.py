"""The embedded redis-server (start, persistence across restarts, clean stop, missing
binary) and the clients ``connect`` gives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.connection import Connection

from testkit.redis_servers import require_tool
from whalecast.redisconn import (
    EmbeddedRedis,
    EmbeddedRedisError,
    RedisHandle,
    connect,
    run_script_pipeline,
)
from whalecast.settings import RedisSettings


def test_start_persist_restart_stop(short_tmp: Path) -> None:
    require_tool("redis-server")
    state = short_tmp / "state"
    with EmbeddedRedis(state) as server:
        assert server.socket_path.exists()
        with redis.Redis(unix_socket_path=str(server.socket_path)) as client:
            client.set("whalecast:probe", b"kept")
            assert client.config_get("appendonly")["appendonly"] == "yes"
        process = server.process
    assert process is not None and process.poll() is not None, "stopped on exit"
    assert not (state / "redis.sock").exists()

    with (
        EmbeddedRedis(state) as server,
        redis.Redis(unix_socket_path=str(server.socket_path)) as client,
    ):
        assert client.get("whalecast:probe") == b"kept"


async def test_handle_gives_working_client(short_tmp: Path) -> None:
    require_tool("redis-server")
    settings = RedisSettings(url="embedded", state_dir=short_tmp / "s")
    handle = RedisHandle(settings)
    async with handle as client:
        assert await client.ping()
        embedded = handle.embedded
    assert embedded is not None and embedded.process is None


def test_server_is_out_of_the_terminals_reach(short_tmp: Path) -> None:
    """Ctrl-C signals the terminal's whole foreground process group: the server is in its
    own, so only whalecast gets the signal and stops it after draining."""
    require_tool("redis-server")
    with EmbeddedRedis(short_tmp / "s") as server:
        assert server.process is not None
        assert os.getpgid(server.process.pid) == server.process.pid != os.getpgid(0)


def test_second_server_on_same_state_refused(short_tmp: Path) -> None:
    require_tool("redis-server")
    with EmbeddedRedis(short_tmp / "s"), pytest.raises(EmbeddedRedisError, match="already serves"):
        EmbeddedRedis(short_tmp / "s").start()


def test_missing_binary_names_install_command(short_tmp: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="apt-get install redis-server"):
        EmbeddedRedis(short_tmp / "s", binary="redis-server-that-does-not-exist").start()


def test_too_long_state_dir_refused(tmp_path: Path) -> None:
    require_tool("redis-server")
    with pytest.raises(EmbeddedRedisError, match="too long"):
        EmbeddedRedis(tmp_path / ("x" * 120)).start()


async def test_connect_packs_like_redis_py_and_reloads_lost_scripts(redis_url: str) -> None:
    client = connect(RedisSettings(url=redis_url))
    try:
        connection_class = client.connection_pool.connection_class
        assert connection_class.pack_command is not Connection.pack_command  # hiredis packs
        packed = connection_class().pack_command
        plain = Connection().pack_command
        for args in [("SET", "k", b"\x00\xff", 12, 1.5), ("CONFIG GET", "maxmemory"),
                     ("HSET", "h", "é", memoryview(b"abc"), "x" * 70_000)]:  # fmt: skip
            assert b"".join(packed(*args)) == b"".join(plain(*args))
        await client.set("k", b"\x00\xff")
        assert await client.get("k") == b"\x00\xff"
        script = "return #ARGV"
        sha = client.register_script(script).sha

        def queue(pipe: Any) -> None:
            pipe.execute_command("EVALSHA", sha, 0, "a", "b")

        await client.script_flush()
        assert await run_script_pipeline(client, script, queue) == [2]
    finally:
        await client.aclose()
