"""May the configured Redis user run every command the daemon will send? Asked at start-up.

Redis 7 answers ``ACL DRYRUN <user> <command> <args>`` without running
anything, when the asking user may use it (usually an administrator only).
Otherwise each command is sent once in a form that cannot change data: reads
of the daemon's own keys, writes whose arguments are rejected after the
permission check (a score that is not a number, an expiry of 0), a publish on
a channel nobody listens to. Redis checks permissions before it looks at the
arguments, so a ``NOPERM`` reply means "not allowed" and any other reply
means "allowed". The result names every refused command (and key or channel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import NoPermissionError, ResponseError

from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.redisconn import RedisUnavailable, public_url
from whalecast.settings import RedisSettings

PROBE_SCRIPT = "return 1"
PROBE_SCRIPT_SHA = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"  # SHA1 of PROBE_SCRIPT


@dataclass(frozen=True)
class Probe:
    name: str  # as ACL rules spell it, e.g. "hmget", "script|load"
    args: tuple[str, ...]  # the command as sent (harmless), e.g. ("HMGET", key, "f")


def daemon_probes(keys: Keys, series: Series, *, registry_sync: bool) -> list[Probe]:
    """Every command the daemon sends (its Lua scripts' own calls included), probe-shaped."""
    meta, bars, window = keys.meta(series), keys.bars(series), keys.window(series)
    mark, stream, latest = keys.predicted(series), keys.predictions_stream, keys.latest("probe")
    probes = [
        Probe("ping", ("PING",)),
        Probe("script|load", ("SCRIPT", "LOAD", PROBE_SCRIPT)),
        Probe("evalsha", ("EVALSHA", PROBE_SCRIPT_SHA, "0")),
        Probe("hmget", ("HMGET", meta, "last_open_ms")),
        Probe("hget", ("HGET", meta, "last_open_ms")),
        Probe("get", ("GET", mark)),
        Probe("mget", ("MGET", mark)),
        Probe("zrange", ("ZRANGE", bars, "0", "0")),
        Probe("set", ("SET", mark, "0", "PX", "0")),  # an expiry of 0 is refused
        Probe("del", ("DEL", keys.series_base(series) + ":acl-probe")),  # a key never used
        Probe("setrange", ("SETRANGE", window, "-1", "")),  # a negative offset is refused
        Probe("zadd", ("ZADD", bars, "not-a-number", "probe")),
        Probe("zremrangebyscore", ("ZREMRANGEBYSCORE", bars, "1", "0")),  # an empty range
        Probe("hset", ("HSET", latest, "field", "value", "odd")),  # fields and values unpaired
        Probe("hincrby", ("HINCRBY", meta, "probe", "not-an-integer")),
        Probe("pexpire", ("PEXPIRE", keys.series_base(series) + ":acl-probe", "1")),
        Probe("publish", ("PUBLISH", keys.prefix + ":acl-probe", "")),
        Probe("xadd", ("XADD", stream, "MAXLEN", "~", "not-a-number", "*", "f", "v")),
        Probe("subscribe", ("SUBSCRIBE", keys.models_channel)),
    ]
    if registry_sync:
        artifact = keys.artifact("probe", "probe")
        probes += [Probe("hkeys", ("HKEYS", artifact)), Probe("hstrlen", ("HSTRLEN", artifact, "f")),
                   Probe("hgetall", ("HGETALL", artifact))]  # fmt: skip
    return probes


@dataclass(frozen=True)
class Refusal:
    name: str
    reason: str  # Redis' own words


def username(settings: RedisSettings) -> str:
    if settings.username is not None:
        return settings.username.get_secret_value()
    return urlsplit(settings.url).username or "default"


class _DryRunUnavailable(Exception):
    """This server or user cannot answer ACL DRYRUN (Redis < 7, or no permission)."""


async def refused_commands(redis: Any, user: str, probes: Sequence[Probe]) -> list[Refusal]:
    """The probes this user may not run: by ``ACL DRYRUN`` if it answers, else by probing."""
    try:
        return [r for p in probes if (r := await _dry_run(redis, user, p)) is not None]
    except _DryRunUnavailable:
        return [r for p in probes if (r := await _probe(redis, p)) is not None]


async def _dry_run(redis: Any, user: str, probe: Probe) -> Refusal | None:
    try:
        reply = await redis.execute_command("ACL", "DRYRUN", user, *probe.args)
    except NoPermissionError as e:  # this user may not ask
        raise _DryRunUnavailable from e
    except ResponseError as e:
        if "unknown" in str(e).lower():  # no DRYRUN before Redis 7
            raise _DryRunUnavailable from e
        raise
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return None if text == "OK" else Refusal(probe.name, text)


async def _probe(redis: Any, probe: Probe) -> Refusal | None:
    if probe.name == "subscribe":
        return await _probe_subscribe(redis, probe)
    try:
        await redis.execute_command(*probe.args)
    except NoPermissionError as e:
        return Refusal(probe.name, str(e))
    except ResponseError:
        return None  # refused for its arguments, after the permission check: allowed
    return None


async def _probe_subscribe(redis: Any, probe: Probe) -> Refusal | None:
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(*probe.args[1:])
        await pubsub.get_message(timeout=1.0)  # a refusal is the reply
        await pubsub.unsubscribe()
    except NoPermissionError as e:
        return Refusal(probe.name, str(e))
    finally:
        await pubsub.aclose()
    return None


def describe_refusals(user: str, prefix: str, refusals: Sequence[Refusal]) -> str:
    """One line naming the missing commands (and keys or channels) and how to grant them."""
    kinds: dict[str, list[str]] = {"command": [], "key": [], "channel": []}
    for refusal in refusals:
        text = refusal.reason.lower()
        kind = "key" if "key" in text else "channel" if "channel" in text else "command"
        kinds[kind].append(refusal.name)
    parts = [f"{what} {', '.join(sorted(names))}" for what, names in (
        ("may not run", kinds["command"]), ("may not use its keys with", kinds["key"]),
        ("may not use its channels with", kinds["channel"])) if names]  # fmt: skip
    grant = " ".join(f"+{name}" for name in sorted(kinds["command"]))
    return (
        f"the configured user '{user}' lacks a permission whalecast needs: {'; '.join(parts)} "
        f"(grant them, e.g. ACL SETUSER {user} {grant} ~{prefix}:* &{prefix}:*)"
    ).replace("  ", " ")


async def check_permissions(redis: Any, settings: RedisSettings, sample: Series, *,
                            registry_sync: bool) -> None:  # fmt: skip
    """Raise :class:`RedisUnavailable` with one line if the user may not run a needed command."""
    user = username(settings)
    probes = daemon_probes(Keys(settings.prefix), sample, registry_sync=registry_sync)
    refusals = await refused_commands(redis, user, probes)
    if refusals:
        where = f"Redis at {public_url(settings.url)}"
        raise RedisUnavailable(f"{where}: {describe_refusals(user, settings.prefix, refusals)}")
