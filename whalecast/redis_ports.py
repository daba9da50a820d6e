"""What the bar path needs of a Redis client, as protocols, and its replies, as types.

The window store and the publisher take a :class:`RedisClient` (met by
``redis.asyncio.Redis`` and ``RedisCluster``, checked below) and queue their calls
on a :class:`RedisPipeline`. A reply is a :data:`Reply`; the helpers here read one
as the shape a command answers with, and raise :class:`UnexpectedReply` when Redis
answered otherwise, instead of failing somewhere later on an index.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias

#: One argument of a command.
Arg: TypeAlias = bytes | str | int | float
#: What Redis answers (RESP2 as redis-py hands it over): a string, an integer, nil, an array.
Reply: TypeAlias = bytes | str | int | list["Reply"] | None


class UnexpectedReply(TypeError):
    """Redis answered a command with another shape than the command's."""


class RedisPipeline(Protocol):
    """Commands queued, then sent in one request (``pipeline(transaction=False)``)."""

    def execute_command(self, *args: Arg) -> object: ...

    def hmget(self, name: str, keys: list[str]) -> object: ...

    def zrange(self, name: str, start: int, end: int) -> object: ...

    def get(self, name: str) -> object: ...

    def execute(self) -> Awaitable[list[Reply]]: ...


class RegisteredScript(Protocol):
    """A Lua script the client knows by its SHA1."""

    sha: str


class RedisClient(Protocol):
    """A client of one server or of a Cluster (:func:`whalecast.redisconn.connect`)."""

    def pipeline(self, transaction: bool = ...) -> RedisPipeline: ...

    def register_script(self, script: str) -> RegisteredScript: ...

    def script_load(self, script: str) -> Awaitable[object]: ...

    def mget(self, keys: Sequence[str]) -> Awaitable[Sequence[Reply]]: ...


def array(reply: Reply) -> list[Reply]:
    """An array reply."""
    if not isinstance(reply, list):
        raise UnexpectedReply(f"expected an array reply, got {type(reply).__name__}")
    return reply


def blob(reply: Reply) -> bytes | None:
    """A bulk string reply, or nil."""
    if reply is None or isinstance(reply, bytes):
        return reply
    if isinstance(reply, str):
        return reply.encode()
    raise UnexpectedReply(f"expected a string reply, got {type(reply).__name__}")


def text(reply: Reply) -> str:
    """A string reply (not nil), as text."""
    value = blob(reply)
    if value is None:
        raise UnexpectedReply("expected a string reply, got nil")
    return value.decode()


def integer(reply: Reply) -> int:
    """An integer reply (or a string of one, as scripts may answer)."""
    if isinstance(reply, int):
        return reply
    return int(text(reply))


def strings(replies: Sequence[Reply]) -> list[bytes | None]:
    """Bulk strings or nils (``MGET``, ``HMGET``)."""
    return [blob(r) for r in replies]


if TYPE_CHECKING:  # redis-py's clients meet the protocols (mypy checks this function)
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    def _clients(plain: Redis, cluster: RedisCluster) -> tuple[RedisClient, RedisClient]:
        return plain, cluster
