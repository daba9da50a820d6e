"""REST backfill with the real ccxt client against the simulator: pages, forming bar, errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from streamer.backfill import Backfiller, BackfillFailed, RestSession
from streamer.clock import LiveClock, measure_skew_ms
from streamer.exchange import ExchangeAdapter
from streamer.simulator import Simulator, SimulatorConfig
from streamer.validation import CandleValidator
from tests.feed_helpers import as_row, exchange_settings, feed_settings, truth
from whalecast.domain import Series
from whalecast.metrics import Metrics


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(history_bars=1500, whale=False)) as simulator:
        yield simulator


@pytest.fixture
async def session(sim: Simulator) -> AsyncIterator[RestSession]:
    settings = feed_settings(clock="live")
    rest_session = RestSession(ExchangeAdapter(exchange_settings(sim), settings), settings)
    yield rest_session
    await rest_session.aclose()


async def make_backfiller(
    session: RestSession, retries: int = 3
) -> tuple[Backfiller, Metrics, LiveClock]:
    settings = feed_settings(clock="live")
    async with session.use() as rest:
        await session.adapter.load_markets(rest)
        clock = LiveClock(await measure_skew_ms(rest.fetch_time))
    metrics = Metrics(process=False)
    validator = CandleValidator(settings, clock, metrics)
    backfiller = Backfiller(session, settings, metrics, validator=validator, clock=clock,
                            exchange="binance", retries=retries)  # fmt: skip
    return backfiller, metrics, clock


def requests(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "whalecast_backfill_requests_total", {"exchange": "binance", "outcome": outcome}
    )
    return value or 0.0


async def test_pages_cover_the_history_and_never_the_forming_bar(
    sim: Simulator, session: RestSession
) -> None:
    backfiller, metrics, clock = await make_backfiller(session)
    series = Series("binance", "ETH/USDT", "1h")
    expected = truth(sim, "ETH/USDT")
    answer = await backfiller.fetch(series, expected[0][0], clock.now_ms())
    assert [as_row(c) for c in answer.candles] == expected  # 1500 bars over 2 pages
    assert answer.seen_ms[-1] == sim.now_ms  # the forming bar was shown, not taken
    assert requests(metrics, "ok") == 2


async def test_errors_and_rate_limits_are_retried_honouring_retry_after(
    sim: Simulator, session: RestSession
) -> None:
    backfiller, metrics, clock = await make_backfiller(session)
    sim.faults.rest_errors(1, status=500)
    sim.faults.rest_errors(1, status=429, retry_after=1.0)
    series = Series("binance", "BTC/USDT", "1h")
    started = time.monotonic()
    answer = await backfiller.fetch(series, truth(sim, "BTC/USDT")[-3][0], clock.now_ms())
    assert time.monotonic() - started >= 1.0  # waited as long as the exchange asked
    assert [as_row(c) for c in answer.candles] == truth(sim, "BTC/USDT")[-3:]
    counts = [requests(metrics, o) for o in ("error", "rate_limited", "ok")]
    assert counts == [1, 1, 1]


async def test_retries_give_up_with_a_clear_error(sim: Simulator, session: RestSession) -> None:
    backfiller, metrics, clock = await make_backfiller(session, retries=2)
    sim.faults.rest_errors(5, status=503)
    series = Series("binance", "BTC/USDT", "1h")
    with pytest.raises(BackfillFailed, match="after 3 attempts"):
        await backfiller.fetch(series, truth(sim, "BTC/USDT")[-3][0], clock.now_ms())
    assert requests(metrics, "error") == 3


async def test_a_rest_gap_is_absent_from_both_candles_and_seen(
    sim: Simulator, session: RestSession
) -> None:
    backfiller, _, clock = await make_backfiller(session)
    rows = truth(sim, "SOL/USDT")
    sim.faults.rest_gap("SOL/USDT", rows[-6][0], rows[-3][0])
    answer = await backfiller.fetch(
        Series("binance", "SOL/USDT", "1h"), rows[-8][0], clock.now_ms()
    )
    assert [as_row(c) for c in answer.candles] == rows[-8:-6] + rows[-3:]
    assert rows[-5][0] not in answer.seen_ms


async def test_the_rest_client_is_replaced_when_old_or_failing(sim: Simulator) -> None:
    settings = feed_settings(clock="live", client_recreate_seconds=0.5)
    now = [100.0]
    adapter = ExchangeAdapter(exchange_settings(sim), settings)
    session = RestSession(adapter, settings, monotonic=lambda: now[0])
    try:
        async with session.use() as first:
            await session.adapter.load_markets(first)
        now[0] += 0.4
        async with session.use() as again:
            assert again is first  # still young enough
        now[0] += 0.2
        async with session.use() as second:
            assert second is not first  # too old: replaced, the old one closed
            assert second.markets is not None and "BTC/USDT" in second.markets
        assert first.session is None
        for _ in range(3):
            session.failed()
        async with session.use() as third:
            assert third is not second  # three errors in a row: replaced too
    finally:
        await session.aclose()
