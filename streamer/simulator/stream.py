"""What every exchange's kline websocket in the simulator shares: connections, limits,
keepalive, fan-out, the per-bar phases of events and the injected bad messages.

A protocol (Binance, Bybit, OKX) subclasses :class:`KlineStream` and says how a topic
is named, how a candle looks on its wire (:meth:`KlineStream.fields` and
:meth:`KlineStream.render`), which keys of it hold what (:class:`WireKeys`, so one
table derives every bad message from the real one) and how it answers a client's text
(subscriptions, pings).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from streamer.simulator.data import Bars
from streamer.simulator.faults import Faults
from streamer.simulator.hub import Connection, Hub
from streamer.simulator.market import Candle, Market
from streamer.simulator.wire import fmt

AFTER_REAL = ("duplicate", "out_of_order")  # bad messages that follow the real closed bar
#: topic → messages (text, injected fault kind or None), in series order.
Phase = dict[str, list[tuple[str, str | None]]]


@dataclass(frozen=True)
class WireKeys:
    """Where a protocol's candle fields keep each value (names or list positions)."""

    times: tuple[Any, ...]  # open time first, then any close/end time derived from it
    open: Any
    high: Any
    low: Any
    close: Any
    volume: Any
    symbol: Any
    closed: Any


@dataclass(frozen=True)
class ClosePlan:
    """What happens to one series' closed event this bar, the same on every exchange."""

    withheld: bool
    delay: float | None
    kinds: tuple[str, ...]


def plan_closes(faults: Faults, closing: list[tuple[Bars, int]]) -> dict[str, ClosePlan]:
    """Takes this bar's armed close faults, once per series."""
    plans = {}
    for bars, _ in closing:
        withheld = faults.take_withheld(bars.symbol)
        delay = None if withheld else faults.take_close_delay(bars.symbol)
        plans[bars.symbol] = ClosePlan(withheld, delay, tuple(faults.kinds_for(bars.symbol)))
    return plans


@dataclass(frozen=True)
class StreamLimits:
    max_topics: int  # per connection
    max_messages_per_second: float  # incoming, pings included
    send_timeout_seconds: float


