"""Connecting to Redis, and the embedded ``redis-server`` behind ``url: embedded``.

The embedded server is a private child process listening only on a unix socket
inside the state directory, with append-only persistence so a restart keeps the
windows. It is stopped when whalecast exits, and (Linux) also dies with it if
whalecast is killed.

Clients from :func:`connect` pack commands with hiredis' C packer when hiredis
is installed (``redis.asyncio`` packs in Python, about 1 µs per argument: a
bar's few thousand arguments add up). :func:`run_script_pipeline` runs a
pipeline of ``EVALSHA`` calls, loading the script when the server lost it.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.connection import HiredisRespSerializer
from redis.exceptions import AuthenticationError, NoPermissionError, NoScriptError, RedisError
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

from whalecast.redis_ports import RedisClient, RedisPipeline, Reply, strings
from whalecast.settings import RedisSettings

INSTALL_HINT = (
    "install it with 'sudo apt-get install redis-server' (Debian/Ubuntu), "
    "'sudo dnf install redis' (Fedora) or 'brew install redis' (macOS), "
    "or set redis.url to an existing server"
)
_PR_SET_PDEATHSIG = 1
_MAX_UNIX_PATH = 104


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """A private redis-server on a unix socket in ``state_dir``, with AOF persistence."""

    def __init__(self, state_dir: Path, binary: str = "redis-server") -> None:
        self.state_dir = Path(state_dir).resolve()
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_seconds: float = 10.0) -> EmbeddedRedis:
        executable = shutil.which(self.binary)
        if executable is None:
            raise EmbeddedRedisError(
                f"redis.url is 'embedded' but {self.binary!r} was not found on PATH: {INSTALL_HINT}"
            )
        if len(str(self.socket_path)) > _MAX_UNIX_PATH:
            raise EmbeddedRedisError(
                f"redis.state_dir {self.state_dir} is too long for a unix socket path"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._answers_ping():
            raise EmbeddedRedisError(
                f"another redis-server already serves {self.socket_path}; stop it or use another redis.state_dir"
            )
        self.socket_path.unlink(missing_ok=True)
        args = [
            executable, "--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--dir", str(self.state_dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--logfile", "redis.log",
        ]  # fmt: skip
        # Its own process group: a terminal's Ctrl-C (SIGINT to the foreground group) reaches
        # only us, and we stop the server after the daemon has drained into it.
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=self.state_dir, process_group=0,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - started before worker threads exist
        )  # fmt: skip
        self._wait_ready(timeout_seconds)
        return self

    def _wait_ready(self, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedRedisError(f"redis-server exited at start-up: {self._log_tail()}")
            if self._answers_ping():
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(
            f"redis-server did not answer within {timeout_seconds} s: {self._log_tail()}"
        )

    def _answers_ping(self) -> bool:
        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def _log_tail(self) -> str:
        log = self.state_dir / "redis.log"
        lines = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        return " | ".join(lines) or "no log"

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """SIGTERM lets redis-server flush its AOF and remove its socket."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def client_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """Keyword arguments for ``redis.asyncio`` clients: credentials and TLS from settings."""
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_seconds,
        "socket_connect_timeout": settings.socket_timeout_seconds,
        "health_check_interval": 30,
    }
    if settings.username is not None:
        kwargs["username"] = settings.username.get_secret_value()
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    if settings.url.startswith("rediss://"):
        if settings.tls_ca_file is not None:
            kwargs["ssl_ca_certs"] = str(settings.tls_ca_file)
        if settings.tls_cert_file is not None:
            kwargs["ssl_certfile"] = str(settings.tls_cert_file)
        if settings.tls_key_file is not None:
            kwargs["ssl_keyfile"] = str(settings.tls_key_file)
    return kwargs


def connect(settings: RedisSettings, url: str | None = None) -> Any:
    """An async Redis (or Redis Cluster) client for ``url`` (default: ``settings.url``)."""
    target = url or settings.url
    if target == "embedded":
        raise ValueError("start the EmbeddedRedis first and pass its url")
    kwargs = client_kwargs(settings)
    if settings.cluster:
        kwargs.pop("health_check_interval")
        return RedisCluster.from_url(target, **kwargs)
    return with_fast_packing(Redis.from_url(target, **kwargs))


class _HiredisPacking:
    """Connection mixin: commands packed by hiredis, as redis-py's sync client does."""

    # redis-py 8.2 dropped the constructor's annotations; the class is the same
    _packer: Any = cast("Callable[[], Any]", HiredisRespSerializer)()

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if (b" " if isinstance(name, bytes) else " ") not in name:
            with contextlib.suppress(TypeError):  # e.g. a memoryview: the full path converts it
                return [hiredis.pack_command(args)]
        packed: list[bytes] = self._packer.pack(*args)
        return packed


