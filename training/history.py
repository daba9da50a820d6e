"""History for training: closed candles from CSV files or over ccxt REST, whale flows from CSV.

REST history is kept in a local cache, one CSV per series in the shared candle format
(``timestamp_ms,open,high,low,close,volume``), so a rerun fetches only bars newer than the
cache (and older ones when asked to reach further back). The still-forming bar is never
fetched into the cache: "now" is the exchange's clock (``fetch_time``, which the simulator
serves in replay), and only bars whose close time has passed are kept. Either way the
candles are read back through :func:`streamer.history.load_candles_csv` and put on the
bar grid by :func:`streamer.history.bar_table`, the same code the daemon's features use.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from streamer.backoff import ceiling
from streamer.history import load_candles_csv, symbol_from_path
from streamer.whale_rule import WhaleRule
from training.whale import load_whale
from whalecast.domain import Series, floor_to_bar, timeframe_ms
from whalecast.logs import get_logger
from whalecast.settings import ExchangeSettings

log = get_logger(__name__)

CSV_HEADER = "timestamp_ms,open,high,low,close,volume"
PAGE_LIMIT = 1000  # Binance serves at most 1000 klines per request
RETRIES = 5
STABLECOINS = ("USDT", "USDC", "DAI", "FDUSD")  # whale.stablecoins' default
MAX_BACKOFF_SECONDS = 60.0
_NAME_RE = re.compile(r"^(?P<exchange>[a-z0-9]+)_[A-Za-z0-9]+-[A-Za-z0-9]+_(?P<tf>[0-9]+[smhdw])\.")


class HistoryError(RuntimeError):
    """History could not be loaded or fetched."""


@dataclass(frozen=True)
class SeriesHistory:
    """One series' bar table (``streamer.features.BAR_COLUMNS`` on the full time grid)."""

    series: Series
    bars: pd.DataFrame
    source: str

    @property
    def first_ms(self) -> int:
        return int(self.bars["open_ms"].iloc[0])

    @property
    def last_ms(self) -> int:
        return int(self.bars["open_ms"].iloc[-1])


# --- CSV --------------------------------------------------------------------------------------


def series_of(path: Path, default_exchange: str, default_timeframe: str) -> Series:
    """``binance_BTC-USDT_1h.csv.gz`` -> Series(binance, BTC/USDT, 1h); defaults otherwise."""
    match = _NAME_RE.match(path.name)
    exchange = match.group("exchange") if match else default_exchange
    timeframe = match.group("tf") if match else default_timeframe
    return Series(exchange, symbol_from_path(path), timeframe)


def from_csv(
    candle_paths: Sequence[Path],
    whale_paths: Sequence[Path] = (),
    exchange: str = "binance",
    timeframe: str = "1h",
    stablecoins: Sequence[str] = STABLECOINS,
    *,
    whale_rule: WhaleRule | None = None,
) -> list[SeriesHistory]:
    """Bar tables from candle CSV files (one series each) and whale history files."""
    if not candle_paths:
        raise HistoryError("no candle files given")
    whale = load_whale(whale_paths, stablecoins, whale_rule)
    out = []
    for path in candle_paths:
        series = series_of(Path(path), exchange, timeframe)
        candles = load_candles_csv(path, series.exchange, series.symbol, series.timeframe)
        if candles.empty:
            raise HistoryError(f"{path}: no candles")
        out.append(SeriesHistory(series, whale.bars(candles, series), str(path)))
    _same_timeframe(out)
    return out


def _same_timeframe(histories: list[SeriesHistory]) -> None:
    timeframes = {h.series.timeframe for h in histories}
    if len(timeframes) > 1:
        raise HistoryError(f"pooled series must share one timeframe, got {sorted(timeframes)}")
    tags = [h.series.tag for h in histories]
    if len(set(tags)) != len(tags):
        raise HistoryError(f"a series is given twice: {tags}")


# --- REST with a local cache -----------------------------------------------------------------


def rest_client(exchange: ExchangeSettings) -> Any:
    """A synchronous ccxt client for ``exchange`` (its REST URL overridable for the simulator)."""
    import ccxt  # noqa: PLC0415 - only the REST path needs ccxt

    try:
        cls = getattr(ccxt, exchange.id)
    except AttributeError as e:
        raise HistoryError(f"ccxt has no exchange {exchange.id!r}") from e
    client = cls(
        {
            "enableRateLimit": exchange.enable_rate_limit,
            "options": {"fetchMarkets": {"types": ["spot"]}},
        }
    )
    if exchange.rest_url:
        client.urls["api"]["public"] = exchange.rest_url
    return client


def cache_path(cache_dir: Path, series: Series) -> Path:
    pair = series.symbol.replace("/", "-")
    return Path(cache_dir) / f"{series.exchange}_{pair}_{series.timeframe}.csv"


def exchange_now_ms(client: Any) -> int:
    """The exchange's clock (the simulator's virtual time in replay), else the wall clock."""
    if client.has.get("fetchTime"):
        return int(_retry(client, client.fetch_time))
    return int(time.time() * 1000)


def _retry_after(client: Any) -> float | None:
    headers = getattr(client, "last_response_headers", None) or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return None if value is None else min(float(value), MAX_BACKOFF_SECONDS)
    except ValueError:
        return None


