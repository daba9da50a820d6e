"""Whale alerts: classification of real-shaped messages, and the feed against the simulator."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog

from streamer.simulator import WHALE_FAULTS, Simulator, SimulatorConfig
from streamer.whale import WhaleFeed
from streamer.whale_alert import WhaleReject, parse_alert
from testkit.polling import wait_until
from tests.feed_helpers import feed_settings
from whalecast.domain import Flow, WhaleTransfer
from whalecast.logs import configure_logging
from whalecast.metrics import Metrics
from whalecast.settings import LogSettings, WhaleSettings

KEY = "wa-secret-4f1c9e"


def side(owner: str, owner_type: str, amount: str, address: str) -> dict[str, Any]:
    return {"amount": amount, "address": address, "balance": "0", "locked": "0",
            "is_frozen": False, "owner": owner, "owner_type": owner_type,
            "address_type": "hot_wallet" if owner_type == "exchange" else "unknown"}  # fmt: skip


def alert(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], *, symbol: str = "BTC",
          amount: float = 784.0, usd: float = 53_625_145.0) -> dict[str, Any]:  # fmt: skip
    """An alert in Whale Alert's websocket shape (owner names as from/to, types inside)."""
    return {
        "type": "alert", "channel_id": "3f2a9c1d", "timestamp": 1730730600,
        "blockchain": "bitcoin", "transaction_type": "transfer",
        "from": inputs[0]["owner"] or "unknown", "to": outputs[0]["owner"] or "unknown",
        "amounts": [{"symbol": symbol, "amount": amount, "value_usd": usd}],
        "text": f"{amount:,.0f} #{symbol} ({usd:,.0f} USD) transferred",
        "transaction": {
            "height": 869450, "index_in_block": 0, "timestamp": 1730730600, "hash": "9b1c0e",
            "fee": "0.0001", "fee_symbol": symbol, "fee_symbol_price": "68399.93",
            "sub_transactions": [{"symbol": symbol, "unit_price_usd": "68399.93",
                                  "transaction_type": "transfer",
                                  "inputs": inputs, "outputs": outputs}],
        },
    }  # fmt: skip


UNKNOWN = side("", "unknown", "784.0", "bc1qm3")
BINANCE = side("binance", "exchange", "784.0", "bc1qx9")


def test_inflow_outflow_internal_and_other_are_told_apart() -> None:
    cases = {
        Flow.INFLOW: alert([UNKNOWN], [BINANCE]),
        Flow.OUTFLOW: alert([BINANCE], [UNKNOWN]),
        Flow.INTERNAL: alert([BINANCE], [side("coinbase", "exchange", "784.0", "bc1qc0")]),
        Flow.OTHER: alert([UNKNOWN], [side("", "unknown", "784.0", "bc1qzz")]),
    }
    for flow, message in cases.items():
        (transfer,) = parse_alert(message)
        assert transfer.flow is flow
    (inflow,) = parse_alert(cases[Flow.INFLOW])
    assert inflow == WhaleTransfer(1730730600000, "bitcoin", "BTC", 784.0, 53_625_145.0,
                                   "unknown", "exchange", Flow.INFLOW)  # fmt: skip


def test_change_back_to_the_sender_does_not_make_a_withdrawal_internal() -> None:
    withdrawal = alert(
        [side("binance", "exchange", "900.0", "bc1qx9")],
        [side("binance", "exchange", "116.0", "bc1qx9"), side("", "unknown", "784.0", "bc1q7")],
    )
    assert parse_alert(withdrawal)[0].flow is Flow.OUTFLOW


@pytest.mark.parametrize("owner", ["", "unknown", "grayscale"])
def test_change_to_an_input_address_is_change_whatever_the_owner(owner: str) -> None:
    """70 % of the input comes back to the sender's own address (the largest output):
    the exchange output still decides the receiving side."""
    owner_type = "fund" if owner else "unknown"
    sender = side(owner, owner_type, "2613.3", "bc1qm3")
    change = side(owner, owner_type, "1829.3", "bc1qm3")
    (transfer,) = parse_alert(
        alert([sender], [side("binance", "exchange", "784.0", "bc1qx9"), change])
    )
    assert (transfer.from_type, transfer.to_type, transfer.flow) == (
        owner_type,
        "exchange",
        Flow.INFLOW,
    )


