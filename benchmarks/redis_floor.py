"""Redis's own cost for the commands one bar sends: the floor the bar's store and publish are held to.

The daemon's store append (``streamer/store.lua``) and publish (``inference/publish.lua``)
each reach Redis as one script call per bar on a plain server. Their time is Redis
running the commands plus everything on our side: building and packing the
arguments, the round trip, parsing the reply. This module measures the first part
alone, in the same Redis the benchmark ran against: a Lua loop that sends the same
commands per series, with values of the sizes the daemon really stored, generated
inside Redis so that nothing but the commands is timed.

Per series, the store sends ``HMGET meta``, ``SETRANGE window`` twice (the new row into
its slot of the ring, the newest slot into the header), ``ZADD bars``,
``ZREMRANGEBYSCORE bars`` and ``HSET meta`` (the TTL renewals run once a quarter TTL, so
not at a typical bar). The publish sends ``GET mark`` and ``SET mark PX``
per series and ``PUBLISH`` and ``XADD MAXLEN ~`` per message (one per series and model,
six for a six-output horizon model), and one ``HSET`` per 400 latest values. The loop's
keys live under their own prefix and are deleted afterwards.

The floor includes the Lua interpreter's loop and key-name building, so it is a little
above the commands' own cost: a bar's time divided by it is, if anything, flattering.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from streamer.store_format import HEADER_BYTES
from whalecast.keys import STREAM_FIELD, Keys

FLOOR_PREFIX = "wcfloor"

_SCRIPT = """
local mode, prefix = ARGV[1], ARGV[2]
local n, messages = tonumber(ARGV[3]), tonumber(ARGV[4])
local row = string.rep('r', tonumber(ARGV[5]))
local rows = tonumber(ARGV[6])
local pad = string.rep('m', tonumber(ARGV[7]))
local message = string.rep('x', tonumber(ARGV[8]))
local maxlen, open_ms, bar_ms = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local kept = tonumber(ARGV[12])
local ttl = 3600000
local header = string.rep('h', 12)
local commands = 0
local function key(i, part) return prefix .. ':{' .. i .. '}:' .. part end
if mode == 'setup' then
  for i = 1, n do
    redis.call('SET', key(i, 'window'), header .. string.rep(row, rows), 'PX', ttl)
    for b = kept, 1, -1 do
      local t = open_ms - b * bar_ms
      redis.call('ZADD', key(i, 'bars'), t, t .. pad)
    end
    redis.call('HSET', key(i, 'meta'), 'last_open_ms', open_ms - bar_ms, 'feature_version', '1',
      'window_rows', rows, 'appended', kept)
  end
  return 0
