"""Binance's spot websocket market streams, as far as kline subscriptions go.

Client → server (one message may subscribe many streams)::

    {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h", "ethusdt@kline_1h"], "id": 1}

answered ``{"result": null, "id": 1}``; errors come as
``{"error": {"code": 2, "msg": "Invalid request: ..."}, "id": 1}``. Events go out raw
(as on ``/ws``), see :mod:`streamer.simulator.wire`. Limits as Binance documents
them: at most ``max_streams`` streams per connection (1024), at most
``max_messages_per_second`` incoming messages (5/s, pings included), else the
connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from streamer.simulator.data import Bars
from streamer.simulator.faults import Faults
from streamer.simulator.hub import Connection, Hub
from streamer.simulator.market import Market
from streamer.simulator.wire import fmt, kline_event, kline_fields, kline_text

AFTER_REAL = ("duplicate", "out_of_order")  # bad messages that follow the real closed bar
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS")
#: stream name → messages (text, injected fault kind or None), in series order.
Phase = dict[str, list[tuple[str, str | None]]]


class BinanceStream:
    def __init__(
        self,
        market: Market,
        faults: Faults,
        max_streams: int,
        max_messages_per_second: float,
        send_timeout_seconds: float,
    ) -> None:
        self.market = market
        self.faults = faults
        self.counters: Counter[str] = faults.counters
        self.max_streams = max_streams
        self.max_messages_per_second = max_messages_per_second
        self.hub = Hub("exchange", faults.counters, send_timeout_seconds)
        faults.register_dropper("exchange", self.hub.drop)
        self._names: dict[str, str] = {}
        self._later: set[asyncio.Task[None]] = set()

    def stream_name(self, bars: Bars) -> str:
        name = self._names.get(bars.symbol)
        if name is None:
            name = self._names[bars.symbol] = f"{bars.wire.lower()}@kline_{self.market.timeframe}"
        return name

    # -- connections ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.faults.refusing():
            self.counters["exchange_refused"] += 1
            return web.json_response({"code": -1, "msg": "Service unavailable."}, status=503)
        ws = web.WebSocketResponse(autoping=False, compress=False, timeout=2.0)
        await ws.prepare(request)
        conn = self.hub.add(ws, request)
        try:
            async for msg in ws:
                if self._over_rate(conn):
                    self.counters["exchange_rate_limited"] += 1
                    await self.hub.close(conn, WSCloseCode.POLICY_VIOLATION, "Too many requests")
                    break
                await self._on_message(conn, msg.type, msg.data)
        finally:
            self.hub.remove(conn)
        return ws

    async def keepalive(self, ping_seconds: float | None, lifetime_seconds: float | None) -> None:
        """Ping every connection every ``ping_seconds`` (Binance: 20 s; not while stalled) and
        close it with 1001 once older than ``lifetime_seconds`` (Binance: 24 h)."""
        period = min(x for x in (ping_seconds, lifetime_seconds) if x is not None)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.hub.connections.values()):
                if lifetime_seconds is not None and now - conn.opened >= lifetime_seconds:
                    self.counters["exchange_lifetime_closed"] += 1
                    await self.hub.close(
                        conn, WSCloseCode.GOING_AWAY, "connection lifetime reached"
                    )
                elif ping_seconds is not None and not self.faults.stalled():
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await conn.ws.ping()

    def _over_rate(self, conn: Connection) -> bool:
        now = time.monotonic()
        conn.incoming.append(now)
        while conn.incoming and conn.incoming[0] <= now - 1.0:
            conn.incoming.popleft()
        return len(conn.incoming) > self.max_messages_per_second

    async def _on_message(self, conn: Connection, kind: WSMsgType, data: Any) -> None:
        if kind is WSMsgType.PING:
            if self.faults.stalled():
                self.counters["stall_pongs_withheld"] += 1
            else:
                await conn.ws.pong(data)
        elif kind is WSMsgType.TEXT:
            await self._reply(conn, self._on_request(conn, data))

    async def _reply(self, conn: Connection, reply: dict[str, Any]) -> None:
        if self.faults.stalled():
            self.counters["stall_replies_withheld"] += 1
            return
        await conn.ws.send_str(json.dumps(reply, separators=(",", ":")))

    def _on_request(self, conn: Connection, text: str) -> dict[str, Any]:
        try:
            rid, method, params = _parse_request(text)
        except RequestError as e:
            return e.reply
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams), "id": rid}
        if method == "UNSUBSCRIBE":
            conn.streams.difference_update(params)
            return {"result": None, "id": rid}
        wanted = conn.streams.union(params)
        if len(wanted) > self.max_streams:
            self.counters["exchange_too_many_streams"] += 1
            msg = f"Invalid request: too many streams (max {self.max_streams} per connection)"
            return _error(2, msg, rid)
        conn.streams = wanted
        return {"result": None, "id": rid}

    # -- events -----------------------------------------------------------------------

    def forming_phase(self, live: list[tuple[Bars, int]]) -> Phase:
        """The forming bar ``i`` of each live series at the market's current progress."""
        market, tf, bar_ms, now = (
            self.market,
            self.market.timeframe,
            self.market.bar_ms,
            self.market.now_ms,
        )
        return {
            self.stream_name(bars): [
                (kline_text(market.forming_candle(bars, i), bars.wire, tf, bar_ms, now), None)
            ]
            for bars, i in live
        }

    def closed_phase(self, closing: list[tuple[Bars, int]], event_ms: int) -> Phase:
        """The final (``x: true``) event of each closing bar, with any armed bad messages."""
        market, phase = self.market, Phase()
        for bars, i in closing:
            candle = market.closed_candle(bars, i)
            real = kline_text(candle, bars.wire, market.timeframe, market.bar_ms, event_ms)
            name = self.stream_name(bars)
            withheld = self.faults.take_withheld(bars.symbol)
            delay = None if withheld else self.faults.take_close_delay(bars.symbol)
            sent: list[tuple[str, str | None]] = [] if withheld or delay else [(real, None)]
            if delay:
                self._publish_later(delay, {name: [(real, None)]})
            kinds = self.faults.kinds_for(bars.symbol)
            if not kinds:
                phase[name] = sent
                continue
            k = kline_fields(candle, bars.wire, market.timeframe, market.bar_ms)
            before: list[tuple[str, str | None]] = []
            after: list[tuple[str, str | None]] = []
            for kind in kinds:
                text = _bad_event(kind, k, bars, i, market=market, event_ms=event_ms)
                if text is not None:
                    (after if kind in AFTER_REAL else before).append((text, kind))
            phase[name] = [*before, *sent, *after]
        return phase

    def _publish_later(self, seconds: float, phase: Phase) -> None:
        async def later() -> None:
            await asyncio.sleep(seconds)
            await self.publish(phase)

        task = asyncio.get_running_loop().create_task(later())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def cancel_later(self) -> None:
        """Forget delayed events not sent yet (at shutdown)."""
        for task in list(self._later):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def publish(self, phase: Phase) -> None:
        """Send each connection the events of the streams it subscribed (nothing if stalled)."""
        batches = []
        for conn in self.hub.connections.values():
            msgs = [
                item for stream, items in phase.items() if stream in conn.streams for item in items
            ]
            batches.append((conn, msgs))
        if self.faults.stalled():
            self.counters["stall_events_withheld"] += sum(len(m) for _, m in batches)
            return
        for _, msgs in batches:
            for _, kind in msgs:
                if kind is not None:
                    self.counters[f"injected:{kind}"] += 1
        await self.hub.fan_out((conn, [text for text, _ in msgs]) for conn, msgs in batches)