def _retry(client: Any, call: Callable[[], Any]) -> Any:
    """Retry transient ccxt errors (rate limits, timeouts, network) with exponential backoff.

    A rate-limit answer's ``Retry-After`` header, when present, sets the wait instead.
    """
    import ccxt  # noqa: PLC0415 - only the REST path needs ccxt

    for attempt in range(RETRIES):
        try:
            return call()
        except ccxt.NetworkError as e:  # RateLimitExceeded and DDoSProtection included
            if attempt == RETRIES - 1:
                raise HistoryError(f"REST request failed after {RETRIES} attempts: {e}") from e
            wait = _retry_after(client) if isinstance(e, ccxt.DDoSProtection) else None
            wait = ceiling(1.0, MAX_BACKOFF_SECONDS, attempt) if wait is None else wait
            log.warning("rest_retry", error=type(e).__name__, attempt=attempt + 1, sleep_s=wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def fetch_closed(
    client: Any,
    series: Series,
    since_ms: int,
    until_ms: int,
    *,
    now_ms: int,
    progress: bool = False,
) -> list[list[float]]:
    """Closed candles with ``since_ms <= open < until_ms``, paging ``fetch_ohlcv``.

    A candle is closed when its close time (open + one bar) is at or before ``now_ms``.
    """
    bar_ms = series.bar_ms
    last_open = min(floor_to_bar(now_ms, bar_ms) - bar_ms, until_ms - 1)
    rows: list[list[float]] = []
    cursor = since_ms
    total = max(0, (last_open - cursor) // bar_ms + 1)
    with tqdm(total=total, unit="bar", desc=series.tag, disable=not progress, leave=False) as bar:
        while cursor <= last_open:
            page = _retry(client, partial(client.fetch_ohlcv, series.symbol, series.timeframe,
                                          since=cursor, limit=PAGE_LIMIT))  # fmt: skip
            page = [r for r in page if cursor <= r[0] <= last_open]
            if not page:
                break  # nothing more from the exchange up to now
            rows.extend(page)
            bar.update(len(page))
            cursor = int(page[-1][0]) + bar_ms
    return rows


def _read_cache(path: Path) -> np.ndarray:
    if not path.exists():
        return np.empty((0, 6))
    frame = pd.read_csv(path)
    return np.asarray(frame[CSV_HEADER.split(",")].to_numpy(np.float64))


def _write_cache(path: Path, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    frame = pd.DataFrame(rows, columns=CSV_HEADER.split(","))
    frame["timestamp_ms"] = frame["timestamp_ms"].astype(np.int64)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        frame.to_csv(handle, index=False)
    os.replace(tmp, path)


def update_cache(
    client: Any, series: Series, since_ms: int, cache_dir: Path, progress: bool = False
) -> tuple[Path, int]:
    """Bring the series' cache file up to the exchange's last closed bar.

    Returns the cache file and the number of bars fetched.

    Only what the cache lacks is fetched: bars after its last one, and bars before its first
    one when ``since_ms`` reaches further back.
    """
    path = cache_path(cache_dir, series)
    cached = _read_cache(path)
    now_ms = exchange_now_ms(client)
    since_ms = floor_to_bar(since_ms, series.bar_ms)
    new: list[list[float]] = []
    if len(cached) == 0:
        new += fetch_closed(client, series, since_ms, now_ms + 1, now_ms=now_ms, progress=progress)
    else:
        first, last = int(cached[0, 0]), int(cached[-1, 0])
        if since_ms < first:
            new += fetch_closed(client, series, since_ms, first, now_ms=now_ms, progress=progress)
        new += fetch_closed(
            client, series, last + series.bar_ms, now_ms + 1, now_ms=now_ms, progress=progress
        )
    log.info("history_fetched", series=series.tag, new_bars=len(new), cached_bars=len(cached))
    if new or not path.exists():
        fetched = np.asarray(new, dtype=np.float64).reshape(-1, 6)
        merged = np.concatenate([cached, fetched])
        _, keep = np.unique(merged[:, 0], return_index=True)
        _write_cache(path, merged[keep])
    return path, len(new)


def from_rest(
    exchanges: Sequence[ExchangeSettings],
    history_days: float,
    cache_dir: Path,
    *,
    whale_paths: Sequence[Path] = (),
    progress: bool = False,
    stablecoins: Sequence[str] = STABLECOINS,
    client_factory: Callable[[ExchangeSettings], Any] = rest_client,
    whale_rule: WhaleRule | None = None,
) -> list[SeriesHistory]:
    """Every configured series, fetched over REST into the cache, then loaded from it."""
    whale = load_whale(whale_paths, stablecoins, whale_rule)
    out = []
    for exchange in exchanges:
        client = client_factory(exchange)
        since = exchange_now_ms(client) - int(history_days * 86_400_000)
        for symbol in exchange.symbols:
            series = Series(exchange.id, symbol, exchange.timeframe)
            path, _ = update_cache(client, series, since, cache_dir, progress)
            candles = load_candles_csv(path, series.exchange, series.symbol, series.timeframe)
            candles = candles[
                candles["open_ms"] >= floor_to_bar(since, timeframe_ms(series.timeframe))
            ]
            if candles.empty:
                raise HistoryError(f"{series.tag}: the exchange returned no closed candles")
            bars = whale.bars(candles.reset_index(drop=True), series)
            out.append(SeriesHistory(series, bars, f"rest:{exchange.id}"))
    _same_timeframe(out)
    return out
