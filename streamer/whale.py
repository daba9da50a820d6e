"""The whale feed: Whale Alert's websocket protocol in, classified transfers out.

``WhaleFeed.run()`` connects to ``whale.url`` with the API key (never logged),
sends ``subscribe_alerts`` with the configured filters, waits for
``subscribed_alerts``, then turns every ``alert`` into :class:`WhaleTransfer`
records (one per ``amounts`` entry), each stamped with its knowledge time (the bar
it counts in: :mod:`streamer.whale_rule`), and hands them to ``on_transfers``.
Keepalive is websocket ping/pong; a lost connection comes back after a jittered
backoff. Bad messages, duplicates and alerts the rule refuses (``below_min_value``:
the server sent an alert under ``min_value_usd`` anyway; ``from_future``; ``late``)
are counted in ``feed_rejected{feed="whale", reason}`` and dropped; every alert's
delay (knowledge minus block time) goes to ``whalecast_whale_delay_seconds``.
Admitted alerts are appended to ``whale.record_path`` when it is set.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import structlog
from websockets.asyncio.client import ClientConnection, connect

from streamer.backoff import Backoff
from streamer.clock import LiveClock, TimeSource
from streamer.whale_rule import WhaleRule
from whalecast.domain import WhaleTransfer, classify_flow
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


class WhaleReject(Exception):
    """An alert that cannot be used; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class SubscriptionRefused(Exception):
    """The server answered ``subscribe_alerts`` with an error."""


def usd_or_amount(value: object, field: str) -> float:
    """A finite, non-negative amount from a JSON number or decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise WhaleReject("malformed", f"{field} is not a number")
    try:
        number = float(value)
    except ValueError as e:
        raise WhaleReject("malformed", f"{field} is not a number") from e
    if not math.isfinite(number) or number < 0:
        raise WhaleReject("bad_amount", f"{field} = {value!r}")
    return number


def _largest(entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    def amount(entry: Mapping[str, Any]) -> float:
        try:
            return float(entry.get("amount") or 0.0)
        except (TypeError, ValueError):
            return 0.0

    return max(entries, key=amount)


#: Owner names that name nobody: an output to such an owner is not change by its name.
ANONYMOUS_OWNERS = frozenset({"", "unknown"})


def is_change(output: Mapping[str, Any], addresses: set[str], owners: set[str]) -> bool:
    """An output back to the sender: to one of the inputs' addresses, or to a named input owner."""
    address, owner = output.get("address"), str(output.get("owner") or "").lower()
    if isinstance(address, str) and address in addresses:
        return True
    return owner not in ANONYMOUS_OWNERS and owner in owners


def _sides(sub: Mapping[str, Any]) -> tuple[str, str] | None:
    """Owner types (from, to) of one sub-transaction; change back to the sender is skipped."""
    inputs = [e for e in sub.get("inputs") or [] if isinstance(e, dict)]
    outputs = [e for e in sub.get("outputs") or [] if isinstance(e, dict)]
    if not inputs or not outputs:
        return None
    addresses = {e["address"] for e in inputs if isinstance(e.get("address"), str) and e["address"]}
    owners = {str(e.get("owner") or "").lower() for e in inputs}
    received = [e for e in outputs if not is_change(e, addresses, owners)]
    source, target = _largest(inputs), _largest(received or outputs)
    return str(source.get("owner_type") or "unknown"), str(target.get("owner_type") or "unknown")


def _owner_type(side: object) -> str:
    if isinstance(side, dict):
        return str(side.get("owner_type") or "unknown")
    return "unknown"  # a bare owner name says nothing about its type


def owner_types(alert: Mapping[str, Any], symbol: str) -> tuple[str, str]:
    """(from, to) owner types: the sub-transaction of ``symbol``, else the from/to fields."""
    transaction = alert.get("transaction")
    subs = transaction.get("sub_transactions") if isinstance(transaction, dict) else None
    if isinstance(subs, list):
        candidates = [s for s in subs if isinstance(s, dict)]
        matching = [s for s in candidates if str(s.get("symbol", "")).upper() == symbol]
        for sub in matching or candidates:
            sides = _sides(sub)
            if sides is not None:
                return sides
    return _owner_type(alert.get("from")), _owner_type(alert.get("to"))


