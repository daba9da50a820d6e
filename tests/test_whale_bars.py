"""Per-bar whale aggregates and the REST whale history format."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from streamer.whale_bars import WhaleBarAggregator
from streamer.whale_history import load_whale_history, parse_pages
from whalecast.domain import Flow, Series, WhaleBar, WhaleTransfer, classify_flow

H = 3_600_000
T0 = 1_767_225_600_000
BTC_1H = Series("binance", "BTC/USDT", "1h")
ETH_1H = Series("binance", "ETH/USDT", "1h")
BTC_4H = Series("binance", "BTC/USDT", "4h")
TYPES = {Flow.INFLOW: ("unknown", "exchange"), Flow.OUTFLOW: ("exchange", "unknown"),
         Flow.INTERNAL: ("exchange", "exchange"), Flow.OTHER: ("unknown", "unknown")}  # fmt: skip


def transfer(ts_ms: int, asset: str, usd: float, flow: Flow) -> WhaleTransfer:
    from_type, to_type = TYPES[flow]
    assert classify_flow(from_type, to_type) is flow
    return WhaleTransfer(ts_ms, "bitcoin", asset, usd / 1000, usd, from_type, to_type, flow, ts_ms)


def test_flows_are_summed_per_base_asset_and_stablecoin_inflows_market_wide() -> None:
    agg = WhaleBarAggregator([BTC_1H, ETH_1H, BTC_4H], stablecoins=["usdt", "USDC"])
    for t in [
        transfer(T0 + 60_000, "BTC", 10e6, Flow.INFLOW),
        transfer(T0 + 120_000, "BTC", 4e6, Flow.OUTFLOW),
        transfer(T0 + 180_000, "BTC", 1e6, Flow.OTHER),
        transfer(T0 + H + 1, "BTC", 7e6, Flow.INFLOW),  # the next 1h bar, same 4h bar
        transfer(T0 + 240_000, "ETH", 3e6, Flow.INTERNAL),
        transfer(T0 + 300_000, "USDT", 50e6, Flow.INFLOW),
        transfer(T0 + 360_000, "USDC", 20e6, Flow.OUTFLOW),  # stable, but not an inflow
    ]:
        agg.add(t)
    assert agg.take(BTC_1H, T0) == WhaleBar(10e6, 4e6, 3, 50e6)
    assert agg.take(BTC_1H, T0 + H) == WhaleBar(7e6, 0.0, 1, 0.0)
    assert agg.take(ETH_1H, T0) == WhaleBar(0.0, 0.0, 1, 50e6)
    assert agg.take(BTC_4H, T0) == WhaleBar(17e6, 4e6, 4, 50e6)
    assert agg.take(ETH_1H, T0 + 5 * H) == WhaleBar()


def test_unused_assets_are_refused_and_memory_stays_bounded() -> None:
    agg = WhaleBarAggregator([BTC_1H], stablecoins=["USDT"], keep_bars=4, keep_ms=0)
    assert agg.add(transfer(T0, "DOGE", 1e6, Flow.INFLOW)) == "unused_asset"
    for k in range(50):
        assert agg.add(transfer(T0 + k * H, "BTC", 1e6, Flow.INFLOW)) is None
    assert len(agg._bars[H]) == 4
    assert agg.take(BTC_1H, T0 + 49 * H).count == 1
    assert agg.take(BTC_1H, T0) == WhaleBar()  # forgotten
    assert agg.add(transfer(T0 + 10 * H, "BTC", 1e6, Flow.INFLOW)) == "late"
    by_default = WhaleBarAggregator([BTC_1H], stablecoins=[])
    for k in range(30):
        by_default.add(transfer(T0 + k * H, "BTC", 1e6, Flow.INFLOW))
    assert len(by_default._bars[H]) == 24  # a day of bars: a candle closing late finds its bar


def page(transactions: list[dict[str, Any]], cursor: str = "c1") -> dict[str, Any]:
    return {"result": "success", "cursor": cursor, "count": len(transactions),
            "transactions": transactions}  # fmt: skip


def rest_tx(tx_hash: str, symbol: str, ts_s: int, sides: tuple[str, str], *,
            amount: object = 12000, usd: object = 31_400_000.0) -> dict[str, Any]:  # fmt: skip
    """A transaction as Whale Alert's REST ``/v1/transactions`` returns it."""
    from_type, to_type = sides
    return {
        "blockchain": "ethereum", "symbol": symbol, "id": "1131405929",
        "transaction_type": "transfer", "hash": tx_hash,
        "from": {"address": "0x28c6c0", "owner": "binance" if from_type == "exchange" else "",
                 "owner_type": from_type},
        "to": {"address": "0x9bf400", "owner_type": to_type},
        "timestamp": ts_s, "amount": amount, "amount_usd": usd, "transaction_count": 1,
    }  # fmt: skip


def test_rest_history_pages_become_sorted_unique_transfers(tmp_path: Path) -> None:
    first = page([rest_tx("0xb", "eth", 1730731300, ("unknown", "exchange")),
                  rest_tx("0xa", "eth", 1730731200, ("exchange", "unknown")),
                  rest_tx("0xc", "eth", 1730731400, ("unknown", "exchange"), amount=-1),
                  {**rest_tx("0xd", "eth", 1730731500, ("unknown", "exchange")), "from": None},
                  {**rest_tx("0xf", "eth", 0, ("unknown", "exchange")), "timestamp": 1.7e308},
                  {**rest_tx("0xg", "eth", 0, ("unknown", "exchange")), "timestamp": float("nan")}])  # fmt: skip
    second = page([rest_tx("0xa", "eth", 1730731200, ("exchange", "unknown")),
                   rest_tx("0xe", "usdt", 1730731600, ("unknown", "exchange"), usd="2000000.5")],
                  cursor="c2")  # fmt: skip
    history = parse_pages([first, second, {"result": "error", "message": "bad key"}])
    assert [(t.ts_ms, t.asset, t.flow) for t in history.transfers] == [
        (1730731200000, "ETH", Flow.OUTFLOW),
        (1730731300000, "ETH", Flow.INFLOW),
        (1730731600000, "USDT", Flow.INFLOW),
    ]
    assert history.transfers[-1].usd == 2000000.5
    assert dict(history.rejected) == {"bad_amount": 1, "malformed": 4, "duplicate": 1}
    assert history.cursor == "c2"
    lines = tmp_path / "whales.jsonl.gz"
    with gzip.open(lines, "wt") as handle:
        handle.write(json.dumps(first) + "\n\n" + json.dumps(second) + "\n")
    single = tmp_path / "page.json"
    single.write_text(json.dumps(second))
    loaded = load_whale_history([lines, single])
    assert len(loaded.transfers) == 3 and loaded.rejected["duplicate"] == 3  # 0xa, 0xa, 0xe