class KlineStream:
    """One exchange's kline websocket; subclasses speak the protocol."""

    name = "exchange"
    keys: WireKeys

    def __init__(self, market: Market, faults: Faults, limits: StreamLimits) -> None:
        self.market = market
        self.faults = faults
        self.counters: Counter[str] = faults.counters
        self.limits = limits
        self.max_streams = limits.max_topics
        self.hub = Hub("exchange", faults.counters, limits.send_timeout_seconds)
        faults.register_dropper(f"exchange:{self.name}", self.hub.drop)
        self._topics: dict[str, str] = {}
        self._later: set[asyncio.Task[None]] = set()

    # -- the protocol (subclasses) ----------------------------------------------------

    def topic_for(self, bars: Bars) -> str:
        raise NotImplementedError

    def fields(self, candle: Candle, bars: Bars) -> Any:
        """The candle as the protocol's JSON value (a dict or list the faults may edit)."""
        raise NotImplementedError

    def render(self, fields: Any, bars: Bars, event_ms: int) -> str:
        """One websocket message carrying ``fields``."""
        raise NotImplementedError

    def event_text(self, candle: Candle, bars: Bars, event_ms: int) -> str:
        """The real event (a subclass may build it faster than ``render(fields(...))``)."""
        return self.render(self.fields(candle, bars), bars, event_ms)

    async def on_text(self, conn: Connection, text: str) -> None:
        """A client's text message (subscribe, ping, ...)."""
        raise NotImplementedError

    def refused(self) -> web.Response:
        """The answer to a handshake while the exchange refuses connections."""
        return web.json_response({"code": -1, "msg": "Service unavailable."}, status=503)

    # -- connections ------------------------------------------------------------------

    def topic(self, bars: Bars) -> str:
        name = self._topics.get(bars.symbol)
        if name is None:
            name = self._topics[bars.symbol] = self.topic_for(bars)
        return name

    async def handle(self, request: web.Request) -> web.StreamResponse:
        held = self.faults.holding()
        if held:
            self.counters["exchange_held"] += 1
            await asyncio.sleep(held)
            return self.refused()
        if self.faults.refusing():
            self.counters["exchange_refused"] += 1
            return self.refused()
        ws = web.WebSocketResponse(autoping=False, compress=False, timeout=2.0)
        await ws.prepare(request)
        conn = self.hub.add(ws, request)
        try:
            async for msg in ws:
                conn.heard = time.monotonic()
                if self._over_rate(conn):
                    self.counters["exchange_rate_limited"] += 1
                    await self.hub.close(conn, WSCloseCode.POLICY_VIOLATION, "Too many requests")
                    break
                if msg.type is WSMsgType.PING:
                    await self._pong(conn, msg.data)
                elif msg.type is WSMsgType.TEXT:
                    await self.on_text(conn, msg.data)
        finally:
            self.hub.remove(conn)
        return ws

    async def _pong(self, conn: Connection, data: bytes) -> None:
        if self.faults.stalled():
            self.counters["stall_pongs_withheld"] += 1
        else:
            await conn.ws.pong(data)

    async def reply(self, conn: Connection, text: str) -> None:
        """An answer to the client (withheld while stalled)."""
        if self.faults.stalled():
            self.counters["stall_replies_withheld"] += 1
            return
        conn.heard = time.monotonic()
        await conn.ws.send_str(text)

    def _over_rate(self, conn: Connection) -> bool:
        now = time.monotonic()
        conn.incoming.append(now)
        while conn.incoming and conn.incoming[0] <= now - 1.0:
            conn.incoming.popleft()
        return len(conn.incoming) > self.limits.max_messages_per_second

    async def keepalive(
        self,
        ping_seconds: float | None,
        lifetime_seconds: float | None,
        idle_seconds: float | None = None,
    ) -> None:
        """Ping every connection every ``ping_seconds`` (not while stalled), close it with
        1001 once older than ``lifetime_seconds`` and close it once nothing went either
        way for ``idle_seconds``."""
        periods = [x for x in (ping_seconds, lifetime_seconds, idle_seconds) if x is not None]
        period = min(*periods, 1.0) if idle_seconds is not None else min(periods)
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            ping = ping_seconds is not None and now - last_ping >= ping_seconds - 1e-3
            if ping:
                last_ping = now
            for conn in list(self.hub.connections.values()):
                await self._keep(conn, now, ping, lifetime_seconds, idle_seconds)

    async def _keep(
        self,
        conn: Connection,
        now: float,
        ping: bool,
        lifetime_seconds: float | None,
        idle_seconds: float | None,
    ) -> None:
        if lifetime_seconds is not None and now - conn.opened >= lifetime_seconds:
            self.counters["exchange_lifetime_closed"] += 1
            await self.hub.close(conn, WSCloseCode.GOING_AWAY, "connection lifetime reached")
        elif idle_seconds is not None and now - max(conn.heard, conn.opened) >= idle_seconds:
            self.counters["exchange_idle_closed"] += 1
            await self.hub.close(conn, WSCloseCode.GOING_AWAY, "idle")
        elif ping and not self.faults.stalled():
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.ping()

    # -- events -----------------------------------------------------------------------

    def forming_phase(self, live: list[tuple[Bars, int]]) -> Phase:
        """The forming bar ``i`` of each live series at the market's current progress."""
        market, now = self.market, self.market.now_ms
        return {
            self.topic(bars): [(self.event_text(market.forming_candle(bars, i), bars, now), None)]
            for bars, i in live
        }

    def closed_phase(
        self, closing: list[tuple[Bars, int]], event_ms: int, plans: dict[str, ClosePlan]
    ) -> Phase:
        """The final event of each closing bar as ``plans`` say, with its bad messages."""
        market, phase = self.market, Phase()
        for bars, i in closing:
            plan = plans[bars.symbol]
            real = self.event_text(market.closed_candle(bars, i), bars, event_ms)
            name = self.topic(bars)
            late = plan.withheld or plan.delay is not None
            sent: list[tuple[str, str | None]] = [] if late else [(real, None)]
            if plan.delay is not None:
                self._publish_later(plan.delay, {name: [(real, None)]})
            before: list[tuple[str, str | None]] = []
            after: list[tuple[str, str | None]] = []
            for kind in plan.kinds:
                text = self.bad_event(kind, bars, i, event_ms)
                if text is not None:
                    (after if kind in AFTER_REAL else before).append((text, kind))
            phase[name] = [*before, *sent, *after]
        return phase

    def bad_event(self, kind: str, bars: Bars, i: int, event_ms: int) -> str | None:
        """One bad message of ``kind`` derived from bar ``i``'s closed event (None: n/a)."""
        market = self.market
        fields = self.fields(market.closed_candle(bars, i), bars)
        if kind == "malformed_json":
            text = self.render(fields, bars, event_ms)
            return text[: len(text) // 2] + "}"
        if kind == "out_of_order":
            if i < 1:
                return None
            fields = self.fields(market.closed_candle(bars, i - 1), bars)
        elif kind != "duplicate":
            _edit(fields, kind, self.keys, market.bar_ms, "NOSUCH" + bars.quote)
        return self.render(fields, bars, event_ms)

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
        """Send each connection the events of the topics it subscribed (nothing if stalled)."""
        batches = []
        for conn in self.hub.connections.values():
            msgs = [
                item for stream, items in phase.items() if stream in conn.streams for item in items
            ]
            batches.append((conn, msgs))
        if self.faults.stalled():
            self.counters["stall_events_withheld"] += sum(len(m) for _, m in batches)
            return
        now = time.monotonic()
        for conn, msgs in batches:
            if msgs:
                conn.heard = now
            for _, kind in msgs:
                if kind is not None:
                    self.counters[f"injected:{kind}"] += 1
        await self.hub.fan_out((conn, [text for text, _ in msgs]) for conn, msgs in batches)


def _retyped(value: Any) -> Any:
    """The same value as the wrong JSON type (a flag as text, a text flag as a number)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return int(value) if value.isdigit() else [value]
    return str(value)


def _shift(value: Any, by: int) -> Any:
    return str(int(value) + by) if isinstance(value, str) else int(value) + by


def _edit(fields: Any, kind: str, keys: WireKeys, bar_ms: int, unknown_symbol: str) -> None:
    """Turns the real candle ``fields`` into the bad message ``kind`` (in place)."""
    shift = {"off_grid": bar_ms // 2 + 1, "future": 1000 * bar_ms}.get(kind)
    if shift is not None:
        for key in keys.times:
            fields[key] = _shift(fields[key], shift)
        return
    price = float(fields[keys.close])
    if kind == "wrong_type":
        fields[keys.times[0]] = f"{fields[keys.times[0]]}ms"
        fields[keys.open] = {"price": fields[keys.open]}
        fields[keys.closed] = _retyped(fields[keys.closed])
    elif kind == "nan":
        for key in (keys.open, keys.high, keys.low, keys.close):
            fields[key] = "NaN"
    elif kind == "negative":
        fields[keys.close], fields[keys.volume] = fmt(-price), "-1.00000000"
    elif kind == "high_below_low":
        fields[keys.high] = fmt(round(float(fields[keys.low]) * 0.99, 8))
    elif kind == "unknown_symbol":
        fields[keys.symbol] = unknown_symbol
    else:
        raise ValueError(f"unknown kline fault {kind!r}")
