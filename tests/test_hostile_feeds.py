"""Hostile exchange and whale messages (hypothesis): nothing raises, nothing grows without
bound, every rejection is counted.

Candles are fed through the real ccxt Binance client (the adapter's subclass, its message
handler called as its websocket loop calls it), then through the feed's row parsing and
validation. Whale messages go through :meth:`streamer.whale.WhaleFeed.handle` as raw text.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import NOW_MS, FakeClock, rejected_total
from streamer.exchange import ExchangeAdapter
from streamer.simulator import Simulator, SimulatorConfig
from streamer.validation import CandleValidator, candle_from_row
from streamer.whale import MAX_MESSAGE_BYTES, WhaleFeed
from streamer.whale_alert import WhaleReject, parse_alert
from whalecast.domain import Series, WhaleTransfer
from whalecast.metrics import REJECT_REASONS, Metrics
from whalecast.settings import ExchangeSettings, FeedSettings, WhaleSettings

HOUR = 3_600_000
SERIES = Series("binance", "BTC/USDT", "1h")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
)  # fmt: skip
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
#: Numbers as an exchange might send them, and as a hostile one might.
numbers = st.one_of(
    st.floats(min_value=1e-8, max_value=1e6).map(lambda v: f"{v:.8f}"),
    st.sampled_from(
        [
            "NaN",
            "nan",
            "Infinity",
            "-1",
            "0",
            "1e309",
            "-0",
            "",
            "1,5",
            "0x10",
            "１２３",
            "1e-400",
            "100000000000000000000000000000",
        ]
    ),
    scalars,
)


class Recorder:
    """A KlineSink that only counts what the adapter hands on."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, list[Any], bool | None]] = []
        self.malformed = 0

    def on_message(self) -> None:
        return None

    def on_kline(self, symbol: str, timeframe: str, row: list[Any], closed: bool | None,
                 event_ms: int | None = None) -> None:  # fmt: skip
        self.rows.append((symbol, timeframe, row, closed))

    def on_malformed(self) -> None:
        self.malformed += 1

    def on_connected(self) -> None:
        return None

    def on_lost(self, error: BaseException | None) -> None:
        return None


# ---------------------------------------------------------------------------- candles


class Wire:
    """One real ccxt websocket client of the adapter, fed messages as its receive loop does."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.recorder = Recorder()
        self.adapter = self.loop.run_until_complete(self._adapter())
        self.client, self.connection = self.loop.run_until_complete(self._client())

    async def _client(self) -> tuple[Any, Any]:
        client = self.adapter.ws_client(self.recorder)
        return client, client.client(str(self.adapter.settings.ws_url) + "/1")

    def feed(self, messages: list[Any]) -> Recorder:
        """Hand the messages to the client's handler inside its event loop."""
        recorder = self.client.whalecast_sink = Recorder()

        async def handle() -> None:
            for message in messages:
                self.client.handle_message(self.connection, message)  # never raises

        self.loop.run_until_complete(handle())
        return recorder

    @staticmethod
    async def _adapter() -> ExchangeAdapter:
        """The market list comes from the simulator over REST (real ccxt)."""
        async with Simulator(SimulatorConfig(history_bars=30, whale=False)) as sim:
            entry = ExchangeSettings(
                id="binance", symbols=["BTC/USDT", "ETH/USDT"], rest_url=sim.rest_url,
                ws_url=sim.ws_url, enable_rate_limit=False,
            )  # fmt: skip
            made = ExchangeAdapter(entry, FeedSettings())
            rest = made.rest_client()
            try:
                await made.load_markets(rest)
            finally:
                await rest.close()
            return made

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    made = Wire()
    yield made
    made.close()


def kline_events() -> st.SearchStrategy[Any]:
    fields = st.fixed_dictionaries(
        {"t": st.one_of(st.integers(0, 2**63).map(lambda t: t - t % HOUR), numbers),
         "s": st.sampled_from(["BTCUSDT", "ETHUSDT", "NOPEUSDT", "", "btcusdt"]) | scalars,
         "i": st.sampled_from(["1h", "1m", "7x"]) | scalars,
         "o": numbers, "h": numbers, "l": numbers, "c": numbers, "v": numbers,
         "x": st.booleans() | scalars},
        optional={"T": numbers, "n": numbers, "q": numbers},
    )  # fmt: skip
    event = st.fixed_dictionaries({"e": st.just("kline"), "E": st.integers(0, 2**63),
                                   "s": st.sampled_from(["BTCUSDT", "ETHUSDT"]), "k": fields})  # fmt: skip
    return event | st.dictionaries(st.sampled_from(["e", "E", "s", "k", "stream", "data"]),
                                   json_values)  # fmt: skip


@FUZZ
@given(messages=st.lists(kline_events() | json_values, min_size=1, max_size=5))
def test_exchange_messages_never_break_the_client(wire: Wire, messages: list[Any]) -> None:
    recorder = wire.feed(messages)
    for symbol, _timeframe, row, closed in recorder.rows:
        assert isinstance(symbol, str | type(None)) and isinstance(row, list)
        assert closed in (True, False, None)
    # its per-symbol caches stay bounded by ohlcv_cache_limit
    for by_timeframe in wire.client.ohlcvs.values():
        for cache in by_timeframe.values():
            assert len(cache) <= FeedSettings().ohlcv_cache_limit


