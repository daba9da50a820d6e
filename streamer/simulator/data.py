"""Series the simulator replays: real history from CSV files, or synthetic random walks.

Candle CSVs have the columns ``timestamp_ms,open,high,low,close,volume`` (gzip or
plain); the symbol comes from the file name (``binance_BTC-USDT_1h.csv.gz`` →
``BTC/USDT``). Whale flow CSVs hold hourly exchange inflow/outflow sums per asset.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from whalecast.domain import timeframe_ms

SHIPPED_DATA = Path(__file__).resolve().parents[1] / "data"
CANDLE_COLUMNS = ("timestamp_ms", "open", "high", "low", "close", "volume")
_PAIR_RE = re.compile(r"([A-Za-z0-9]+)-([A-Za-z0-9]+)")
SYNTHETIC_START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Bars:
    """One series' bars, sorted by open time; ``open_ms`` is the key of each bar."""

    symbol: str
    open_ms: Ints
    open: Floats
    high: Floats
    low: Floats
    close: Floats
    volume: Floats

    @property
    def wire(self) -> str:
        """Binance's market id: ``BTC/USDT`` → ``BTCUSDT``."""
        return self.symbol.replace("/", "")

    @property
    def base(self) -> str:
        return self.symbol.split("/", 1)[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/", 1)[1]

    def __len__(self) -> int:
        return len(self.open_ms)

    def row(self, i: int) -> tuple[int, float, float, float, float, float]:
        return (
            int(self.open_ms[i]),
            float(self.open[i]),
            float(self.high[i]),
            float(self.low[i]),
            float(self.close[i]),
            float(self.volume[i]),
        )


@dataclass(frozen=True)
class FlowHour:
    """One hour of exchange flows of one asset (amounts in the asset, values in USD)."""

    hour_ms: int
    blockchain: str
    symbol: str
    inflow_usd: float
    inflow_amount: float
    outflow_usd: float
    outflow_amount: float


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with _open_text(path) as handle:
        yield from csv.DictReader(handle)


def symbol_from_path(path: Path) -> str:
    """``binance_BTC-USDT_1h.csv.gz`` → ``BTC/USDT``."""
    match = _PAIR_RE.search(path.name.split(".", 1)[0])
    if match is None:
        raise ValueError(f"{path}: cannot read a BASE-QUOTE symbol from the file name")
    return f"{match.group(1).upper()}/{match.group(2).upper()}"


def load_candles(path: Path, bar_ms: int, symbol: str | None = None) -> Bars:
    """Read one candle CSV; rows must be sorted, unique and on the ``bar_ms`` grid."""
    columns: dict[str, list[float]] = {name: [] for name in CANDLE_COLUMNS}
    for line, row in enumerate(_rows(path), start=2):
        try:
            for name in CANDLE_COLUMNS:
                columns[name].append(float(row[name]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{line}: expected columns {CANDLE_COLUMNS}: {e}") from e
    open_ms = np.asarray(columns["timestamp_ms"], dtype=np.int64)
    if len(open_ms) == 0:
        raise ValueError(f"{path}: no rows")
    if np.any(np.diff(open_ms) <= 0):
        raise ValueError(f"{path}: timestamps are not strictly increasing")
    if np.any(open_ms % bar_ms != 0):
        raise ValueError(f"{path}: timestamps are not on the {bar_ms} ms grid")
    return Bars(
        symbol or symbol_from_path(path),
        open_ms,
        *(np.asarray(columns[n], dtype=np.float64) for n in CANDLE_COLUMNS[1:]),
    )


def shipped_candle_files() -> list[Path]:
    return sorted(SHIPPED_DATA.glob("binance_*-*_1h.csv.gz"))


def shipped_flow_files() -> list[Path]:
    return sorted(SHIPPED_DATA.glob("whalealert_*_exchange_flows_1h.csv.gz"))


def load_flows(path: Path) -> list[FlowHour]:
    """Read one hourly exchange-flow CSV (see streamer/data/SOURCES.md for the columns)."""
    flows = []
    for line, row in enumerate(_rows(path), start=2):
        try:
            flows.append(
                FlowHour(
                    hour_ms=int(row["timestamp_ms"]),
                    blockchain=row["blockchain"],
                    symbol=row["symbol"].upper(),
                    inflow_usd=float(row["exchange_inflow_usd"]),
                    inflow_amount=float(row["exchange_inflow_amount"]),
                    outflow_usd=float(row["exchange_outflow_usd"]),
                    outflow_amount=float(row["exchange_outflow_amount"]),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{line}: bad whale flow row: {e}") from e
    return flows


def synthetic_series(
    count: int, timeframe: str, seed: int, bars: int, start_ms: int = SYNTHETIC_START_MS
) -> list[Bars]:
    """``count`` deterministic random-walk series named ``S0001/USDT``…, ``bars`` bars each.

    Per symbol: a start price between 0.5 and 5000, a per-bar volatility scaled with
    the timeframe, log-normal volumes; high/low wrap open and close; everything is
    rounded to 8 decimals (what the wire carries), so the ground truth is exact.
    """
    bar_ms = timeframe_ms(timeframe)
    start_ms -= start_ms % bar_ms
    rng = np.random.default_rng(seed)
    scale = np.sqrt(bar_ms / 3_600_000)
    start = np.exp(rng.uniform(np.log(0.5), np.log(5000.0), size=(count, 1)))
    vol = rng.uniform(0.003, 0.02, size=(count, 1)) * scale
    closes = start * np.exp(np.cumsum(rng.normal(0.0, 1.0, size=(count, bars)) * vol, axis=1))
    opens = np.concatenate([start, closes[:, :-1]], axis=1)
    wick = np.abs(rng.normal(0.0, 0.5, size=(2, count, bars))) * vol
    highs = np.maximum(opens, closes) * np.exp(wick[0])
    lows = np.minimum(opens, closes) * np.exp(-wick[1])
    volumes = np.exp(rng.normal(8.0, 1.0, size=(count, bars))) / np.sqrt(start)
    open_ms = start_ms + np.arange(bars, dtype=np.int64) * bar_ms
    width = max(4, len(str(count)))
    return [
        Bars(
            f"S{k + 1:0{width}d}/USDT",
            open_ms,
            np.round(opens[k], 8),
            np.round(highs[k], 8),
            np.round(lows[k], 8),
            np.round(closes[k], 8),
            np.round(volumes[k], 8),
        )
        for k in range(count)
    ]


def synthetic_stablecoin_flows(start_ms: int, end_ms: int, seed: int) -> list[FlowHour]:
    """Deterministic USDT exchange inflows (about one hour in four) for synthetic runs."""
    hours = np.arange(start_ms - start_ms % 3_600_000, end_ms, 3_600_000, dtype=np.int64)
    rng = np.random.default_rng(seed + 1)
    present = rng.random(len(hours)) < 0.25
    usd = np.round(np.exp(rng.normal(16.0, 0.8, size=len(hours))), 0)
    return [
        FlowHour(int(h), "ethereum", "USDT", float(u), float(u), 0.0, 0.0)
        for h, u, p in zip(hours, usd, present, strict=True)
        if p
    ]
