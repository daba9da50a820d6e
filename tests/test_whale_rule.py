"""The whale bar rule end to end in-process: alerts as raw text through the real parser, the
feed's filters and the daemon's intake, on a hand-moved exchange clock.

Each transfer lands in the bar of its knowledge time (exchange time when handled, never
inside a bar already read) or is counted under a named reason; a recording of the feed
replays into the same bars.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from streamer.whale import WhaleFeed
from streamer.whale_bars import WhaleBarAggregator
from streamer.whale_intake import WhaleIntake
from streamer.whale_record import recorded_transfers
from streamer.whale_rule import KnowledgeClock, WhaleRule, whale_bar
from tests.test_whale import FixedClock, alert, side
from whalecast.domain import Flow, Series, WhaleBar
from whalecast.metrics import Metrics
from whalecast.settings import FeedSettings, WhaleSettings

BAR = 10_000
T0 = 1_767_225_600_000  # on the 10 s grid
BTC = Series("binance", "BTC/USDT", "10s")
BINANCE = side("binance", "exchange", "784.0", "bc1qx9")


def message(
    n: int, block_ms: int, usd: float = 2e6, symbol: str = "BTC", change: bool = False
) -> str:
    """Alert ``n`` (its own hash) of block time ``block_ms``: an inflow from an unattributed
    wallet, optionally with 70 % of the input coming back to the sender's address."""
    sender = side("", "unknown", "2613.3" if change else "784.0", "bc1qm3")
    outputs = [BINANCE] + ([side("", "unknown", "1829.3", "bc1qm3")] if change else [])
    body: dict[str, Any] = copy.deepcopy(alert([sender], outputs, symbol=symbol, usd=usd))
    body["timestamp"] = block_ms / 1000
    body["transaction"]["timestamp"] = block_ms // 1000
    body["transaction"]["hash"] = f"h{n}"
    return json.dumps(body)


class Rig:
    def __init__(self) -> None:
        self.metrics = Metrics(process=False)
        self.clock = FixedClock(T0)
        self.intake = WhaleIntake(WhaleBarAggregator([BTC], stablecoins=["USDT"]), self.metrics)
        self.recording: list[dict[str, Any]] = []
        settings = WhaleSettings(min_value_usd=1e6, max_delay_seconds=3600.0)
        self.feed = WhaleFeed(
            settings, FeedSettings(max_future_seconds=120.0), self.metrics, self.intake.add,
            clock=self.clock, stamp=self.intake.stamp,
            record=lambda known, a: self.recording.append({"known_ms": known, "alert": a}),
        )  # fmt: skip

    async def at(self, now_ms: int, raw: str) -> None:
        self.clock.now = now_ms
        await self.feed.handle(raw)

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def rejected(self, reason: str) -> float:
        return self.count("whalecast_feed_rejected_total", feed="whale", reason=reason)


async def test_every_transfer_lands_in_its_knowledge_bar_or_is_counted_by_reason() -> None:
    rig = Rig()
    # on time, with change back to an unattributed sender: an inflow of bar T0
    await rig.at(T0 + 1_000, message(1, T0 + 500, usd=3.26e6, change=True))
    # dated 12 s ahead (inside max_future_seconds): counts where it was received, bar T0
    await rig.at(T0 + 2_000, message(2, T0 + 14_000))
    # the bar loop reads bar T0 a little before the clock says it ended (skew): bar T0 is final
    rig.clock.now = T0 + 9_900
    assert rig.intake.take(BTC, T0) == WhaleBar(5.26e6, 0.0, 2, 0.0)
    # handled after that read, though the clock still says T0 + 9.9 s: the next bar
    await rig.at(T0 + 9_950, message(3, T0 + 9_000))
    # refused, each under its reason
    await rig.at(T0 + 11_000, message(4, T0 + 11_000 - 3_601_000))  # 1 h 1 s after its block
    await rig.at(T0 + 11_000, message(5, T0 + 11_000 + 121_000))  # 121 s ahead
    await rig.at(T0 + 11_000, message(6, T0 + 10_500, usd=999_999.0))  # under min_value_usd
    await rig.at(T0 + 11_000, message(7, T0 + 10_500, symbol="DOGE"))  # no series uses DOGE
    await rig.at(T0 + 11_000, message(3, T0 + 9_000))  # a repeat of alert 3
    # twenty later bars each get their on-time transfer (none lost to the future-dated one)
    for k in range(2, 22):
        await rig.at(T0 + k * BAR + 5_000, message(100 + k, T0 + k * BAR + 4_000))

    assert rig.intake.take(BTC, T0 + BAR) == WhaleBar(2e6, 0.0, 1, 0.0)
    for k in range(2, 22):
        assert rig.intake.take(BTC, T0 + k * BAR) == WhaleBar(2e6, 0.0, 1, 0.0), k
    reasons = {"late": 1, "from_future": 1, "below_min_value": 1, "unused_asset": 1, "duplicate": 1}
    assert {r: rig.rejected(r) for r in reasons} == reasons
    assert rig.count("whalecast_whale_transfers_total", flow="inflow") == 2 + 1 + 20
    assert (
        rig.count("whalecast_whale_delay_seconds_count") == 3 + 5 + 20 - 1
    )  # all parsed but the repeat
    # the recording holds what was admitted, with the knowledge time that placed it
    replayed = recorded_transfers(rig.recording)
    assert not replayed.rejected
    assert len(replayed.transfers) == 2 + 1 + 1 + 20  # DOGE included: a trainer may use it
    bars = [whale_bar(t.known_ms or 0, BAR) for t in replayed.transfers if t.asset == "BTC"]
    assert bars == [T0, T0, T0 + BAR] + [T0 + k * BAR for k in range(2, 22)]
    assert all(t.flow is Flow.INFLOW for t in replayed.transfers)


@pytest.mark.parametrize(
    ("block_s", "known_s", "usd", "reason"),
    [
        (0, 0, 1e6, None),
        (0, 3600, 1e6, None),  # exactly max_delay_seconds: still counts
        (0, 3601, 1e6, "late"),
        (120, 0, 1e6, None),
        (121, 0, 1e6, "from_future"),
        (0, 0, 999_999.99, "below_min_value"),
    ],
)
def test_the_rule_names_why_an_alert_does_not_count(
    block_s: int, known_s: int, usd: float, reason: str | None
) -> None:
    rule = WhaleRule.from_settings(WhaleSettings(min_value_usd=1e6), FeedSettings())
    assert rule.refusal(T0 + block_s * 1000, T0 + known_s * 1000, usd) == reason


def test_knowledge_time_never_falls_inside_a_bar_already_read() -> None:
    clock = KnowledgeClock()
    assert clock.stamp(T0) == T0
    clock.seal(T0 + BAR)
    assert clock.stamp(T0 + 5) == T0 + BAR
    clock.seal(T0)  # reading an older bar (history) moves nothing back
    assert clock.stamp(T0 + BAR + 1) == T0 + BAR + 1
    rule = WhaleRule(history_delay_ms=300_000)
    assert rule.history_known_ms(T0) == T0 + 300_000
