"""The exchange simulator: Binance spot REST + websocket and Whale Alert's websocket on one
port of 127.0.0.1, replaying history (or synthetic series) on a virtual clock.

The clock either runs by itself (``bar_seconds`` of wall time per bar, forming updates
spread inside it) or is stepped by :meth:`Simulator.advance` (``bar_seconds=None``).
Each bar: ``forming_updates`` forming events (``x: false``), each followed by the whale
alerts of the flow hours that have begun by then (the rest of the bar's hours just
before it closes), then the closed event (``x: true``) once the bar is closed on REST
too. An alert is stamped at the virtual now (minus ``whale_delay_seconds``), inside its hour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from streamer.simulator import data as simdata
from streamer.simulator.binance_rest import API, BinanceRest
from streamer.simulator.binance_ws import BinanceStream
from streamer.simulator.control import control_routes
from streamer.simulator.data import Bars, FlowHour
from streamer.simulator.faults import Faults
from streamer.simulator.market import Market
from streamer.simulator.whale import WhaleFeed
from whalecast.domain import timeframe_ms
from whalecast.logs import get_logger

log = get_logger(__name__)
Pace = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class SimulatorConfig:
    """What to replay and how. Empty ``data`` and no ``synthetic``: the shipped 1h slice."""

    data: tuple[Path, ...] = ()  # candle CSVs (timestamp_ms,open,high,low,close,volume)
    synthetic: int | None = None  # this many synthetic symbols instead of CSVs
    synthetic_bars: int = 2000  # bars per synthetic series
    seed: int = 7
    timeframe: str = "1h"
    bar_seconds: float | None = None  # wall seconds per bar; None: stepped by advance()
    history_bars: int = 200  # bars already closed when the replay starts
    start_ms: int | None = None  # or the open time of the first forming bar
    forming_updates: int = 2  # x=false events per bar before the closed one
    host: str = "127.0.0.1"
    port: int = 0
    whale: bool = True
    whale_data: tuple[Path, ...] = ()  # flow CSVs; empty: the shipped ones (CSV mode)
    whale_api_key: str = "simulator-key"
    whale_delay_seconds: float = 0.0  # an alert is sent this long after its block time
    max_streams_per_connection: int = 1024
    max_messages_per_second: float = 5.0
    send_timeout_seconds: float = 10.0
    ws_ping_seconds: float | None = 20.0  # server pings, as Binance sends every 20 s
    connection_lifetime_seconds: float | None = None  # Binance closes connections after 24 h

    def load_series(self) -> list[Bars]:
        if self.synthetic is not None:
            return simdata.synthetic_series(
                self.synthetic, self.timeframe, self.seed, self.synthetic_bars
            )
        paths = self.data or tuple(simdata.shipped_candle_files())
        bar_ms = timeframe_ms(self.timeframe)
        return [simdata.load_candles(Path(p), bar_ms) for p in paths]

    def load_flows(self, market: Market) -> list[FlowHour]:
        if self.synthetic is not None and not self.whale_data:
            return simdata.synthetic_stablecoin_flows(market.first_ms, market.end_ms, self.seed)
        paths = self.whale_data or tuple(simdata.shipped_flow_files())
        return [flow for p in paths for flow in simdata.load_flows(Path(p))]


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        bar_ms = timeframe_ms(config.timeframe)
        series = config.load_series()
        first_ms = min(int(b.open_ms[0]) for b in series)
        start_ms = (
            config.start_ms
            if config.start_ms is not None
            else first_ms + config.history_bars * bar_ms
        )
        self.market = Market(series, config.timeframe, bar_ms, start_ms)
        self.faults = Faults()
        self.rest = BinanceRest(self.market, self.faults)
        self.stream = BinanceStream(
            self.market,
            self.faults,
            config.max_streams_per_connection,
            config.max_messages_per_second,
            config.send_timeout_seconds,
        )
        self.whale: WhaleFeed | None = None
        if config.whale:
            self.whale = WhaleFeed(
                config.load_flows(self.market),
                config.whale_api_key,
                self.faults,
                config.send_timeout_seconds,
            )
        self._lock = asyncio.Lock()
        self._whale_sent_ms = self.market.cursor_ms  # flow hours before the start stay history
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self.bars_played = 0

    # -- addresses and state ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """What ccxt's ``urls['api']['public']`` needs (``.../api/v3``)."""
        return self.base_url + API

    @property
    def ws_url(self) -> str:
        """Binance spot websocket base (contains ``/stream``; ccxt appends ``/<n>``)."""
        return f"ws://{self.config.host}:{self.port}/stream"

    @property
    def whale_url(self) -> str:
        """Whale Alert websocket URL without the key (add ``?api_key=...``)."""
        return f"ws://{self.config.host}:{self.port}/whale/ws"

    @property
    def symbols(self) -> list[str]:
        return self.market.symbols

    def exchange_section(self) -> dict[str, Any]:
        """The ``exchanges`` entry (config mapping) that points a daemon's feed here."""
        return {
            "id": "binance", "symbols": list(self.symbols), "timeframe": self.timeframe,
            "rest_url": self.rest_url, "ws_url": self.ws_url, "enable_rate_limit": False,
        }  # fmt: skip

    def whale_section(self) -> dict[str, Any]:
        """The ``whale`` section that points a daemon's whale feed here."""
        return {"enabled": True, "url": self.whale_url, "api_key": self.config.whale_api_key}

    @property
    def timeframe(self) -> str:
        return self.market.timeframe

    @property
    def now_ms(self) -> int:
        """Virtual time: the forming bar's open time plus its progress."""
        return self.market.now_ms

    @property
    def finished(self) -> bool:
        return self.market.finished

    def closed_bars(self, symbol: str) -> list[tuple[int, float, float, float, float, float]]:
        """``(open_ms, open, high, low, close, volume)`` of every bar closed so far."""
        return self.market.closed_bars(symbol)

    # -- lifecycle --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.rest.faults_middleware])
        app.add_routes(self.rest.routes())
        app.add_routes(
            [
                web.get("/stream", self.stream.handle),
                web.get("/stream/{tail:.*}", self.stream.handle),
            ]
        )
        if self.whale is not None:
            app.add_routes([web.get("/whale/ws", self.whale.handle)])
        app.add_routes(control_routes(self))
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        config = self.config
        if config.bar_seconds is not None:
            self._tasks.append(asyncio.create_task(self._run_clock(config.bar_seconds)))
        if config.ws_ping_seconds is not None or config.connection_lifetime_seconds is not None:
            keepalive = self.stream.keepalive(
                config.ws_ping_seconds, config.connection_lifetime_seconds
            )
            self._tasks.append(asyncio.create_task(keepalive))
        log.info(
            "simulator_started",
            url=self.base_url,
            symbols=len(self.symbols),
            timeframe=self.timeframe,
            now_ms=self.now_ms,
            bar_seconds=self.config.bar_seconds,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.stream.cancel_later()
        await self.stream.hub.drop()
        if self.whale is not None:
            await self.whale.hub.drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the clock --------------------------------------------------------------------

    async def advance(self, bars: int = 1) -> int:
        """Play ``bars`` bars now (forming updates, whale alerts, close). Returns when every
        event was written to every connection; the count played (fewer at the end)."""
        played = 0
        for _ in range(bars):
            if not await self._play_bar(_no_pace):
                break
            played += 1
        return played

    async def _run_clock(self, bar_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        origin = loop.time()
        k = 0
        while not self.market.finished:
            bar_start = origin + k * bar_seconds

            async def pace(fraction: float, bar_start: float = bar_start) -> None:
                delay = bar_start + fraction * bar_seconds - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)

            await self._play_bar(pace)
            k += 1
        log.info("simulator_finished", bars_played=self.bars_played, now_ms=self.now_ms)

    async def _play_bar(self, pace: Pace) -> bool:
        async with self._lock:
            market = self.market
            if market.finished:
                return False
            if self.whale is not None and self.faults.take_whale_flap():
                await self.whale.hub.drop()
            live = market.live()
            n = self.config.forming_updates
            for j in range(1, n + 1):
                await pace(j / (n + 1))
                market.fraction = j / (n + 1)
                await self.stream.publish(self.stream.forming_phase(live))
                await self._publish_whale(market.now_ms + 1)
            await pace(1.0)
            market.fraction = 1.0
            await self._publish_whale(market.cursor_ms + market.bar_ms)
            market.step()
            await self.stream.publish(self.stream.closed_phase(live, market.now_ms))
            self.faults.bar_done()
            self.bars_played += 1
            return True

    async def _publish_whale(self, until_ms: int) -> None:
        """Alerts of the flow hours that began before ``until_ms`` minus the whale delay and
        were not sent yet, with block times that much before now."""
        delay_ms = round(self.config.whale_delay_seconds * 1000)
        until_ms -= delay_ms
        if self.whale is not None and until_ms > self._whale_sent_ms:
            await self.whale.publish(self._whale_sent_ms, until_ms, self.market.now_ms - delay_ms)
            self._whale_sent_ms = until_ms


async def _no_pace(fraction: float) -> None:
    return None
