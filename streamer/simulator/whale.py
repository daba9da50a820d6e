"""Whale Alert's websocket protocol, fed from hourly exchange-flow history.

Connect to ``/whale/ws?api_key=KEY`` (a wrong key is refused with HTTP 401), then::

    → {"type": "subscribe_alerts", "blockchains": ["bitcoin"], "symbols": ["btc"],
       "tx_types": ["transfer"], "min_value_usd": 1000000}
    ← {"type": "subscribed_alerts", "channel_id": "3f2a9c1d", "blockchains": ["bitcoin"],
       "symbols": ["btc"], "tx_types": ["transfer"], "min_value_usd": 1000000}

and alerts in Whale Alert's shape, e.g.::

    {"type": "alert", "channel_id": "3f2a9c1d", "timestamp": 1730730600,
     "blockchain": "bitcoin", "transaction_type": "transfer", "from": "unknown",
     "to": "binance", "amounts": [{"symbol": "BTC", "amount": 784.0, "value_usd": 53625145.0}],
     "text": "784 #BTC (53,625,145 USD) transferred from unknown wallet to #binance",
     "transaction": {"height": 869450, "index_in_block": 0, "timestamp": 1730730600,
       "hash": "9b1c…", "fee": "0.0001", "fee_symbol": "BTC", "fee_symbol_price": "68399.93",
       "sub_transactions": [{"symbol": "BTC", "unit_price_usd": "68399.93",
         "transaction_type": "transfer",
         "inputs": [{"amount": "784.0", "address": "bc1q…", "balance": "0", "locked": "0",
                     "is_frozen": false, "owner": "", "owner_type": "unknown",
                     "address_type": "unknown"}],
         "outputs": [{"amount": "784.0", "address": "bc1q…", "balance": "0", "locked": "0",
                      "is_frozen": false, "owner": "binance", "owner_type": "exchange",
                      "address_type": "hot_wallet"}]}]}}

Each hour of the flow history gives at most one inflow alert (unknown wallet →
exchange, with 70 % of the spent coin back to the sender's address as change) and
one outflow alert (exchange → unknown wallet) carrying that hour's totals, sent
once the virtual clock has reached the hour plus the configured delay (Whale
Alert publishes a transfer some time after its block; default 0: while the bar
containing that hour is forming).
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import Counter
from typing import Any

from aiohttp import WSMsgType, web

from streamer.simulator.data import FlowHour
from streamer.simulator.faults import Faults
from streamer.simulator.hub import Connection, Hub

EXCHANGES = ("binance", "coinbase", "kraken", "okx", "bitfinex")
HOUR_MS = 3_600_000
_FILTER_LISTS = ("blockchains", "symbols", "tx_types")


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _side(amount: float, owner: str, address: str) -> dict[str, Any]:
    exchange = owner != ""
    return {
        "amount": repr(amount),
        "address": address,
        "balance": "0",
        "locked": "0",
        "is_frozen": False,
        "owner": owner,
        "owner_type": "exchange" if exchange else "unknown",
        "address_type": "hot_wallet" if exchange else "unknown",
    }


def _inputs_outputs(
    amount: float, sender: str, receiver: str, tx_hash: str
) -> dict[str, list[dict[str, Any]]]:
    """An unattributed sender spends a coin 10/3 the amount and takes 70 % of it back as
    change to its own address (the largest output, as in real alerts); an exchange pays
    exactly."""
    source = _digest("in", tx_hash)[:40]
    target = _side(amount, receiver, _digest("out", tx_hash)[:40])
    if sender:
        return {"inputs": [_side(amount, sender, source)], "outputs": [target]}
    spent = amount / 0.3
    change = _side(spent - amount, sender, source)
    return {"inputs": [_side(spent, sender, source)], "outputs": [target, change]}


def build_alert(flow: FlowHour, inflow: bool, ts_s: int) -> dict[str, Any]:
    """One alert (no channel id yet) carrying the hour's inflow or outflow total."""
    amount, usd = (
        (flow.inflow_amount, flow.inflow_usd) if inflow else (flow.outflow_amount, flow.outflow_usd)
    )
    owner = EXCHANGES[(flow.hour_ms // HOUR_MS) % len(EXCHANGES)]
    sender, receiver = ("", owner) if inflow else (owner, "")
    unit = f"{usd / amount:.2f}" if amount > 0 else "0"
    tx_hash = _digest(flow.blockchain, flow.symbol, flow.hour_ms, inflow)
    text = (
        f"{amount:,.0f} #{flow.symbol} ({usd:,.0f} USD) transferred from "
        f"{'#' + sender if sender else 'unknown wallet'} to {'#' + receiver if receiver else 'unknown wallet'}"
    )
    return {
        "type": "alert",
        "timestamp": ts_s,
        "blockchain": flow.blockchain,
        "transaction_type": "transfer",
        "from": sender or "unknown",
        "to": receiver or "unknown",
        "amounts": [{"symbol": flow.symbol, "amount": amount, "value_usd": usd}],
        "text": text,
        "transaction": {
            "height": flow.hour_ms // 600_000,
            "index_in_block": 0,
            "timestamp": ts_s,
            "hash": tx_hash,
            "fee": "0.0001",
            "fee_symbol": flow.symbol,
            "fee_symbol_price": unit,
            "sub_transactions": [
                {
                    "symbol": flow.symbol,
                    "unit_price_usd": unit,
                    "transaction_type": "transfer",
                    **_inputs_outputs(amount, sender, receiver, tx_hash),
                }
            ],
        },
    }


def matches(subscription: dict[str, Any], alert: dict[str, Any]) -> bool:
    """Whether ``alert`` passes a ``subscribe_alerts`` filter (an empty list means all)."""
    symbols = {s.lower() for s in subscription["symbols"]}
    amounts = alert["amounts"]
    return (
        (not subscription["blockchains"] or alert["blockchain"] in subscription["blockchains"])
        and (not symbols or any(a["symbol"].lower() in symbols for a in amounts))
        and (not subscription["tx_types"] or alert["transaction_type"] in subscription["tx_types"])
        and sum(a["value_usd"] for a in amounts) >= subscription["min_value_usd"]
    )


def _bad_alert(kind: str, alert: dict[str, Any]) -> str:
    if kind == "malformed_json":
        text = json.dumps(alert)
        return text[: len(text) // 2] + "}"
    bad: dict[str, Any] = {
        "wrong_type": {**alert, "timestamp": "yesterday", "amounts": "lots"},
        "missing_field": {k: v for k, v in alert.items() if k not in ("amounts", "transaction")},
        "negative": {
            **alert,
            "amounts": [{**alert["amounts"][0], "amount": -5.0, "value_usd": -100.0}],
        },
        "nan": {**alert, "amounts": [{**alert["amounts"][0], "value_usd": float("nan")}]},
        "unknown_type": {**alert, "type": "mystery"},
    }[kind]
    return json.dumps(bad)


class WhaleFeed:
    """The whale websocket endpoint and the alerts of each replayed bar."""

    def __init__(
        self, flows: list[FlowHour], api_key: str, faults: Faults, send_timeout_seconds: float
    ) -> None:
        self.flows = sorted(flows, key=lambda f: f.hour_ms)
        self._hours = [f.hour_ms for f in self.flows]
        self.api_key = api_key
        self.faults = faults
        self.counters: Counter[str] = faults.counters
        self.hub = Hub("whale", faults.counters, send_timeout_seconds)
        faults.register_dropper("whale", self.hub.drop)
        self.sent_alerts: list[dict[str, Any]] = []  # every distinct alert published, in order

    def flows_between(self, start_ms: int, end_ms: int) -> list[FlowHour]:
        lo = bisect.bisect_left(self._hours, start_ms)
        hi = bisect.bisect_left(self._hours, end_ms)
        return self.flows[lo:hi]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("api_key") != self.api_key:
            self.counters["whale_unauthorized"] += 1
            return web.json_response(
                {"error_code": 401, "error_message": "Invalid API key"}, status=401
            )
        if self.faults.whale_refusing():
            self.counters["whale_refused"] += 1
            return web.json_response(
                {"error_code": 503, "error_message": "Service unavailable"}, status=503
            )
        ws = web.WebSocketResponse(compress=False, timeout=2.0)
        await ws.prepare(request)
        conn = self.hub.add(ws, request)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await ws.send_str(json.dumps(self._on_request(conn, msg.data)))
        finally:
            self.hub.remove(conn)
        return ws

    def _on_request(self, conn: Connection, text: str) -> dict[str, Any]:
        try:
            request = json.loads(text)
        except ValueError:
            return {"error": "invalid JSON"}
        if not isinstance(request, dict) or request.get("type") != "subscribe_alerts":
            return {"error": "unknown request type; expected subscribe_alerts"}
        sub: dict[str, Any] = {name: request.get(name) or [] for name in _FILTER_LISTS}
        sub["min_value_usd"] = request.get("min_value_usd", 0)
        if not all(
            isinstance(sub[n], list) and all(isinstance(x, str) for x in sub[n])
            for n in _FILTER_LISTS
        ):
            return {"error": "blockchains, symbols and tx_types must be lists of strings"}
        if not isinstance(sub["min_value_usd"], int | float) or sub["min_value_usd"] < 0:
            return {"error": "min_value_usd must be a non-negative number"}
        sub["channel_id"] = _digest("channel", conn.id, len(conn.subscriptions))[:8]
        conn.subscriptions.append(sub)
        return {"type": "subscribed_alerts", **sub}

    async def publish(self, start_ms: int, end_ms: int, now_ms: int) -> None:
        """Send the alerts of the flow hours beginning in [start, end), stamped at ``now_ms``
        clamped into their hour; then any armed bad messages (kept armed while no client is
        subscribed, so an injection is never sent to nobody)."""
        alerts = []
        for flow in self.flows_between(start_ms, end_ms):
            ts_s = min(max(now_ms // 1000, flow.hour_ms // 1000), flow.hour_ms // 1000 + 3599)
            alerts += [
                build_alert(flow, inflow, ts_s)
                for inflow, usd in ((True, flow.inflow_usd), (False, flow.outflow_usd))
                if usd > 0
            ]
        self.sent_alerts.extend(alerts)
        listening = any(conn.subscriptions for conn in self.hub.connections.values())
        injected = self.faults.take_whale_injections() if listening else []
        template = alerts[0] if alerts else build_alert(_CANNED, True, now_ms // 1000)
        batches = []
        for conn in self.hub.connections.values():
            msgs = [
                json.dumps({**a, "channel_id": sub["channel_id"]})
                for a in alerts
                for sub in conn.subscriptions
                if matches(sub, a)
            ]
            channel = conn.subscriptions[0]["channel_id"] if conn.subscriptions else ""
            msgs += [_bad_alert(kind, {**template, "channel_id": channel}) for kind in injected]
            for kind in injected:
                self.counters[f"whale_injected:{kind}"] += 1
            self.counters["whale_alerts_sent"] += len(msgs) - len(injected)
            batches.append((conn, msgs))
        await self.hub.fan_out(batches)


_CANNED = FlowHour(0, "bitcoin", "BTC", 1_000_000.0, 10.0, 0.0, 0.0)