def _error(code: int, msg: str, rid: Any) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": rid}


class RequestError(Exception):
    """A client request Binance would refuse; ``reply`` is the error message to send."""

    def __init__(self, code: int, msg: str, rid: Any = None) -> None:
        super().__init__(msg)
        self.reply = _error(code, msg, rid)


def _parse_request(text: str) -> tuple[Any, str, list[str]]:
    """``(id, method, params)`` of a control message, or :class:`RequestError`."""
    try:
        request = json.loads(text)
    except ValueError as e:
        raise RequestError(3, f"Invalid JSON: {e}") from e
    if not isinstance(request, dict):
        raise RequestError(2, "Invalid request: expected an object")
    rid, method, params = request.get("id"), request.get("method"), request.get("params", [])
    if method not in METHODS:
        msg = f"Invalid request: unknown variant {method!r}, expected one of {', '.join(METHODS)}"
        raise RequestError(2, msg, rid)
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise RequestError(1, "Invalid value type: expected a list of stream names", rid)
    return rid, method, params


def _bad_event(
    kind: str, k: dict[str, Any], bars: Bars, i: int, *, market: Market, event_ms: int
) -> str | None:
    """One bad message of ``kind`` derived from the closed bar ``k`` (None: not applicable)."""
    bar_ms = market.bar_ms
    if kind == "malformed_json":
        text = kline_event(k, event_ms)
        return text[: len(text) // 2] + "}"
    if kind == "duplicate":
        return kline_event(k, event_ms)
    if kind == "out_of_order":
        if i < 1:
            return None
        old = market.closed_candle(bars, i - 1)
        return kline_event(kline_fields(old, bars.wire, market.timeframe, bar_ms), event_ms)
    shift = {"off_grid": bar_ms // 2 + 1, "future": 1000 * bar_ms}.get(kind)
    if shift is not None:
        return kline_event({**k, "t": k["t"] + shift, "T": k["T"] + shift}, event_ms)
    edits: dict[str, dict[str, Any]] = {
        "wrong_type": {"t": f"{k['t']}ms", "o": {"price": k["o"]}, "x": "true"},
        "nan": {"o": "NaN", "h": "NaN", "l": "NaN", "c": "NaN"},
        "negative": {"c": fmt(-float(k["c"])), "v": "-1.00000000"},
        "high_below_low": {"h": fmt(round(float(k["l"]) * 0.99, 8))},
        "unknown_symbol": {"s": "NOSUCH" + bars.quote},
    }
    return kline_event({**k, **edits[kind]}, event_ms)