def test_an_anonymous_owner_name_alone_does_not_make_an_output_change() -> None:
    """Two unattributed wallets are not one owner: the largest output to another address
    receives, even when its owner is written the same way ("unknown")."""
    sender = side("unknown", "unknown", "900.0", "bc1qm3")
    outputs = [
        side("unknown", "unknown", "800.0", "bc1qz1"),
        side("binance", "exchange", "100.0", "bc1qx9"),
    ]
    assert parse_alert(alert([sender], outputs))[0].flow is Flow.OTHER


def test_the_docstring_alert_is_an_inflow() -> None:
    doc = parse_alert.__doc__ or ""
    text = doc[doc.index("{") : doc.rindex("}") + 1].replace("…", "")
    (transfer,) = parse_alert(json.loads(text))
    assert (transfer.asset, transfer.usd, transfer.flow) == ("BTC", 53625145.0, Flow.INFLOW)


def test_each_amount_is_its_own_transfer_with_its_own_sides() -> None:
    message = alert([UNKNOWN], [BINANCE], symbol="ETH", amount=1000.0, usd=3_100_000.0)
    message["amounts"].append({"symbol": "USDT", "amount": 2e6, "value_usd": 2e6})
    message["transaction"]["sub_transactions"].append(
        {"symbol": "USDT", "inputs": [BINANCE], "outputs": [UNKNOWN]}
    )
    eth, usdt = parse_alert(message)
    assert (eth.asset, eth.flow, usdt.asset, usdt.flow) == (
        "ETH",
        Flow.INFLOW,
        "USDT",
        Flow.OUTFLOW,
    )


def test_owner_types_fall_back_to_from_and_to_objects() -> None:
    message = alert([UNKNOWN], [BINANCE])
    del message["transaction"]
    message["from"] = {"address": "0x28c6", "owner": "binance", "owner_type": "exchange"}
    message["to"] = {"address": "0x9bf4", "owner_type": "unknown"}
    assert parse_alert(message)[0].flow is Flow.OUTFLOW
    message["from"] = "binance"  # a bare name says nothing about the owner's type
    assert parse_alert(message)[0].flow is Flow.OTHER


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"timestamp": "yesterday"}, "malformed"),
        ({"timestamp": 1.7e308}, "malformed"),  # finite, but infinite in milliseconds
        ({"timestamp": 32_503_680_000}, "malformed"),  # year 3000
        ({"amounts": "lots"}, "malformed"),
        ({"amounts": []}, "malformed"),
        ({"amounts": [{"symbol": "BTC", "amount": -5.0, "value_usd": 1.0}]}, "bad_amount"),
        ({"amounts": [{"symbol": "BTC", "amount": 5.0, "value_usd": float("nan")}]}, "bad_amount"),
        ({"amounts": [{"amount": 5.0, "value_usd": 1.0}]}, "malformed"),
        ({"blockchain": None}, "malformed"),
    ],
)
def test_unusable_alerts_name_their_reason(edit: dict[str, Any], reason: str) -> None:
    message = {**copy.deepcopy(alert([UNKNOWN], [BINANCE])), **edit}
    with pytest.raises(WhaleReject) as caught:
        parse_alert(message)
    assert caught.value.reason == reason


# -- the feed against the simulator's Whale Alert endpoint ---------------------------


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(history_bars=60, whale_api_key=KEY)
    async with Simulator(config) as simulator:
        yield simulator


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(LogSettings(level="DEBUG", format="json"), stream=stream)
    yield stream
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


class Collected:
    def __init__(self) -> None:
        self.transfers: list[WhaleTransfer] = []

    async def __call__(self, transfers: list[WhaleTransfer]) -> None:
        self.transfers.extend(transfers)


def whale_settings(sim: Simulator, key: str = KEY) -> WhaleSettings:
    return WhaleSettings(enabled=True, url=sim.whale_url, api_key=key, blockchains=[],
                         symbols=[], min_value_usd=0.0, ping_interval_seconds=1.0)  # fmt: skip


ALERT_MS = 1_730_730_600_000  # the block time of alert()