end
if mode == 'store' then
  for i = 1, n do
    local bars, window, meta = key(i, 'bars'), key(i, 'window'), key(i, 'meta')
    redis.call('HMGET', meta, 'last_open_ms', 'feature_version', 'window_rows', 'appended')
    local slot = math.floor(open_ms / bar_ms) % rows
    redis.call('SETRANGE', window, 12 + slot * #row, row)
    redis.call('SETRANGE', window, 8, struct.pack('<I4', slot))
    redis.call('ZADD', bars, open_ms, open_ms .. pad)
    redis.call('ZREMRANGEBYSCORE', bars, '-inf', open_ms - kept * bar_ms)
    redis.call('HSET', meta, 'last_open_ms', open_ms, 'appended', i)
    commands = commands + 6
  end
  return commands
end
-- publish
local stream, channel, field = prefix .. ':stream', prefix .. ':channel', ARGV[13]
for i = 1, n do redis.call('GET', key(i, 'predicted')) end
commands = n
for m = 1, messages do
  local pairs = {}
  for i = 1, n do
    redis.call('PUBLISH', channel, message)
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', field, message)
    commands = commands + 2
    pairs[#pairs + 1] = tostring(i)
    pairs[#pairs + 1] = message
    if #pairs >= 800 then
      redis.call('HSET', prefix .. ':latest:' .. m, unpack(pairs))
      commands = commands + 1
      pairs = {}
    end
  end
  if #pairs > 0 then
    redis.call('HSET', prefix .. ':latest:' .. m, unpack(pairs))
    commands = commands + 1
  end
end
for i = 1, n do
  redis.call('SET', key(i, 'predicted'), open_ms, 'PX', ttl)
  commands = commands + 1
end
return commands
"""


@dataclass(frozen=True)
class BarShape:
    """What one bar writes, with sizes read from what the daemon really stored."""

    series: int
    messages: int  # published per series and bar (over every model and output)
    row_bytes: int
    window_rows: int
    member_bytes: int
    message_bytes: int
    bars_kept: int
    bar_ms: int
    stream_maxlen: int


@dataclass(frozen=True)
class Floor:
    store_seconds: float
    publish_seconds: float
    store_commands: int
    publish_commands: int

    def as_dict(self) -> dict[str, float]:
        return {
            "store_ms": self.store_seconds * 1000.0,
            "publish_ms": self.publish_seconds * 1000.0,
            "store_commands": self.store_commands,
            "publish_commands": self.publish_commands,
            "store_us_per_command": self.store_seconds / max(self.store_commands, 1) * 1e6,
            "publish_us_per_command": self.publish_seconds / max(self.publish_commands, 1) * 1e6,
        }


async def read_shape(
    redis: Any, keys: Keys, *, series: Any, models: Any, bar_ms: int, stream_maxlen: int
) -> BarShape:
    """The sizes of one stored series and one published message, and how many messages a
    series gets per bar (each model's latest-values hash holds one field per output and
    series), read back from Redis."""
    one = series[0]
    latest = sum([int(await redis.hlen(keys.latest(model))) for model in models])
    window_rows = int(await redis.hget(keys.meta(one), "window_rows") or 0)
    window_bytes = int(await redis.strlen(keys.window(one)))
    members = await redis.zrange(keys.bars(one), -1, -1)
    kept = int(await redis.zcard(keys.bars(one)))
    entries = await redis.xrevrange(keys.predictions_stream, count=1)
    if not members or not entries or window_rows <= 0:
        raise RuntimeError("nothing stored or published yet: run the floor after the bars")
    fields = entries[0][1]
    message = fields.get(STREAM_FIELD.encode(), fields.get(STREAM_FIELD, b""))
    return BarShape(
        series=len(series), messages=max(round(latest / len(series)), len(models)),
        row_bytes=(window_bytes - HEADER_BYTES) // window_rows, window_rows=window_rows,
        member_bytes=len(members[0]), message_bytes=len(message), bars_kept=kept,
        bar_ms=bar_ms, stream_maxlen=stream_maxlen,
    )  # fmt: skip


def _args(mode: str, shape: BarShape, open_ms: int) -> list[Any]:
    return [
        mode, FLOOR_PREFIX, shape.series, shape.messages, shape.row_bytes, shape.window_rows,
        max(shape.member_bytes - len(str(open_ms)), 0), shape.message_bytes, shape.stream_maxlen, open_ms,
        shape.bar_ms, shape.bars_kept, STREAM_FIELD,
    ]  # fmt: skip


async def _timed(redis: Any, sha: str, args: list[Any]) -> tuple[float, int]:
    started = time.perf_counter()
    commands = await redis.evalsha(sha, 0, *args)
    return time.perf_counter() - started, int(commands)


async def measure_floor(redis: Any, shape: BarShape, repeats: int = 7) -> Floor:
    """Median over ``repeats`` bars of the Lua loop's time, store and publish apart."""
    sha = await redis.script_load(_SCRIPT)
    open_ms = 1_700_000_000_000 - 1_700_000_000_000 % shape.bar_ms
    await redis.evalsha(sha, 0, *_args("setup", shape, open_ms))
    store: list[float] = []
    publish: list[float] = []
    store_commands = publish_commands = 0
    try:
        for i in range(repeats):
            bar = open_ms + i * shape.bar_ms
            seconds, store_commands = await _timed(redis, sha, _args("store", shape, bar))
            store.append(seconds)
            seconds, publish_commands = await _timed(redis, sha, _args("publish", shape, bar))
            publish.append(seconds)
    finally:
        await _delete_floor_keys(redis)
    return Floor(statistics.median(store), statistics.median(publish), store_commands,
                 publish_commands)  # fmt: skip


async def _delete_floor_keys(redis: Any) -> None:
    batch: list[Any] = []
    async for key in redis.scan_iter(match=f"{FLOOR_PREFIX}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)