def with_fast_packing(client: Redis) -> Redis:
    """``client`` with its future connections packing commands in C (no-op without hiredis)."""
    pool = client.connection_pool
    base = pool.connection_class
    if HIREDIS_AVAILABLE and not issubclass(base, _HiredisPacking):
        pool.connection_class = type("Hiredis" + base.__name__, (_HiredisPacking, base), {})
    return client


async def run_script_pipeline(
    client: RedisClient, script: str, queue: Callable[[RedisPipeline], object]
) -> list[Reply]:
    """Run the ``EVALSHA`` calls ``queue(pipe)`` adds in one non-transactional pipeline.

    When the server lost the script (restart, failover, ``SCRIPT FLUSH``) every
    call fails with NOSCRIPT before it runs: the script is loaded and the whole
    pipeline redone once. Queue only script calls, so nothing runs twice.
    """
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        queue(pipe)
        try:
            return list(await pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            await client.script_load(script)
    raise AssertionError("unreachable")


async def mget(client: RedisClient, keys: Sequence[str]) -> list[bytes | None]:
    """``MGET`` of keys that may live in different Cluster slots (one request per node)."""
    if not keys:
        return []
    if isinstance(client, RedisCluster):
        return strings(await client.mget_nonatomic(keys))
    return strings(await client.mget(keys))


class RedisHandle:
    """Context manager giving the configured client, starting the embedded server if asked."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.embedded: EmbeddedRedis | None = None
        self.client: Any = None

    async def __aenter__(self) -> Any:
        url = self.settings.url
        if url == "embedded":
            self.embedded = EmbeddedRedis(self.settings.state_dir).start()
            url = self.embedded.url
        self.client = connect(self.settings, url)
        await self._check(url)
        return self.client

    async def _check(self, url: str) -> None:
        """Fail at start-up, clearly, when Redis cannot be used (wrong address, credentials,
        certificates): one PING."""
        try:
            if isinstance(self.client, RedisCluster):
                # learn the slot map now: the cluster pub/sub client needs it before its
                # first subscribe, and a wrong URL fails here rather than at the first bar
                await self.client.initialize()
            await self.client.ping()
        except (RedisError, OSError) as e:
            await self.__aexit__(None, None, None)
            raise RedisUnavailable(describe_redis_error(e, self.settings, url)) from e

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.embedded is not None:
            self.embedded.stop()


class RedisUnavailable(Exception):
    """Redis cannot be used; the message says what is wrong and never holds a secret."""


def public_url(url: str) -> str:
    """``url`` without its password (what messages and logs may show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit((parts.scheme, f"{user}***@{host}", parts.path, parts.query, ""))


def describe_redis_error(error: BaseException, settings: RedisSettings, url: str) -> str:
    """One line for an operator: where, what kind of failure, Redis' own words; no secrets."""
    where = f"Redis at {public_url(url)}"
    detail = str(error) or type(error).__name__
    if isinstance(error, AuthenticationError):
        text = f"{where} refused the configured credentials: {detail}"
    elif isinstance(error, NoPermissionError):
        text = f"{where}: the configured user lacks a permission whalecast needs: {detail}"
    elif "SSL" in detail or "certificate" in detail.lower():
        text = f"TLS with {where} failed (check redis.tls_ca_file and the server certificate): {detail}"
    elif isinstance(error, RedisError | OSError) and "connect" in detail.lower():
        text = f"cannot connect to {where}: {detail}"
    else:
        text = f"{where} failed: {type(error).__name__}: {detail}"
    for secret in (settings.password, settings.username):
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "**********")
    return text
