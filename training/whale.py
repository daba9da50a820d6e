"""Whale history for training, placed in bars by the daemon's rule (:mod:`streamer.whale_rule`).

- ``*.csv`` / ``*.csv.gz``: hourly sums per asset (:func:`streamer.history.load_whale_flows_csv`);
  they carry no stablecoin flows. Each hour's sum is known at its hour's start plus
  ``whale.history_delay_seconds``.
- ``*.json`` / ``*.jsonl`` (optionally ``.gz``): pages of Whale Alert's ``GET
  /v1/transactions`` (:func:`streamer.whale_history.load_whale_history`), one transfer each,
  known at its block time plus ``whale.history_delay_seconds`` and kept only if worth at
  least ``whale.min_value_usd``; or lines of a recording of the live feed
  (:mod:`streamer.whale_record`), each alert at the knowledge time the daemon gave it.

Transfers are aggregated per bar of their knowledge time the way the daemon does live
(:mod:`streamer.whale_bars`): the base asset's exchange inflow and outflow in USD, every
transfer of the asset counted, and stablecoin exchange inflows summed market-wide into
``stable_inflow_usd``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from streamer.history import bar_table, load_whale_flows_csv
from streamer.whale_history import WhaleHistory, parse_pages, read_pages
from streamer.whale_record import is_recorded, recorded_transfers
from streamer.whale_rule import WhaleRule
from whalecast.domain import Flow, Series, WhaleTransfer
from whalecast.logs import get_logger

log = get_logger(__name__)

PAGE_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
FLOW_COLUMNS = ["ts_ms", "asset", "inflow_usd", "outflow_usd", "count"]


@dataclass(frozen=True)
class WhaleFlows:
    """Flows per asset (``ts_ms, asset, inflow_usd, outflow_usd, count``) and stablecoin inflow."""

    by_asset: dict[str, pd.DataFrame]
    stable_inflow: pd.DataFrame  # ts_ms, usd: stablecoin exchange inflows, market-wide

    def bars(self, candles: pd.DataFrame, series: Series) -> pd.DataFrame:
        """The series' bar table with its asset's flows and the market's stablecoin inflow."""
        table = bar_table(candles, self.by_asset.get(series.base_asset), series.timeframe)
        if self.stable_inflow.empty:
            return table
        bar_ms = series.bar_ms
        per_bar = (
            self.stable_inflow.assign(open_ms=self.stable_inflow["ts_ms"] // bar_ms * bar_ms)
            .groupby("open_ms")["usd"]
            .sum()
        )
        present = table["close"].notna().to_numpy()
        stable = per_bar.reindex(table["open_ms"], fill_value=0.0).to_numpy(np.float64)
        table["stable_inflow_usd"] = np.where(present, stable, np.nan)
        return table


def is_transaction_pages(path: Path) -> bool:
    return Path(path).name.lower().endswith(PAGE_SUFFIXES)


def transfer_flows(
    transfers: Iterable[WhaleTransfer], stablecoins: Iterable[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Single transfers as per-asset flow rows at their knowledge times, and the stablecoin
    exchange inflows."""
    stable = {s.upper() for s in stablecoins}
    rows, inflows = [], []
    for t in transfers:
        if t.known_ms is None:
            raise ValueError("a whale transfer needs its knowledge time to find its bar")
        asset = t.asset.upper()
        inflow = t.usd if t.flow is Flow.INFLOW else 0.0
        outflow = t.usd if t.flow is Flow.OUTFLOW else 0.0
        rows.append((t.known_ms, asset, inflow, outflow, 1))
        if asset in stable and t.flow is Flow.INFLOW:
            inflows.append((t.known_ms, t.usd))
    return (
        pd.DataFrame(rows, columns=FLOW_COLUMNS),
        pd.DataFrame(inflows, columns=["ts_ms", "usd"]),
    )


def known_transfers(pages: Sequence[Path], rule: WhaleRule) -> WhaleHistory:
    """Transfers of REST pages and recordings, each with its knowledge time, and what was refused."""
    entries = [entry for path in pages for entry in read_pages(path)]
    recorded = recorded_transfers(e for e in entries if is_recorded(e))
    history = parse_pages(e for e in entries if not is_recorded(e))
    known = recorded.transfers
    for t in history.transfers:
        if t.usd < rule.min_value_usd:
            history.rejected["below_min_value"] += 1
        else:
            known.append(replace(t, known_ms=rule.history_known_ms(t.ts_ms)))
    known.sort(key=lambda t: t.known_ms or 0)
    return WhaleHistory(known, history.rejected + recorded.rejected, history.cursor)


def load_whale(
    paths: Sequence[Path], stablecoins: Iterable[str] = (), rule: WhaleRule | None = None
) -> WhaleFlows:
    """Whale flows from any mix of hourly-flow CSVs, REST transaction pages and recordings."""
    rule = rule if rule is not None else WhaleRule()
    pages = [Path(p) for p in paths if is_transaction_pages(Path(p))]
    frames = [
        load_whale_flows_csv(p).assign(ts_ms=lambda f: f["ts_ms"] + rule.history_delay_ms)
        for p in paths
        if not is_transaction_pages(Path(p))
    ]
    stable = pd.DataFrame(columns=["ts_ms", "usd"])
    if pages:
        history = known_transfers(pages, rule)
        if history.rejected:
            log.warning("whale_transactions_rejected", **dict(history.rejected))
        flows, stable = transfer_flows(history.transfers, stablecoins)
        frames.append(flows)
    if not frames:
        return WhaleFlows({}, stable)
    merged = pd.concat(frames, ignore_index=True).sort_values("ts_ms", kind="stable")
    by_asset = {str(a): rows.reset_index(drop=True) for a, rows in merged.groupby("asset")}
    return WhaleFlows(by_asset, stable)
