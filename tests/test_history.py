"""Loading shared candle and whale-flow CSVs, and the per-bar table the features read."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamer.features import BAR_COLUMNS
from streamer.history import (
    bar_table,
    load_candles_csv,
    load_whale_flows_csv,
    symbol_from_path,
)
from whalecast.domain import Series

DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"
HOUR = 3_600_000
HEADER = "timestamp_ms,open,high,low,close,volume\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_candles_load_with_their_series() -> None:
    candles = load_candles_csv(DATA / "binance_ETH-USDT_1h.csv.gz")
    assert candles.attrs["series"] == Series("binance", "ETH/USDT", "1h")
    assert list(candles.columns) == list(BAR_COLUMNS[:6])
    assert candles["open_ms"].dtype == np.int64
    assert len(candles) == 6840
    assert candles["open_ms"].iloc[0] == 1735689600000


def test_symbol_from_file_names() -> None:
    assert symbol_from_path("binance_BTC-USDT_1h.csv.gz") == "BTC/USDT"
    assert symbol_from_path("/x/coinbase_BTC-USD_1h_cdd.csv") == "BTC/USD"
    with pytest.raises(ValueError, match="BASE-QUOTE"):
        symbol_from_path("candles.csv")


def test_plain_csv_and_explicit_symbol(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", HEADER + f"{HOUR},1,2,0.5,1.5,10\n{2 * HOUR},1.5,2,1,1,0\n")
    candles = load_candles_csv(path, exchange="kraken", symbol="BTC/EUR")
    assert candles.attrs["series"] == Series("kraken", "BTC/EUR", "1h")
    assert candles["close"].tolist() == [1.5, 1.0]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (f"{HOUR + 5},1,2,0.5,1.5,10\n", "off the bar grid"),
        (f"{2 * HOUR},1,2,0.5,1.5,10\n{HOUR},1,2,0.5,1.5,10\n", "not strictly increasing"),
        (f"{HOUR},1,2,0.5,1.5,10\n{HOUR},1,2,0.5,1.5,10\n", "not strictly increasing"),
        (f"{HOUR},1,2,0.5,3,10\n", "outside"),
        (f"{HOUR},0,2,0.5,1,10\n", "non-positive"),
        (f"{HOUR},1,2,0.5,1,nan\n", "non-finite"),
    ],
)
def test_invalid_candles_are_refused_with_the_reason(
    tmp_path: Path, rows: str, message: str
) -> None:
    path = _write(tmp_path / "binance_BTC-USDT_1h.csv", HEADER + rows)
    with pytest.raises(ValueError, match=message):
        load_candles_csv(path)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "BTC-USDT.csv.gz", "wt") as handle:
        handle.write("timestamp_ms,open,close\n1,2,3\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_candles_csv(tmp_path / "BTC-USDT.csv.gz")


def test_whale_flows_count_one_transfer_per_direction() -> None:
    flows = load_whale_flows_csv(DATA / "whalealert_BTC_exchange_flows_1h.csv.gz")
    assert list(flows.columns) == ["ts_ms", "asset", "inflow_usd", "outflow_usd", "count"]
    assert set(flows["asset"]) == {"BTC"}
    expected = (flows["inflow_usd"] > 0).astype(int) + (flows["outflow_usd"] > 0).astype(int)
    assert flows["count"].tolist() == expected.tolist()
    assert len(flows) == 1441


def test_bar_table_grid_gaps_and_whale_aggregation(tmp_path: Path) -> None:
    candle_rows = "".join(f"{h * HOUR},1,2,0.5,1.5,10\n" for h in (0, 1, 2, 3, 5, 6, 7))
    candles = load_candles_csv(_write(tmp_path / "BTC-USDT.csv", HEADER + candle_rows))
    whale = pd.DataFrame(
        {
            "ts_ms": [HOUR, 2 * HOUR, 4 * HOUR, 6 * HOUR],
            "asset": "BTC",
            "inflow_usd": [5.0, 7.0, 9.0, 0.0],
            "outflow_usd": [0.0, 1.0, 9.0, 3.0],
            "count": [1, 2, 2, 1],
        }
    )
    hourly = bar_table(candles, whale, "1h")
    assert list(hourly.columns) == list(BAR_COLUMNS)
    assert hourly["open_ms"].tolist() == [h * HOUR for h in range(8)]
    assert hourly.loc[4, BAR_COLUMNS[1:]].isna().all()  # the missing candle, flows and all
    assert hourly["whale_inflow_usd"].tolist()[:4] == [0.0, 5.0, 7.0, 0.0]
    assert hourly["whale_count"].tolist()[5:] == [0.0, 1.0, 0.0]
    assert (hourly["stable_inflow_usd"].dropna() == 0).all()
    four_hourly = load_candles_csv(
        _write(
            tmp_path / "ETH-USDT.csv", HEADER + f"0,1,2,0.5,1.5,10\n{4 * HOUR},1,2,0.5,1.5,10\n"
        ),
        timeframe="4h",
    )
    table = bar_table(four_hourly, whale, "4h")
    assert table["whale_inflow_usd"].tolist() == [12.0, 9.0]
    assert table["whale_outflow_usd"].tolist() == [1.0, 12.0]
    assert table["whale_count"].tolist() == [3.0, 3.0]
    no_whale = bar_table(four_hourly, None, "4h")
    assert (no_whale[["whale_inflow_usd", "whale_count"]] == 0).all().all()
