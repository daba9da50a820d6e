"""Publishing on a Redis Cluster: every message once, even across a crash and a retry.

On one server a bar's outputs and handover marks are one script call. On a Cluster
they cannot be: a script touches the keys of one slot, and the outputs are not in
the series' slots (the stream and each latest hash are single keys, ``PUBLISH``
reaches every node from any). So a bar goes out in two steps, each made of calls
that check, inside the script, what went out before:

1. **The stream** (``publish_stream.lua``), one call per bar on the stream's slot.
   Next to the stream, in its slot, :attr:`~whalecast.keys.Keys.predictions_streamed`
   records per series the newest bar appended; the script appends a series' messages
   only for a newer bar and records it in the same call. The latest hashes get their
   ``HSET`` in the same request (writing a value again changes nothing that matters).
2. **The channel and the marks** (``publish_slot.lua``), one call per slot of the
   series' handover marks: for each series whose mark does not show the bar yet,
   ``PUBLISH`` its messages, then set the mark, in the same call.

Step 2 is sent once step 1 is answered, so a mark is never ahead of the stream or the
latest hash, and a bar its mark shows went out everywhere (what
:meth:`not_yet_published` reads). A replica killed anywhere in between, or a request
whose reply was lost, leaves each series either marked or with at most its stream
record written; the next attempt (a retry, or the next owner predicting the bar again)
skips what went out and sends the rest: each message once on the channel and once in
the stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Final

from redis.crc import key_slot

from inference.handover import Mark, PredictionMarks
from whalecast.domain import Series
from whalecast.keys import STREAM_FIELD, Keys
from whalecast.redis_ports import RedisClient, RedisPipeline, array, integer
from whalecast.redisconn import run_script_pipeline

if TYPE_CHECKING:
    from inference.publisher import PredictionOut

STREAM_SCRIPT: Final = resources.files("inference").joinpath("publish_stream.lua").read_text()
SLOT_SCRIPT: Final = resources.files("inference").joinpath("publish_slot.lua").read_text()

Message = tuple["PredictionOut", str]
#: One series' messages of one bar, with the mark that says they went out.
Entry = tuple[Mark, Series, list[Message]]


class ClusterPublish:
    """The two steps above for one publisher (its keys, stream cap and marks)."""

    def __init__(
        self, redis: RedisClient, keys: Keys, stream_maxlen: int, marks: PredictionMarks
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.stream_maxlen = stream_maxlen
        self.marks = marks
        self._stream_sha = redis.register_script(STREAM_SCRIPT).sha
        self._slot_sha = redis.register_script(SLOT_SCRIPT).sha

    async def publish(self, messages: Sequence[Message]) -> list[Message]:
        """Sends ``messages`` (bars in order); returns those published on the channel now
        (not those an earlier attempt or another replica had published)."""
        bars = self._entries(messages)
        await self._stream_step(bars)
        return await self._slot_step(_by_slot(entry for entries in bars for entry in entries))

    async def _stream_step(self, bars: list[list[Entry]]) -> None:
        await run_script_pipeline(self.redis, STREAM_SCRIPT, lambda pipe: self._queue_stream(pipe, bars))  # fmt: skip

    async def _slot_step(self, slots: list[list[Entry]]) -> list[Message]:
        replies = await run_script_pipeline(self.redis, SLOT_SCRIPT, lambda pipe: self._queue_slots(pipe, slots))  # fmt: skip
        skipped = {id(entries[integer(k) - 1]) for entries, reply in zip(slots, replies, strict=True)
                   for k in array(reply)[1:]}  # fmt: skip
        return [m for entries in slots for e in entries if id(e) not in skipped for m in e[2]]

    async def not_yet_published(self, predictions: Sequence[PredictionOut]) -> list[PredictionOut]:
        """Those whose series' mark does not show their bar yet, in order."""
        shown = await self.marks.load(list({p.series: None for p in predictions}))
        return [p for p in predictions if shown.get(p.series, -1) < p.bar_open_ms]

    def _entries(self, messages: Sequence[Message]) -> list[list[Entry]]:
        """Per bar (in the order bars first appear), one entry per series."""
        bars: dict[int, dict[Series, list[Message]]] = {}
        for item in messages:
            bars.setdefault(item[0].bar_open_ms, {}).setdefault(item[0].series, []).append(item)
        out = []
        for open_ms, by_series in bars.items():
            marks = self.marks.marks(dict.fromkeys(by_series, open_ms))
            out.append([(mark, s, items) for mark, (s, items) in zip(marks, by_series.items(), strict=True)])  # fmt: skip
        return out

    def _queue_stream(self, pipe: RedisPipeline, bars: list[list[Entry]]) -> None:
        keys = self.keys
        latest: dict[str, dict[str, str]] = {}
        for entries in bars:
            mark = entries[0][0]
            args: list[str | int] = [self.stream_maxlen, STREAM_FIELD, mark.open_ms,
                                     max(e[0].ttl_ms for e in entries)]  # fmt: skip
            for _mark, series, items in entries:
                args += [series.tag, len(items), *(message for _, message in items)]
                for prediction, message in items:
                    latest.setdefault(prediction.model, {})[prediction.field] = message
            pipe.execute_command("EVALSHA", self._stream_sha, 2, keys.predictions_stream,
                                 keys.predictions_streamed, *args)  # fmt: skip
        for model, mapping in latest.items():  # run again after a NOSCRIPT retry: the same values
            pipe.execute_command(
                "HSET", keys.latest(model), *(x for kv in mapping.items() for x in kv)
            )

    def _queue_slots(self, pipe: RedisPipeline, slots: list[list[Entry]]) -> None:
        for entries in slots:
            args: list[str | int] = [self.keys.predictions_channel]
            for mark, _series, items in entries:
                args += [mark.open_ms, mark.ttl_ms, len(items), *(m for _, m in items)]
            pipe.execute_command("EVALSHA", self._slot_sha, len(entries),
                                 *(e[0].key for e in entries), *args)  # fmt: skip


def _by_slot(entries: Iterable[Entry]) -> list[list[Entry]]:
    """Entries grouped by their mark's hash slot, each group in the given (bar) order."""
    slots: dict[int, list[Entry]] = {}
    for entry in entries:
        slots.setdefault(key_slot(entry[0].key.encode()), []).append(entry)
    return list(slots.values())