class FixedClock:
    """Exchange time set by the test (an alert's delay is then known exactly)."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def slack_ms(self) -> int:
        return 0


class SimulatorClock:
    """Exchange time read straight from the in-process simulator (its virtual now)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def now_ms(self) -> int:
        return self.sim.now_ms

    def slack_ms(self) -> int:
        return 0


def rejected(metrics: Metrics, reason: str) -> float:
    labels = {"feed": "whale", "reason": reason}
    return metrics.registry.get_sample_value("whalecast_feed_rejected_total", labels) or 0.0


async def run_feed(feed: WhaleFeed) -> asyncio.Task[None]:
    task = asyncio.create_task(feed.run())
    await wait_until(lambda: feed.channel_id is not None, what="subscription")
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_alerts_arrive_as_classified_transfers(sim: Simulator) -> None:
    got, metrics = Collected(), Metrics(process=False)
    feed = WhaleFeed(whale_settings(sim), feed_settings(), metrics, got, clock=SimulatorClock(sim))
    task = await run_feed(feed)
    try:
        await sim.advance(6)
        assert sim.whale is not None
        sent = sim.whale.sent_alerts
        await wait_until(lambda: len(got.transfers) == len(sent) > 0, what="alerts")
        expected = [(a["amounts"][0]["symbol"], a["amounts"][0]["value_usd"],
                     Flow.INFLOW if a["to"] != "unknown" else Flow.OUTFLOW) for a in sent]  # fmt: skip
        assert [(t.asset, t.usd, t.flow) for t in got.transfers] == expected
    finally:
        await stop(task)


async def test_every_bad_whale_message_is_counted_and_the_feed_goes_on(sim: Simulator) -> None:
    got, metrics = Collected(), Metrics(process=False)
    task = await run_feed(
        WhaleFeed(whale_settings(sim), feed_settings(), metrics, got, clock=SimulatorClock(sim))
    )
    try:
        for kind in sorted(WHALE_FAULTS):
            sim.faults.whale_inject(kind)
        await sim.advance(3)
        assert sim.whale is not None
        await wait_until(lambda: len(got.transfers) == len(sim.whale.sent_alerts))
        expected = {"malformed": 3, "bad_amount": 2, "unknown_type": 1}
        assert {r: rejected(metrics, r) for r in expected} == expected
    finally:
        await stop(task)


async def test_reconnects_after_an_outage_and_never_logs_the_key(
    sim: Simulator, log_text: io.StringIO
) -> None:
    got, metrics = Collected(), Metrics(process=False)
    feed = WhaleFeed(whale_settings(sim), feed_settings(), metrics, got, clock=SimulatorClock(sim))
    task = await run_feed(feed)
    try:
        feed.channel_id = None
        await sim.faults.whale_down(0.3)
        await wait_until(lambda: feed.channel_id is not None, what="resubscription")
        await sim.advance(8)
        assert sim.whale is not None
        await wait_until(lambda: len(got.transfers) == len(sim.whale.sent_alerts) > 0)
        reconnects = metrics.registry.get_sample_value(
            "whalecast_feed_reconnects_total",
            {"exchange": "whale", "feed": "alerts", "cause": "error"},
        )
        assert reconnects is not None and reconnects >= 2  # dropped, then refused at least once
    finally:
        await stop(task)
    wrong = WhaleFeed(
        whale_settings(sim, key="wrong-" + KEY),
        feed_settings(),
        metrics,
        got,
        clock=SimulatorClock(sim),
    )
    task = asyncio.create_task(wrong.run())
    await wait_until(lambda: "401" in log_text.getvalue(), what="the refusal logged")
    await stop(task)
    text = log_text.getvalue()
    assert "whale feed reconnecting" in text
    assert KEY not in text and sim.whale_url in text


async def test_a_repeated_alert_is_counted_once(sim: Simulator) -> None:
    got, metrics = Collected(), Metrics(process=False)
    feed = WhaleFeed(
        whale_settings(sim), feed_settings(), metrics, got, clock=FixedClock(ALERT_MS + 60_000)
    )
    message = json.dumps(alert([UNKNOWN], [BINANCE]))
    await feed.handle(message)
    await feed.handle(message)
    assert len(got.transfers) == 1 and rejected(metrics, "duplicate") == 1
