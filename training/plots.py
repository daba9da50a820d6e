"""PNG plots written into each artifact (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def training_history(histories: Mapping[str, Mapping[str, list[float]]], path: Path) -> str:
    """Loss and validation loss per epoch of every fitted network."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, hist in histories.items():
        epochs = np.arange(1, len(hist.get("loss", [])) + 1)
        ax.plot(epochs, hist.get("loss", []), label=f"{name} train")
        if "val_loss" in hist:
            ax.plot(epochs, hist["val_loss"], "--", label=f"{name} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (log scale)")
    ax.set_yscale("log")
    ax.set_title("training history")
    ax.legend(fontsize=7)
    return _save(fig, path)


def volume_fit(
    y: np.ndarray,
    preds: Mapping[str, np.ndarray],
    target_ms: np.ndarray,
    tags: np.ndarray,
    path: Path,
) -> str:
    """Predicted against actual log volume (scatter) and one series' last two weeks."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, p in preds.items():
        left.scatter(y, p, s=2, alpha=0.3, label=name)
    lo, hi = float(np.min(y)), float(np.max(y))
    left.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    left.set_xlabel("actual log1p(volume)")
    left.set_ylabel("predicted")
    left.legend(fontsize=7, markerscale=4)
    shown = sorted(set(tags))[0]
    mine = np.flatnonzero(tags == shown)
    tail = mine[np.argsort(target_ms[mine])[-24 * 14 :]]
    times = pd.to_datetime(target_ms[tail], unit="ms", utc=True)
    right.plot(times, y[tail], "k-", lw=1, label="actual")
    for name, p in preds.items():
        right.plot(times, p[tail], lw=0.8, label=name)
    right.set_title(f"{shown}: last 14 days of the test period")
    right.tick_params(axis="x", labelrotation=30, labelsize=7)
    right.legend(fontsize=7)
    return _save(fig, path)


def equity_curve(curve: pd.DataFrame, path: Path) -> str:
    """Equal-weight portfolio equity: the strategy against buy-and-hold."""
    fig, ax = plt.subplots(figsize=(8, 4))
    times = pd.to_datetime(curve.index.to_numpy(), unit="ms", utc=True)
    ax.plot(times, curve["strategy_equity"], label="direction signal (after fees)")
    ax.plot(times, curve["gross_equity"], ":", label="direction signal (before fees)")
    ax.plot(times, curve["hold_equity"], label="buy and hold")
    ax.set_ylabel("equity (start = 1)")
    ax.set_title("test period backtest, equal-weight across series")
    ax.legend()
    return _save(fig, path)


def roc(y: np.ndarray, preds: Mapping[str, np.ndarray], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in preds.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC on the test period (pooled)")
    ax.legend(fontsize=7)
    return _save(fig, path)