def parse_alert(alert: Mapping[str, Any]) -> list[WhaleTransfer]:
    """The transfers of one ``alert`` message; raises :class:`WhaleReject` when unusable.

    A real-shaped alert (an unattributed wallet pays an exchange and takes its change
    back to its own address, the change being the larger output)::

        {"type": "alert", "channel_id": "3f2a9c1d", "timestamp": 1730730600,
         "blockchain": "bitcoin", "transaction_type": "transfer", "from": "unknown",
         "to": "binance",
         "amounts": [{"symbol": "BTC", "amount": 784.0, "value_usd": 53625145.0}],
         "text": "784 #BTC (53,625,145 USD) transferred from unknown wallet to #binance",
         "transaction": {"height": 869450, "index_in_block": 0, "timestamp": 1730730600,
           "hash": "9b1c0e…", "fee": "0.0001", "fee_symbol": "BTC",
           "fee_symbol_price": "68399.93",
           "sub_transactions": [{"symbol": "BTC", "unit_price_usd": "68399.93",
             "transaction_type": "transfer",
             "inputs": [{"amount": "2613.3", "address": "bc1qm3…", "owner": "",
                         "owner_type": "unknown", "address_type": "unknown"}],
             "outputs": [{"amount": "784.0", "address": "bc1qx9…", "owner": "binance",
                          "owner_type": "exchange", "address_type": "hot_wallet"},
                         {"amount": "1829.3", "address": "bc1qm3…", "owner": "",
                          "owner_type": "unknown", "address_type": "unknown"}]}]}}

    gives one BTC transfer of 784 (53.6 M USD), ``unknown → exchange``: an inflow. An
    output to an address that is also an input is change whatever its owner says (here
    ``""``, elsewhere ``"unknown"``); an output to a named owner of an input (an
    exchange's other wallet) is change too. What remains decides the receiving side.
    """
    timestamp = alert.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise WhaleReject("malformed", "timestamp")
    if not math.isfinite(timestamp) or timestamp <= 0:
        raise WhaleReject("malformed", "timestamp")
    blockchain, amounts = alert.get("blockchain"), alert.get("amounts")
    if not isinstance(blockchain, str) or not isinstance(amounts, list) or not amounts:
        raise WhaleReject("malformed", "blockchain or amounts")
    transfers = []
    for entry in amounts:
        symbol = entry.get("symbol") if isinstance(entry, dict) else None
        if not isinstance(symbol, str) or not symbol:
            raise WhaleReject("malformed", "amounts[].symbol")
        assert isinstance(entry, dict)
        amount = usd_or_amount(entry.get("amount"), "amount")
        usd = usd_or_amount(entry.get("value_usd"), "value_usd")
        asset = symbol.upper()
        from_type, to_type = owner_types(alert, asset)
        flow = classify_flow(from_type, to_type)
        ts_ms = int(timestamp * 1000)
        transfer = WhaleTransfer(ts_ms, blockchain, asset, amount, usd, from_type, to_type, flow)
        transfers.append(transfer)
    return transfers


def _transfer_key(alert: Mapping[str, Any]) -> tuple[str, str] | None:
    transaction = alert.get("transaction")
    tx_hash = transaction.get("hash") if isinstance(transaction, dict) else None
    if not isinstance(tx_hash, str) or not tx_hash:
        return None
    symbols = ",".join(sorted(str(a.get("symbol")) for a in alert["amounts"]))
    return f"{alert.get('blockchain')}:{tx_hash}", symbols


class WhaleFeed:
    """Keeps a Whale Alert websocket subscription alive and hands on classified transfers."""

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
        self._connected = metrics.feed_connected.labels("whale", "alerts")
        self._last_message = metrics.feed_last_message.labels("whale", "alerts")
        self._reconnects = metrics.feed_reconnects
        self._reconnects.labels("whale", "alerts", "error")  # its only cause
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._backoff = Backoff.from_settings(feed_settings)
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

    def _safe(self, text: str) -> str:
        return text.replace(self._key, "**********") if self._key else text

    def subscribe_message(self) -> dict[str, Any]:
        s = self.settings
        return {"type": "subscribe_alerts", "blockchains": list(s.blockchains),
                "symbols": list(s.symbols), "tx_types": list(s.tx_types),
                "min_value_usd": s.min_value_usd}  # fmt: skip

    async def run(self) -> None:
        """Runs until cancelled."""
        with structlog.contextvars.bound_contextvars(feed="whale", url=self.public_url):
            while True:
                cause, error = await self._one_session()
                self._reconnects.labels("whale", "alerts", cause).inc()
                delay = self._backoff.delay()
                log.info("whale feed reconnecting", cause=cause, error=error,
                         retry_seconds=round(delay, 3))  # fmt: skip
                await asyncio.sleep(delay)

    async def _one_session(self) -> tuple[str, str]:
        ping = self.settings.ping_interval_seconds
        try:
            async with connect(self._url(), ping_interval=ping, ping_timeout=ping,
                               max_size=4 * MAX_MESSAGE_BYTES, open_timeout=10.0) as ws:  # fmt: skip
                await self._subscribe(ws)
                self._connected.inc()
                try:
                    self._backoff.healthy()
                    async for raw in ws:
                        await self.handle(raw)
                finally:
                    self._connected.dec()
            return "error", "closed by the server"
        except SubscriptionRefused as e:
            return "error", self._safe(str(e))
        except Exception as e:  # noqa: BLE001 - connection boundary: classify, count, reconnect
            return "error", self._safe(f"{type(e).__name__}: {e}")

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
            log.warning("whale feed error message", message=self._safe(str(message))[:500])
        else:
            self._rejected["unknown_type"].inc()

    def _accept(self, alert: dict[str, Any]) -> list[WhaleTransfer]:
        """The alert's transfers stamped with their knowledge time, or [] (counted by reason)."""
        try:
            transfers = parse_alert(alert)
            key = _transfer_key(alert)
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
