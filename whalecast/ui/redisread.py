"""Everything ``whalecast ui`` reads from Redis, and nothing it could write.

Only read commands: SCAN, HGETALL, XREVRANGE, XREAD, ZRANGE, MGET, PING, so the page
runs under a read-only ACL user (``+@read`` on the prefix's keys). It works the
same against one server or a Cluster (redis-py routes each key; SCAN visits every
primary), and with any number of daemon replicas and shards, since they all write
the same keys.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from whalecast.domain import Series
from whalecast.keys import BAR_COLUMNS, STREAM_FIELD, Keys

_BAR = struct.Struct(f"<{len(BAR_COLUMNS)}d")
#: Stream entries read per request when catching up at start-up.
CHUNK = 10_000


def decode_bar(member: bytes) -> dict[str, float]:
    """One stored bar (``streamer.store_format``: float64 little-endian in ``BAR_COLUMNS`` order)."""
    return dict(zip(BAR_COLUMNS, _BAR.unpack(member), strict=True))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisReader:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def _scan(self, pattern: str) -> list[str]:
        return sorted({_text(k) async for k in self.redis.scan_iter(match=pattern, count=1000)})

    async def latest_messages(self) -> list[bytes]:
        """Every model's newest message per series (the latest-value hashes)."""
        out: list[bytes] = []
        for key in await self._scan(self.keys.latest_pattern):
            out.extend((await self.redis.hgetall(key)).values())
        return out

    async def recent(self, limit: int) -> tuple[str, list[bytes]]:
        """Up to ``limit`` newest stream messages, oldest first, and the newest entry's id
        (``0-0`` when the stream is empty: then follow it from the start)."""
        newest, upper = "0-0", "+"
        messages: list[bytes] = []
        while len(messages) < limit:
            count = min(CHUNK, limit - len(messages))
            entries = await self.redis.xrevrange(self.keys.predictions_stream, upper, "-", count)
            if not entries:
                break
            if newest == "0-0":
                newest = _text(entries[0][0])
            messages.extend(fields[STREAM_FIELD.encode()] for _, fields in entries)
            if len(entries) < count:
                break
            upper = "(" + _text(entries[-1][0])
        messages.reverse()
        return newest, messages

    async def follow(self, last_id: str, block_ms: int, count: int) -> tuple[str, list[bytes]]:
        """Stream messages after ``last_id``, waiting up to ``block_ms`` for the first."""
        reply = await self.redis.xread(
            {self.keys.predictions_stream: last_id}, count=count, block=block_ms
        )
        messages: list[bytes] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last_id = _text(entry_id)
                if STREAM_FIELD.encode() in fields:
                    messages.append(fields[STREAM_FIELD.encode()])
        return last_id, messages

    async def newest_bars(self, series: Sequence[Series]) -> dict[str, dict[str, float]]:
        """Each series' newest stored bar, by tag (series with none left out)."""
        if not series:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for s in series:
            pipe.zrange(self.keys.bars(s), -1, -1)
        replies = await pipe.execute()
        return {s.tag: decode_bar(r[0]) for s, r in zip(series, replies, strict=True) if r}

    async def bars(self, series: Series) -> list[dict[str, float]]:
        return [decode_bar(member) for member in await self.redis.zrange(self.keys.bars(series), 0, -1)]  # fmt: skip

    async def replicas(self) -> list[dict[str, Any]]:
        """Every daemon's status document (``inference.status``), by replica id."""
        keys = await self._scan(self.keys.replica_pattern)
        if not keys:
            return []
        out = []
        for key in keys:  # one GET each: on a Cluster the keys live in different slots
            raw = await self.redis.get(key)
            if raw is None:
                continue  # expired between SCAN and GET
            try:
                document = json.loads(raw)
            except ValueError:
                continue
            if isinstance(document, dict):
                out.append(document)
        return out