@FUZZ
@given(row=st.lists(numbers, max_size=8) | json_values, closed=st.booleans())
def test_every_row_is_a_valid_candle_or_one_counted_rejection(row: Any, closed: bool) -> None:
    metrics = Metrics(process=False)
    validator = CandleValidator(FeedSettings(), FakeClock(), metrics)
    candle = candle_from_row(SERIES, row, closed) if isinstance(row, list) else None
    accepted = validator.accept(candle)
    assert rejected_total(metrics, "candles") == (0 if accepted else 1)
    if accepted:
        assert candle is not None and candle.problem() is None
        values = (candle.open, candle.high, candle.low, candle.close, candle.volume)
        assert all(math.isfinite(v) for v in values)
        assert math.isfinite(candle.volume * candle.close)
        assert candle.open_ms % HOUR == 0


def test_extreme_but_finite_values_are_refused_before_they_poison_features() -> None:
    metrics = Metrics(process=False)
    validator = CandleValidator(FeedSettings(), FakeClock(), metrics)
    huge = candle_from_row(
        SERIES, [NOW_MS - HOUR, "1e300", "1e300", "1e300", "1e300", "1e300"], True
    )
    assert not validator.accept(huge)  # volume × close is not finite: dollar volume would be inf
    assert rejected_total(metrics, "candles") == 1


# ---------------------------------------------------------------------------- whale alerts


def alert_like() -> st.SearchStrategy[Any]:
    amount = st.fixed_dictionaries(
        {"symbol": st.sampled_from(["BTC", "ETH", "usdt", ""]) | scalars,
         "amount": numbers, "value_usd": numbers})  # fmt: skip
    side = st.fixed_dictionaries({"owner": scalars, "owner_type": st.sampled_from(
        ["exchange", "unknown", ""]) | scalars, "amount": numbers})  # fmt: skip
    sub = st.fixed_dictionaries({"symbol": scalars | st.just("BTC"),
                                 "inputs": st.lists(side, max_size=3) | json_values,
                                 "outputs": st.lists(side, max_size=3) | json_values})  # fmt: skip
    return st.fixed_dictionaries(
        {
            "type": st.just("alert"),
            "timestamp": st.integers(NOW_MS // 1000 - 10**6, NOW_MS // 1000 + 10**3) | numbers,
            "blockchain": st.sampled_from(["bitcoin", "ethereum"]) | scalars,
            "amounts": st.lists(amount, max_size=3) | json_values,
            "transaction": st.fixed_dictionaries(
                {
                    "hash": st.text(max_size=6) | scalars,
                    "sub_transactions": st.lists(sub, max_size=2),
                }
            )
            | json_values,
        },
    )


@FUZZ
@given(alert=alert_like() | st.dictionaries(st.text(max_size=10), json_values))
def test_alert_parser_rejects_with_a_reason_or_gives_clean_transfers(alert: dict[str, Any]) -> None:
    try:
        transfers = parse_alert(alert)
    except WhaleReject as e:
        assert e.reason in REJECT_REASONS
        return
    for transfer in transfers:
        assert isinstance(transfer, WhaleTransfer)
        assert math.isfinite(transfer.usd) and transfer.usd >= 0
        assert math.isfinite(transfer.amount) and transfer.amount >= 0


def raw_messages() -> st.SearchStrategy[str | bytes]:
    as_json = (alert_like() | json_values).map(lambda v: json.dumps(v, allow_nan=True))
    return as_json | st.text(max_size=200) | st.binary(max_size=200) | st.sampled_from(
        ["[" * 100_000 + "]" * 100_000, '{"type": "alert"', "x" * (MAX_MESSAGE_BYTES + 1),
         '{"type": "subscribed_alerts", "channel_id": 7}', '{"type": "error", "error": "no"}'])  # fmt: skip


@FUZZ
@given(raws=st.lists(raw_messages(), min_size=1, max_size=6))
def test_whale_messages_are_used_or_counted_never_raised(raws: list[str | bytes]) -> None:
    metrics = Metrics(process=False)
    delivered: list[WhaleTransfer] = []

    async def on_transfers(transfers: list[WhaleTransfer]) -> None:
        delivered.extend(transfers)

    feed = WhaleFeed(WhaleSettings(), FeedSettings(), metrics, on_transfers, clock=FakeClock())

    async def run() -> int:
        used = 0
        for raw in raws:
            before = (rejected_total(metrics, "whale"), len(delivered))
            await feed.handle(raw)
            after = (rejected_total(metrics, "whale"), len(delivered))
            counted, delivered_now = after[0] - before[0], after[1] - before[1]
            assert counted in (0, 1)
            assert counted == 0 or delivered_now == 0
            used += counted or bool(delivered_now)
        return used

    used = asyncio.run(run())
    messages = metrics.registry.get_sample_value(
        "whalecast_feed_messages_total", {"exchange": "whale", "feed": "alerts"}
    )
    assert messages == len(raws)
    assert used <= len(raws)
    assert len(feed._seen) <= 10_000  # the duplicate filter stays bounded
