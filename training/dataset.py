"""Datasets: features over history, targets strictly after the window, time-ordered splits.

A *sample* is one usable sequence: the feature rows ``t - W + 1 .. t`` of one series (bar
``t`` is the last closed bar of the window) and the targets of bar ``t + 1``:

- ``next_bar_volume``: ``log1p(volume[t + 1])`` (the model learns it standardised; serving
  undoes both through ``preprocess.json``);
- ``next_bar_up``: ``close[t + 1] > close[t]``.

A sample exists only when every feature of every window row is defined (no gap, no
warm-up) and bar ``t + 1`` exists. Validity is checked over ``W`` = the longest window any
model or baseline of the run reads, so every model is scored on the very same samples.

Splits go by the target's time, with the same cut timestamps for every pooled series:
``test`` is the last ``test_days`` before the end of the shortest series (each series keeps
at least that much held out), ``validation`` the last ``validation_fraction`` of the time
before it, ``train`` the rest (or its last ``train_days``). ``purge_bars`` bars before each
cut are dropped, so no training target sits inside a later split's input windows. Nothing
is shuffled across a boundary; the scaler is fitted on the rows of training windows only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from streamer.features import FEATURE_NAMES, compute_features
from training.history import SeriesHistory
from training.horizons import complete, ups_at, volume_sums
from whalecast.artifact import Scaler
from whalecast.domain import Series, floor_to_bar

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALIDATION: "validation", TEST: "test"}
DAY_MS = 86_400_000
INERT_SCALE = 1e9  # scale of a feature constant in training: its later values become ~0


class DatasetError(ValueError):
    """The data cannot form the requested dataset (too short, bad split settings)."""


@dataclass(frozen=True)
class SeriesData:
    """One series on its full bar grid: prices, volume and every v1 feature (unscaled)."""

    series: Series
    open_ms: np.ndarray  # int64, consecutive bars
    close: np.ndarray
    volume: np.ndarray
    features: np.ndarray  # (bars, len(FEATURE_NAMES)) float64, NaN where undefined


def prepare(histories: Sequence[SeriesHistory]) -> list[SeriesData]:
    """Compute the feature table of every series with the daemon's own feature code."""
    out = []
    for h in histories:
        feats = compute_features(h.bars, h.series.timeframe)
        out.append(
            SeriesData(
                series=h.series,
                open_ms=h.bars["open_ms"].to_numpy(np.int64),
                close=h.bars["close"].to_numpy(np.float64),
                volume=h.bars["volume"].to_numpy(np.float64),
                features=feats[list(FEATURE_NAMES)].to_numpy(np.float64),
            )
        )
    return out


def feature_index(names: Sequence[str]) -> list[int]:
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise DatasetError(f"unknown features {unknown}; v1 has {', '.join(FEATURE_NAMES)}")
    return [FEATURE_NAMES.index(n) for n in names]


# --- splits ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cuts:
    """Split boundaries on the target time (ms UTC), shared by every series."""

    train_ms: int  # first target time used for training
    validation_ms: int
    test_ms: int
    purge_ms: int

    def split_of(self, target_ms: np.ndarray) -> np.ndarray:
        """TRAIN / VALIDATION / TEST per target time, -1 where purged or before ``train_ms``."""
        split = np.full(len(target_ms), -1, dtype=np.int8)
        split[(target_ms >= self.train_ms) & (target_ms < self.validation_ms - self.purge_ms)] = (
            TRAIN
        )
        split[(target_ms >= self.validation_ms) & (target_ms < self.test_ms - self.purge_ms)] = (
            VALIDATION
        )
        split[target_ms >= self.test_ms] = TEST
        return split

    def as_dict(self) -> dict[str, Any]:
        return {f.name: iso(getattr(self, f.name)) if f.name != "purge_ms" else self.purge_ms
                for f in fields(self)}  # fmt: skip


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_cuts(
    data: Sequence[SeriesData],
    test_days: float,
    validation_fraction: float,
    train_days: float | None,
    purge_bars: int,
) -> Cuts:
    bar_ms = data[0].series.bar_ms
    first = min(int(d.open_ms[0]) for d in data)
    end = min(int(d.open_ms[-1]) for d in data)
    test_ms = floor_to_bar(end - int(test_days * DAY_MS), bar_ms)
    if train_days is None:
        span = test_ms - first
        validation_ms = floor_to_bar(test_ms - int(validation_fraction * span), bar_ms)
        train_ms = first
    else:
        fit_span = int(train_days * DAY_MS)
        val_span = int(fit_span * validation_fraction / (1 - validation_fraction))
        validation_ms = floor_to_bar(test_ms - val_span, bar_ms)
        train_ms = max(first, validation_ms - fit_span)
    if not first < validation_ms < test_ms:
        raise DatasetError(
            f"history from {iso(first)} to {iso(end)} is too short for test_days={test_days}"
        )
    return Cuts(train_ms, validation_ms, test_ms, purge_bars * bar_ms)


