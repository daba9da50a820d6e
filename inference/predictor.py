"""The Predictor: from a bar's windows to its predictions.

It owns everything model-side of a bar, each speed-up switchable in
``inference`` settings so a person debugging can turn them off one by one:

- **the runtimes** a bar uses: a reloaded version comes in only at a new bar
  (:meth:`inference.models.ModelSet.swap_pending`), and every batch of one bar
  (main and late) uses the same versions;
- **the forward passes** (:mod:`inference.forward`): in a worker thread, one at a
  time, each series stepped from its primed state where it matches (the state
  caches are indexed by the series' position in the daemon's list);
- **the early pass** (``early_pass``): the bar's pass started on the windows the
  store forecast, while Redis stores the bar;
- **priming** (``priming``; steps need ``incremental`` too): after a bar, at start-up
  and for a version parked for the next swap, each model's recurrent states for
  the next bar;
- **heap freezing** (``freeze_heap``): once the models are loaded, their objects
  leave the collector's later passes (:func:`inference.heap.freeze_heap`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inference.completion import BarKey, Take
from inference.forward import Batch, ForwardPasses, Runtime
from inference.heap import freeze_heap
from inference.publisher import PredictionOut
from whalecast.domain import Series
from whalecast.metrics import Metrics

#: model name -> the runtime serving it
Runtimes = dict[str, Runtime]


class Models(Protocol):
    """The served-model set (:class:`inference.models.ModelSet`), as the predictor uses it."""

    def serving(self) -> Mapping[str, Runtime]: ...

    def swap_pending(self) -> list[str]: ...

    async def load_all(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Predictions:
    """One batch's outcome: the predictions, the series predicted (complete windows of
    the bar) and each model's seconds in the pass."""

    outputs: list[PredictionOut]
    series: list[Series]
    seconds: dict[str, float]


class Predictor:
    def __init__(
        self,
        models: Models,
        series: Sequence[Series],
        metrics: Metrics,
        *,
        early_pass: bool = True,
        priming: bool = True,
        freeze: bool = True,
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.early_pass = early_pass
        self.priming = priming
        self.freeze = freeze
        self.passes = ForwardPasses(metrics)
        self._position = {s: i for i, s in enumerate(series)}  # the state caches' index
        self._versions: dict[BarKey, Runtimes] = {}

    async def load(self) -> None:
        """Load every served model; then freeze the heap (if on) with them in it."""
        await self.models.load_all()
        if self.freeze:
            freeze_heap()

    # ------------------------------------------------------------------ a bar
    def start_early(self, key: BarKey, series: list[Series], windows: np.ndarray) -> None:
        """Start the bar's pass now on forecast windows (those complete, in position order)."""
        if not self.early_pass:
            return
        complete = np.isfinite(windows).all(axis=(1, 2))
        batch, rows, positions = self._ordered(series, complete)
        if batch:
            runtimes = dict(self.models.serving())
            self.passes.start_early(Batch(key, runtimes, batch, windows[rows], positions))

    async def predict(self, take: Take, windows: np.ndarray, ready: np.ndarray) -> Predictions:
        """Predict the batch's series whose window is ``ready`` (``windows`` in the
        order of ``take.series``), with the bar's versions; prime for the next bar."""
        runtimes = self._runtimes(take.key)
        batch = [s for s, ok in zip(take.series, ready, strict=True) if ok]
        if not batch:
            return Predictions([], [], {})
        x = windows[ready]
        positions = np.fromiter((self._position[s] for s in batch), np.intp, len(batch))
        results = await self.passes.run(Batch(take.key, runtimes, batch, x, positions))
        outputs: list[PredictionOut] = []
        seconds: dict[str, float] = {}
        for name, runtime in runtimes.items():
            values, _stepped, seconds[name] = results[name]
            outputs.extend(_outputs(runtime, batch, values, take))
        return Predictions(outputs, batch, seconds)

    def prime_after(self, take: Take, windows: np.ndarray, ready: np.ndarray) -> None:
        """After publishing: prime the bar's versions from its windows for the next bar."""
        batch = [s for s, ok in zip(take.series, ready, strict=True) if ok]
        if self.priming and batch:
            positions = np.fromiter((self._position[s] for s in batch), np.intp, len(batch))
            self.passes.start_priming(self._runtimes(take.key), windows[ready], positions)

    def prime(
        self, series: Sequence[Series], windows: np.ndarray, ready: np.ndarray,
        runtimes: Mapping[str, Runtime] | None = None,
    ) -> None:  # fmt: skip
        """Prime ``runtimes`` (default: the serving ones) from windows held now: at
        start-up, and for a version parked for the next swap."""
        chosen = dict(runtimes) if runtimes is not None else dict(self.models.serving())
        if self.priming and chosen and ready.any():
            positions = np.fromiter((self._position[s] for s in series), np.intp, len(series))
            self.passes.start_priming(chosen, windows[ready], positions[ready])

    def forget(self, keys: Iterable[BarKey]) -> None:
        for key in keys:
            self._versions.pop(key, None)

    async def settle(self) -> None:
        await self.passes.settle()

    # --------------------------------------------------------------- helpers
    def _runtimes(self, key: BarKey) -> Runtimes:
        runtimes = self._versions.get(key)
        if runtimes is None:
            # a new bar: only here may a reloaded version come in; late batches of this bar
            # use the same versions as its main batch
            self.models.swap_pending()
            runtimes = self._versions[key] = dict(self.models.serving())
        return runtimes

    def _ordered(
        self, series: list[Series], keep: np.ndarray
    ) -> tuple[list[Series], np.ndarray, np.ndarray]:
        """The kept series in the state caches' order: the series, their rows, positions."""
        order = sorted((self._position[s], j) for j, s in enumerate(series) if keep[j])
        rows = np.fromiter((j for _, j in order), np.intp, len(order))
        positions = np.fromiter((p for p, _ in order), np.intp, len(order))
        return [series[j] for _, j in order], rows, positions


def _outputs(
    runtime: Runtime, batch: list[Series], values: np.ndarray, take: Take
) -> list[PredictionOut]:
    """One prediction per series and output (``values`` ``(n, outputs)``)."""
    candles, arrived, open_ms = take.candles, take.arrived, take.key[1]
    model, version = runtime.model, runtime.version
    published = runtime.published
    return [
        PredictionOut(
            s,
            open_ms,
            candles[s].close_ms,
            model,
            version,
            out.target,
            value,
            arrived[s],
            out.horizon_bars,
            out.quantile,
        )
        for s, row in zip(batch, values.tolist(), strict=True)
        for out, value in zip(published, row, strict=True)
    ]
