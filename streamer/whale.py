"""The whale feed: Whale Alert's websocket protocol in, classified transfers out.

``WhaleFeed.run()`` connects to ``whale.url`` with the API key (never logged),
sends ``subscribe_alerts`` with the configured filters, waits for
``subscribed_alerts``, then turns every ``alert`` into :class:`WhaleTransfer`
records (one per ``amounts`` entry, :mod:`streamer.whale_alert`), each stamped with its knowledge time (the bar
it counts in: :mod:`streamer.whale_rule`), and hands them to ``on_transfers``.
Keepalive is websocket ping/pong; a lost connection comes back after a jittered
backoff, in the reconnect loop both feeds run (:mod:`streamer.reconnect`). Bad messages, duplicates and alerts the rule refuses (``below_min_value``:
the server sent an alert under ``min_value_usd`` anyway; ``from_future``; ``late``)
are counted in ``feed_rejected{feed="whale", reason}`` and dropped; every alert's
delay (knowledge minus block time) goes to ``whalecast_whale_delay_seconds``.
Admitted alerts are appended to ``whale.record_path`` when it is set.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit, urlunsplit

import structlog
from websockets.asyncio.client import ClientConnection, connect

from streamer.backoff import Backoff
from streamer.clock import LiveClock, TimeSource
from streamer.link import FeedFacts, LinkStatus
from streamer.reconnect import FeedLabels, ReconnectLoop, SessionLost
from streamer.whale_alert import WhaleReject, parse_alert, transfer_key
from streamer.whale_rule import WhaleRule
from whalecast.domain import WhaleTransfer
from whalecast.logs import get_logger
from whalecast.metrics import REJECT_REASONS, Metrics
from whalecast.settings import FeedSettings, WhaleSettings

log = get_logger(__name__)

OnTransfers = Callable[[list[WhaleTransfer]], Awaitable[None]]
#: Keeps an admitted alert with its knowledge time (``AlertRecorder.write``).
Record = Callable[[int, Mapping[str, Any]], None]
MAX_MESSAGE_BYTES = 1_000_000
SUBSCRIBE_TIMEOUT_SECONDS = 10.0
DEDUP_ENTRIES = 10_000


def _unchanged(now_ms: int) -> int:
    return now_ms


class SubscriptionRefused(SessionLost):
    """The server answered ``subscribe_alerts`` with an error."""


class WhaleFeed:
    """Keeps a Whale Alert websocket subscription alive and hands on classified transfers
    (the whale side of a :class:`~streamer.reconnect.FeedSession`)."""

    def __init__(
        self,
        settings: WhaleSettings,
        feed_settings: FeedSettings,
        metrics: Metrics,
        on_transfers: OnTransfers,
        *,
        clock: TimeSource | None = None,
        stamp: Callable[[int], int] | None = None,
        record: Record | None = None,
    ) -> None:
        self.settings = settings
        self.feed = feed_settings
        self.rule = WhaleRule.from_settings(settings, feed_settings)
        self._on_transfers = on_transfers
        self._clock: TimeSource = clock if clock is not None else LiveClock()
        self._stamp: Callable[[int], int] = stamp if stamp is not None else _unchanged
        self._record = record
        self._key = settings.api_key.get_secret_value() if settings.api_key else ""
        self._rejected = {r: metrics.feed_rejected.labels("whale", r) for r in REJECT_REASONS}
        self._delay = metrics.whale_delay
        self._messages = metrics.feed_messages.labels("whale", "alerts")
        self._last_message = metrics.feed_last_message.labels("whale", "alerts")
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.link = LinkStatus(time.time(), f"connect to {self.public_url} and subscribe")
        labels = FeedLabels("whale", "alerts", "whale feed reconnecting")
        backoff = Backoff.from_settings(feed_settings)
        # its only cause: ping/pong is its watchdog, and it has no proactive ends
        self._loop = ReconnectLoop(labels, self.link, backoff, metrics, causes=("error",))
        self.channel_id: str | None = None

    @property
    def public_url(self) -> str:
        """``whale.url`` without its query: what logs may show."""
        parts = urlsplit(self.settings.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    def _url(self) -> str:
        parts = urlsplit(self.settings.url)
        query = "&".join(q for q in (parts.query, urlencode({"api_key": self._key})) if q)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def redact(self, text: str) -> str:
        return text.replace(self._key, "**********") if self._key else text

    def subscribe_message(self) -> dict[str, Any]:
        s = self.settings
        return {"type": "subscribe_alerts", "blockchains": list(s.blockchains),
                "symbols": list(s.symbols), "tx_types": list(s.tx_types),
                "min_value_usd": s.min_value_usd}  # fmt: skip

    def facts(self) -> FeedFacts:
        """Connected, or since when not, and the last error (for /readyz)."""
        return self.link.facts("whale")

    async def run(self) -> NoReturn:
        """Runs until cancelled."""
        with structlog.contextvars.bound_contextvars(feed="whale", url=self.public_url):
            await self._loop.run(self)

    async def before_session(self) -> None:
        """Nothing to wait for: the backoff paces the reconnects."""

    async def session(self) -> str:
        """One connection: subscribe, then every message until it ends (always a failure)."""
        ping = self.settings.ping_interval_seconds
        async with connect(self._url(), ping_interval=ping, ping_timeout=ping,
                           max_size=4 * MAX_MESSAGE_BYTES, open_timeout=10.0) as ws:  # fmt: skip
            await self._subscribe(ws)
            self._loop.up()
            try:
                async for raw in ws:
                    await self.handle(raw)
            finally:
                self._loop.down()
        raise SessionLost("closed by the server")

    async def _subscribe(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps(self.subscribe_message()))
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
            async for raw in ws:
                message = self._decode(raw)
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "subscribed_alerts":
                    self.channel_id = str(message.get("channel_id"))
                    log.info("whale feed subscribed", channel_id=self.channel_id)
                    return
                if kind == "error" or "error" in message:
                    raise SubscriptionRefused(f"subscription refused: {message}")
                await self._dispatch(message)
        raise SubscriptionRefused("connection closed before the subscription was confirmed")

    async def handle(self, raw: str | bytes) -> None:
        """One message from the server (also used by tests and replays)."""
        message = self._decode(raw)
        if message is not None:
            await self._dispatch(message)

    def _decode(self, raw: str | bytes) -> dict[str, Any] | None:
        self._messages.inc()
        self._last_message.set_to_current_time()
        if len(raw) > MAX_MESSAGE_BYTES:
            self._rejected["oversized"].inc()
            return None
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            self._rejected["malformed"].inc()
            return None
        if not isinstance(message, dict):
            self._rejected["malformed"].inc()
            return None
        return message

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "alert":
            transfers = self._accept(message)
            if transfers:
                await self._on_transfers(transfers)
        elif kind == "subscribed_alerts":
            self.channel_id = str(message.get("channel_id"))
        elif kind == "error" or "error" in message:
            log.warning("whale feed error message", message=self.redact(str(message))[:500])
        else:
            self._rejected["unknown_type"].inc()

    def _accept(self, alert: dict[str, Any]) -> list[WhaleTransfer]:
        """The alert's transfers stamped with their knowledge time, or [] (counted by reason)."""
        try:
            transfers = parse_alert(alert)
            key = transfer_key(alert)
            if key is not None and key in self._seen:
                raise WhaleReject("duplicate")
            known_ms = self._stamp(self._clock.now_ms())
            self._delay.observe(max(known_ms - transfers[0].ts_ms, 0) / 1000)
            value = sum(t.usd for t in transfers)
            reason = self.rule.refusal(transfers[0].ts_ms, known_ms, value, self._clock.slack_ms())
            if reason is not None:
                raise WhaleReject(reason)
        except WhaleReject as e:
            self._rejected[e.reason].inc()
            return []
        if key is not None:
            self._seen[key] = None
            if len(self._seen) > DEDUP_ENTRIES:
                self._seen.popitem(last=False)
        if self._record is not None:
            self._record(known_ms, alert)
        return [replace(t, known_ms=known_ms) for t in transfers]
