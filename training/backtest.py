"""Backtest of the direction signal, beside buy-and-hold.

At the close of bar ``t`` the model gives ``p = P(close[t+1] > close[t])``. The position
held over bar ``t+1`` (close ``t`` to close ``t+1``) is:

- ``long_flat`` (spot, the default): 1 when ``p > 0.5 + threshold``, else 0;
- ``long_short``: 1 above ``0.5 + threshold``, -1 below ``0.5 - threshold``, else 0.

Every change of position costs ``fees_bps`` per unit changed (entering from flat costs one
unit, flipping long to short two). The first bar's entry is charged; the final exit is
not. Returns are simple returns, compounded; no slippage, no funding, no interest on
idle cash. Annualisation uses the bars per year of the timeframe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Mode = Literal["long_flat", "long_short"]


@dataclass(frozen=True)
class BacktestConfig:
    fees_bps: float = 10.0
    threshold: float = 0.0
    mode: Mode = "long_flat"
    bars_per_year: float = 24 * 365.0


def positions(p: np.ndarray, threshold: float, mode: Mode) -> np.ndarray:
    pos = (p > 0.5 + threshold).astype(float)
    if mode == "long_short":
        pos[p < 0.5 - threshold] = -1.0
    return pos


def net_returns(pos: np.ndarray, bar_returns: np.ndarray, fees_bps: float) -> np.ndarray:
    """Per-bar strategy return after costs: ``pos * r - |Δpos| * fee``."""
    change = np.abs(np.diff(pos, prepend=0.0))
    return np.asarray(pos * bar_returns - change * fees_bps / 1e4)


def summarize(net: np.ndarray, pos: np.ndarray, bars_per_year: float) -> dict[str, Any]:
    """Total return, annualised volatility, Sharpe, max drawdown, win rate and turnover."""
    if len(net) == 0:
        return {"bars": 0}
    equity = np.cumprod(1.0 + net)
    sd = float(np.std(net, ddof=1)) if len(net) > 1 else 0.0
    active = pos != 0
    turnover = float(np.abs(np.diff(pos, prepend=0.0)).sum())
    return {
        "bars": len(net),
        "total_return": float(equity[-1] - 1.0),
        "annual_volatility": sd * float(np.sqrt(bars_per_year)),
        "sharpe": float(np.mean(net) / sd * np.sqrt(bars_per_year)) if sd > 0 else None,
        "max_drawdown": float(np.min(equity / np.maximum.accumulate(equity) - 1.0)),
        "win_rate": float(np.mean(net[active] > 0)) if active.any() else None,
        "exposure": float(np.mean(active)),
        "turnover": turnover,
        "turnover_per_year": turnover / len(net) * bars_per_year,
    }


def run(
    frame: pd.DataFrame, p: np.ndarray, cfg: BacktestConfig
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Per series and an equal-weight portfolio, strategy beside buy-and-hold.

    ``frame`` has one row per test sample: ``series`` (tag), ``target_ms`` and
    ``bar_return`` (close[t+1] / close[t] - 1), in time order within each series.
    Returns the summary and the portfolio's per-bar curve (for the equity plot).
    """
    frame = frame.assign(p=p)
    per_series: dict[str, Any] = {}
    parts = []
    for tag, rows in frame.groupby("series", sort=True):
        r = rows["bar_return"].to_numpy()
        pos = positions(rows["p"].to_numpy(), cfg.threshold, cfg.mode)
        hold = np.ones_like(r)
        strat = net_returns(pos, r, cfg.fees_bps)
        gross = net_returns(pos, r, 0.0)
        bench = net_returns(hold, r, cfg.fees_bps)
        per_series[str(tag)] = {
            "strategy": summarize(strat, pos, cfg.bars_per_year),
            "strategy_before_fees": summarize(gross, pos, cfg.bars_per_year),
            "buy_and_hold": summarize(bench, hold, cfg.bars_per_year),
        }
        parts.append(
            pd.DataFrame(
                {
                    "target_ms": rows["target_ms"].to_numpy(),
                    "strategy": strat,
                    "gross": gross,
                    "hold": bench,
                    "pos": pos,
                }
            )
        )
    curve = pd.concat(parts).groupby("target_ms", sort=True).mean()
    portfolio = {
        "strategy": summarize(
            curve["strategy"].to_numpy(), curve["pos"].to_numpy(), cfg.bars_per_year
        ),
        "strategy_before_fees": summarize(
            curve["gross"].to_numpy(), curve["pos"].to_numpy(), cfg.bars_per_year
        ),
        "buy_and_hold": summarize(curve["hold"].to_numpy(), np.ones(len(curve)), cfg.bars_per_year),
    }
    summary = {
        "config": {"fees_bps": cfg.fees_bps, "threshold": cfg.threshold, "mode": cfg.mode},
        "series": per_series,
        "portfolio": portfolio,
    }
    curve = curve.assign(
        strategy_equity=np.cumprod(1.0 + curve["strategy"].to_numpy()),
        gross_equity=np.cumprod(1.0 + curve["gross"].to_numpy()),
        hold_equity=np.cumprod(1.0 + curve["hold"].to_numpy()),
    )
    return summary, curve
