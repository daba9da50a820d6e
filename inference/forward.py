"""The bar loop's forward passes: when they run, in which thread, and in what order.

Three kinds of work go through the served runtimes, all in worker threads (the
event loop keeps reading feeds), one at a time (``_lock``, first come first
served), because priming writes the state caches that a pass reads:

- **the bar's pass** (:meth:`ForwardPasses.run`): one batched pass per model over
  the bar's complete windows, stepping each series from its primed state where it
  matches (:meth:`inference.runtime.ModelRuntime.predict_bar`);
- **the early pass** (:meth:`ForwardPasses.start_early`): the same pass, started
  while Redis is still storing the bar's last candles, on the windows the store
  forecast for them (``WindowStore.plan``, before ``commit`` sends it). The bar's pass takes its
  results only if it would have computed exactly the same thing: same bar, same
  series in the same order, the same runtime objects, and bit-identical windows now
  that the store confirmed. Otherwise they are discarded and the pass runs again, so
  a resync, a model swap or a late series costs time, never a wrong value;
- **priming** (:meth:`ForwardPasses.start_priming`): after a bar is published, each
  model's recurrent states for the next bar (:mod:`inference.incremental`).

Predictions are still only published after the store confirmed the bar: the early
pass moves computing, not publishing, ahead of Redis.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from inference.publisher import Published
from whalecast.domain import Series
from whalecast.logs import get_logger
from whalecast.metrics import Metrics

log = get_logger(__name__)

T = TypeVar("T")
#: model name -> (values, series stepped from a primed state, seconds in the pass)
Results = dict[str, tuple[np.ndarray, int, float]]


class Runtime(Protocol):
    """One served model version (:class:`inference.runtime.ModelRuntime`), as a bar uses it."""

    @property
    def model(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def published(self) -> Sequence[Published]: ...

    def predict_bar(self, windows: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, int]: ...

    def prime(self, windows: np.ndarray, positions: np.ndarray) -> None: ...


@dataclass(frozen=True)
class Batch:
    """One bar's pass: the bar, the runtimes, the series in order and their windows
    ``(n, W, F)``, and each series' stable index for the state caches."""

    key: tuple[str, int]
    runtimes: dict[str, Runtime]
    series: list[Series]
    windows: np.ndarray
    positions: np.ndarray

    def same_pass(self, other: Batch) -> bool:
        """Would a pass over ``other`` compute exactly what a pass over this one did?"""
        return (
            self.key == other.key
            and self.series == other.series
            and self.runtimes.keys() == other.runtimes.keys()
            and all(self.runtimes[m] is r for m, r in other.runtimes.items())
            and np.array_equal(self.windows, other.windows)
        )


class ForwardPasses:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._lock = asyncio.Lock()
        self._early: tuple[Batch, asyncio.Task[Results]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # early passes and priming still running

    # --- the bar's pass ---------------------------------------------------------------------

    async def run(self, batch: Batch) -> Results:
        """Each model's predictions for the batch's series, counted in the metrics."""
        results = await self._take_early(batch)
        if results is None:
            results = await self._forward(batch)
        rows = len(batch.series)
        for model, (_values, stepped, seconds) in results.items():
            self.metrics.inference_seconds.labels(model).observe(seconds)
            self.metrics.batch_size.labels(model).observe(rows)
            self.metrics.forward_rows.labels(model, "step").inc(stepped)
            self.metrics.forward_rows.labels(model, "window").inc(rows - stepped)
        return results

    async def _forward(self, batch: Batch) -> Results:
        results: Results = {}
        async with self._lock:
            for model, runtime in batch.runtimes.items():
                started = time.perf_counter()
                values, stepped = await asyncio.to_thread(
                    runtime.predict_bar, batch.windows, batch.positions
                )
                results[model] = (values, stepped, time.perf_counter() - started)
        return results

    # --- the early pass ---------------------------------------------------------------------

    def start_early(self, batch: Batch) -> None:
        """Start a bar's pass now, on forecast windows (replaces an unused earlier one)."""
        task = self._task(self._forward(batch))
        task.add_done_callback(_retrieve)
        if self._early is not None:
            self.metrics.early_passes.labels("discarded").inc()
        self._early = (batch, task)

    async def _take_early(self, batch: Batch) -> Results | None:
        early, self._early = self._early, None
        if early is None:
            return None
        forecast, task = early
        if forecast.key == batch.key:
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is None and forecast.same_pass(batch):
                self.metrics.early_passes.labels("used").inc()
                return task.result()
        self.metrics.early_passes.labels("discarded").inc()
        return None

    # --- priming ----------------------------------------------------------------------------

    def start_priming(
        self, runtimes: dict[str, Runtime], windows: np.ndarray, positions: np.ndarray
    ) -> None:
        """Prime each model's states from this bar's windows, for the next bar (a task)."""
        self._task(self._prime(dict(runtimes), windows, positions))

    async def _prime(
        self, runtimes: dict[str, Runtime], windows: np.ndarray, positions: np.ndarray
    ) -> None:
        async with self._lock:
            for model, runtime in runtimes.items():
                started = time.perf_counter()
                try:
                    await asyncio.to_thread(runtime.prime, windows, positions)
                except Exception as e:  # noqa: BLE001 - task boundary: the next bar runs full windows
                    log.error("priming failed", model=model, series=len(positions), error=repr(e))
                    continue
                self.metrics.prime_seconds.labels(model).observe(time.perf_counter() - started)

    async def settle(self) -> None:
        """Wait for early passes and priming still running (a worker thread cannot be
        stopped, and a pass must not run alongside a priming)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def _task(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        # a fresh context: the task belongs to no one bar's log fields
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _retrieve(task: asyncio.Task[Any]) -> None:
    """An early pass nobody took: its failure is the bar's pass's to report, not asyncio's."""
    if not task.cancelled():
        task.exception()