# --- samples -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """Pooled samples, one entry per sequence, in series then time order."""

    series: np.ndarray  # index into the SeriesData list
    row: np.ndarray  # grid row of bar t (the window's last row)
    target_ms: np.ndarray  # open time of bar t + 1
    split: np.ndarray
    y_up: np.ndarray  # 1.0 when close[t + 1] > close[t]
    y_log_volume: np.ndarray  # log1p(volume[t + 1])
    bar_return: np.ndarray  # close[t + 1] / close[t] - 1
    #: ``(n, len(horizons))`` targets over several bars (:mod:`training.horizons`); no
    #: columns unless :func:`build_samples` was given horizons
    y_volume_sum: np.ndarray  # log1p(volume[t + 1] + ... + volume[t + h])
    y_up_at: np.ndarray  # 1.0 when close[t + h] > close[t]

    def __len__(self) -> int:
        return len(self.row)

    def take(self, mask: np.ndarray) -> Samples:
        return Samples(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def of(self, split: int) -> Samples:
        return self.take(self.split == split)

    def tags(self, data: Sequence[SeriesData]) -> np.ndarray:
        names = np.array([d.series.tag for d in data], dtype=object)
        return np.asarray(names[self.series])


def _valid_rows(d: SeriesData, window: int) -> np.ndarray:
    """Rows t whose window ``t-window+1..t`` is fully defined and whose bar t+1 exists."""
    clean = np.isfinite(d.features).all(axis=1).astype(np.int64)
    run = np.convolve(clean, np.ones(window, dtype=np.int64))[: len(clean)]
    ok = run == window
    ok[:-1] &= np.isfinite(d.close[1:]) & np.isfinite(d.volume[1:])
    ok[-1] = False
    return np.flatnonzero(ok)


def build_samples(
    data: Sequence[SeriesData], window: int, cuts: Cuts, horizons: Sequence[int] = ()
) -> Samples:
    """Every sample whose window of ``window`` rows is defined, labelled with its split;
    with ``horizons``, only those whose every horizon's targets are defined and inside the
    sample's split."""
    parts: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(Samples)}
    for i, d in enumerate(data):
        rows = _valid_rows(d, window)
        target_ms = d.open_ms[rows + 1]
        split = cuts.split_of(target_ms)
        keep = split >= 0
        rows, target_ms, split = rows[keep], target_ms[keep], split[keep]
        close_now, close_next = d.close[rows], d.close[rows + 1]
        parts["series"].append(np.full(len(rows), i, dtype=np.int64))
        parts["row"].append(rows)
        parts["target_ms"].append(target_ms)
        parts["split"].append(split)
        parts["y_up"].append((close_next > close_now).astype(np.float32))
        parts["y_log_volume"].append(np.log1p(d.volume[rows + 1]))
        parts["bar_return"].append(close_next / close_now - 1.0)
        parts["y_volume_sum"].append(volume_sums(d.volume, rows, horizons))
        parts["y_up_at"].append(ups_at(d.close, rows, horizons))
    samples = Samples(**{k: np.concatenate(v) for k, v in parts.items()})
    if horizons:
        last_ms = samples.target_ms + (max(horizons) - 1) * data[0].series.bar_ms
        samples = samples.take(complete(samples.y_volume_sum, samples.y_up_at, samples.split,
                                        cuts.split_of(last_ms)))  # fmt: skip
    for code, name in SPLIT_NAMES.items():
        if not (samples.split == code).any():
            raise DatasetError(f"the {name} split is empty; check the split settings and history")
    return samples


# --- scaling and windows -------------------------------------------------------------------------


def _covered(n_rows: int, last_rows: np.ndarray, window: int) -> np.ndarray:
    """Rows inside at least one window ending at ``last_rows``."""
    marks = np.zeros(n_rows + 1, dtype=np.int64)
    np.add.at(marks, last_rows - window + 1, 1)
    np.add.at(marks, last_rows + 1, -1)
    return np.cumsum(marks[:-1]) > 0


def fit_scaler(
    data: Sequence[SeriesData], train: Samples, columns: Sequence[int], window: int
) -> Scaler:
    """Mean and standard deviation of the feature rows inside training windows only.

    A feature that is constant over the training rows (the whale columns when the training
    period predates the whale data) teaches the network nothing, and its weights stay as
    initialised. Its scale is set to :data:`INERT_SCALE`, so later non-constant values
    reach the network as about 0 instead of as untrained noise (see :func:`inert`).
    """
    blocks = []
    for i, d in enumerate(data):
        rows = train.row[train.series == i]
        if len(rows):
            blocks.append(d.features[_covered(len(d.open_ms), rows, window)][:, columns])
    values = np.concatenate(blocks)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    scale = np.where(std > 1e-12, std, INERT_SCALE)
    return Scaler(mean=[float(x) for x in mean], scale=[float(x) for x in scale])


def inert(scaler: Scaler, names: Sequence[str]) -> list[str]:
    """The features the scaler switches off (constant over the training rows)."""
    return [n for n, s in zip(names, scaler.scale, strict=True) if s >= INERT_SCALE]


def target_scaler(train: Samples) -> Scaler:
    y = train.y_log_volume
    return Scaler(mean=[float(y.mean())], scale=[float(max(y.std(), 1e-12))])


def windows(
    data: Sequence[SeriesData],
    samples: Samples,
    columns: Sequence[int],
    window: int,
    scaler: Scaler,
) -> np.ndarray:
    """Model input ``(n, window, len(columns))`` float32, scaled, oldest row first."""
    mean = np.asarray(scaler.mean)
    scale = np.asarray(scaler.scale)
    out = np.empty((len(samples), window, len(columns)), dtype=np.float32)
    for i, d in enumerate(data):
        mask = samples.series == i
        if not mask.any():
            continue
        table = ((d.features[:, columns] - mean) / scale).astype(np.float32)
        view = np.lib.stride_tricks.sliding_window_view(table, window, axis=0)
        out[mask] = view[samples.row[mask] - window + 1].transpose(0, 2, 1)
    return out


def lagged(
    data: Sequence[SeriesData], samples: Samples, name: str, lags: Sequence[int]
) -> np.ndarray:
    """Raw (unscaled) feature ``name`` at rows ``t - lag``: ``(n, len(lags))``."""
    col = FEATURE_NAMES.index(name)
    out = np.empty((len(samples), len(lags)))
    for i, d in enumerate(data):
        mask = samples.series == i
        rows = samples.row[mask]
        out[mask] = np.stack([d.features[rows - lag, col] for lag in lags], axis=1)
    return out
