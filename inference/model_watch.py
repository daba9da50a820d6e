"""Watching for new model versions: ``<prefix>:models`` notices and a poll.

A notice is ``{"model", "version"}`` JSON published when a version is promoted;
every ``reload_poll_seconds`` each model's ``CURRENT`` is checked as well, so a
missed notice (or no Redis at all) only delays a reload. What is found is loaded
and parked by :meth:`inference.models.ModelSet.check`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from redis.exceptions import RedisError

from inference.models import ModelSet
from whalecast.logs import get_logger

log = get_logger(__name__)


class ModelWatcher:
    """Runs until cancelled: reacts to model notices and polls ``CURRENT``."""

    def __init__(self, models: ModelSet) -> None:
        self.models = models
        self.settings = models.settings

    async def run(self) -> None:
        models = self.models
        if models.redis is None:
            await self.poll_forever()
            return
        pubsub = models.redis.pubsub()
        await pubsub.subscribe(models.keys.models_channel)
        try:
            await self._listen(pubsub)
        finally:
            await pubsub.aclose()

    async def _listen(self, pubsub: Any) -> None:
        interval = self.settings.reload_poll_seconds
        next_poll = time.monotonic() + interval
        while True:
            timeout = max(0.0, next_poll - time.monotonic())
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                if message is not None:
                    await self.on_notice(message["data"])
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + interval
                    await self.poll_once()
            except (RedisError, OSError) as e:
                log.warning("model watcher: redis error, retrying", error=str(e))
                await asyncio.sleep(min(interval, 5.0))

    async def poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_poll_seconds)
            await self.poll_once()

    async def poll_once(self) -> None:
        for model in self.settings.models:
            await self.models.check(model, "poll")
        self.models.serving()  # refresh the expiry gauges even between bars

    async def on_notice(self, raw: bytes | str) -> None:
        try:
            notice = json.loads(raw)
            model, version = str(notice["model"]), str(notice["version"])
        except (ValueError, KeyError, TypeError):
            log.warning("model notice ignored: not {model, version} JSON", notice=str(raw)[:200])
            return
        if model not in self.settings.models:
            return
        log.info("model notice received", model=model, version=version)
        await self.models.check(model, "notice")
