"""Fault-injection support: the one invariant every fault test checks, and a daemon to run.

The invariant (:class:`Invariant`), after any injected fault:

1. every closed bar of the replayed history is stored exactly once in Redis: the
   series' ``last_open_ms`` is the simulator's last closed bar, the stored bars
   are exactly the simulator's bars of the kept span (no bar missing, none twice,
   none invented) with the simulator's OHLCV;
2. the stored window holds the features :func:`streamer.features.compute_features`
   computes over those bars;
3. every bar that closed while a daemon was running and had a complete window
   has exactly one prediction per model (read from the prediction stream), or the
   daemon reported it (``whalecast_series_not_ready_total``; bars that closed while no
   daemon ran are history, ``whalecast_bars_history_total``); no prediction is for a bar
   that does not exist;
4. the daemon is still running (no task of it ended, or its process is alive).

The checker polls until the invariant holds or a timeout passes, then fails with
every violation listed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError

from inference.daemon import Daemon
from streamer.features import BAR_COLUMNS, FEATURE_NAMES, HISTORY_BARS, compute_features
from streamer.simulator import Simulator, SimulatorConfig
from streamer.store_format import unpack_bars, unpack_window
from whalecast.domain import Series
from whalecast.keys import Keys
from whalecast.metrics import Metrics
from whalecast.redisconn import RedisHandle
from whalecast.settings import Settings

PREFIX = "wc"
MODELS = ("direction", "volume")
WINDOW = 24
BARS_KEPT = HISTORY_BARS + WINDOW
#: How the daemon reports a bar of its live range it did not predict (history bars are
#: outside the live range by definition: they closed before the daemon started).
REPORTED = ("whalecast_series_not_ready_total",)


# ---------------------------------------------------------------------------- metrics


def metric_values(text: str) -> dict[str, float]:
    """A scrape as ``{"name{label=value,...}": value}``, plus per-name sums under ``name``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def rejected(metrics: Metrics, reason: str, feed: str = "candles") -> float:
    value = metrics.registry.get_sample_value(
        "whalecast_feed_rejected_total", {"feed": feed, "reason": reason}
    )
    return value or 0.0


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------------- predictions


class PredictionLog:
    """Every entry of the prediction stream, read incrementally and kept across Redis restarts.

    Call :meth:`collect` before anything that may wipe Redis (a restart without
    persistence): entries already read stay here; new ones get newer stream IDs.
    """

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.entries: dict[bytes, dict[str, Any]] = {}
        self._last = b"-"

    async def collect(self, redis: Any) -> None:
        start = b"-" if self._last == b"-" else b"(" + self._last
        while True:
            batch = await redis.xrange(self.keys.predictions_stream, min=start, count=5000)
            if not batch:
                return
            for entry_id, fields in batch:
                self.entries[entry_id] = json.loads(fields[b"data"])
            self._last = batch[-1][0]
            start = b"(" + self._last

    def messages(self) -> list[dict[str, Any]]:
        return list(self.entries.values())


# ---------------------------------------------------------------------------- the invariant


@dataclass
class Segment:
    """Bars (open times, inclusive) that closed while one daemon ran."""

    first_ms: int
    last_ms: int | None = None


@dataclass
class Outcome:
    violations: list[str]
    predicted: int = 0  # (series, bar) pairs predicted by every model
    missing: int = 0  # (series, bar) pairs with a complete window and no prediction
    reported: float = 0.0  # the not-ready counter

    def assert_all_predicted(self, series: int, bars: int) -> None:
        """Every bar of the live range predicted (``bars`` per series), none missing."""
        assert (self.missing, self.predicted) == (0, series * bars), self


@dataclass
class Invariant:
    """The fault suite's invariant for one simulator and one Redis."""

    sim: Simulator
    redis_url: str
    models: tuple[str, ...] = MODELS
    prefix: str = PREFIX
    redis_kwargs: dict[str, Any] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = Keys(self.prefix)
        self.log = PredictionLog(self.keys)
        self.series = [
            Series(exchange, symbol, self.sim.timeframe)
            for exchange in self.sim.exchanges
            for symbol in self.sim.symbols
        ]
        self.bar_ms = self.series[0].bar_ms

    # -- the daemon's life ---------------------------------------------------------------

    def daemon_started(self) -> None:
        """A daemon starts now: the bar that has just closed is its first to predict."""
        self.segments.append(Segment(self.sim.now_ms - self.bar_ms))

    def daemon_stopped(self) -> None:
        """A daemon stopped now (after its last bar was published)."""
        self.segments[-1].last_ms = self.sim.now_ms - self.bar_ms

    def live(self, open_ms: int) -> bool:
        return any(
            s.first_ms <= open_ms and (s.last_ms is None or open_ms <= s.last_ms)
            for s in self.segments
        )

    # -- checking ------------------------------------------------------------------------

    async def collect(self) -> None:
        """Read the prediction stream now (before Redis may lose it)."""
        client = connect_plain(self.redis_url, **self.redis_kwargs)
        try:
            await self.log.collect(client)
        finally:
            await client.aclose()

    async def check(
        self,
        metrics_text: Callable[[], Any],
        alive: Callable[[], str | None],
        *,
        timeout_seconds: float = 30.0,
        settle_seconds: float = 0.3,
    ) -> Outcome:
        """Poll until the invariant holds (and still holds ``settle_seconds`` later), or fail."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        confirmed = False
        while True:
            outcome = await self.evaluate(await _maybe_await(metrics_text()), alive())
            if not outcome.violations:
                if confirmed:
                    return outcome
                confirmed = True
                await asyncio.sleep(settle_seconds)
                continue
            confirmed = False
            if loop.time() > deadline:
                shown = "\n  ".join(outcome.violations[:40])
                raise AssertionError(f"invariant violated ({len(outcome.violations)}):\n  {shown}")
            await asyncio.sleep(0.1)

    async def evaluate(self, metrics_text: str, alive_problem: str | None) -> Outcome:
        violations: list[str] = []
        if alive_problem is not None:
            violations.append(alive_problem)
        try:
            await self.collect()
            violations += await self.store_violations()
        except (OSError, RedisError) as e:
            return Outcome([f"redis unreachable: {e!r}"])
        outcome = self._check_predictions(metric_values(metrics_text))
        outcome.violations[:0] = violations
        return outcome

    async def store_violations(self) -> list[str]:
        """Parts 1 and 2 of the invariant (the stored bars and windows), for every series."""
        client = connect_plain(self.redis_url, **self.redis_kwargs)
        try:
            stored = await self._read_store(client)
        finally:
            await client.aclose()
        return [v for s in self.series for v in self._check_store(s, *stored[s])]

    async def _read_store(self, client: Any) -> dict[Series, tuple[Any, Any, Any]]:
        pipe = client.pipeline(transaction=False)
        for s in self.series:
            pipe.hget(self.keys.meta(s), "last_open_ms")
            pipe.zrange(self.keys.bars(s), 0, -1, withscores=True)
            pipe.get(self.keys.window(s))
        replies = await pipe.execute()
        return {s: tuple(replies[3 * i : 3 * i + 3]) for i, s in enumerate(self.series)}

    def truth(self, series: Series) -> np.ndarray:
        rows = self.sim.closed_bars(series.symbol)
        return np.array(rows, dtype=np.float64).reshape(-1, 6)

    def _check_store(
        self, series: Series, last: bytes | None, members: list[tuple[bytes, float]], blob: Any
    ) -> list[str]:
        truth = self.truth(series)
        want_last = int(truth[-1, 0])
        if last is None or int(last) != want_last:
            return [f"stored last bar {last!r}, the exchange's last closed {want_last}"]
        span = truth[truth[:, 0] > want_last - BARS_KEPT * self.bar_ms]
        problem = _bars_problem(members, span) or _window_problem(members, blob, series)
        return [] if problem is None else [f"{series.tag}: {problem}"]

    def _complete(self, truth_open: set[int], open_ms: int) -> bool:
        """The exchange has every bar the window of ``open_ms`` reads."""
        need = HISTORY_BARS - 1 + WINDOW
        return all(open_ms - k * self.bar_ms in truth_open for k in range(need))

    def _check_predictions(self, metrics: dict[str, float]) -> Outcome:
        messages = self.log.messages()
        per_key = Counter(
            (m["exchange"], m["symbol"], m["model"], m["bar_open_ms"]) for m in messages
        )
        doubled = [k for k, n in per_key.items() if n > 1]
        violations = [f"{len(doubled)} predictions published twice, e.g. {doubled[:3]}"] * bool(
            doubled
        )
        predicted = 0
        missing: list[tuple[str, int]] = []
        for series in self.series:
            opens = {int(t) for t in self.truth(series)[:, 0]}
            mine = [
                m
                for m in messages
                if (m["exchange"], m["symbol"]) == (series.exchange, series.symbol)
            ]
            violations += [f"{series.tag}: {p}" for m in mine if (p := self._bad(m, opens))]
            for open_ms in sorted(opens):
                if not self.live(open_ms) or not self._complete(opens, open_ms):
                    continue
                have = [
                    per_key[(series.exchange, series.symbol, model, open_ms)]
                    for model in self.models
                ]
                if all(have):
                    predicted += 1
                elif any(have):
                    violations.append(f"{series.tag}: bar {open_ms} predicted by some models only")
                else:
                    missing.append((series.tag, open_ms))
        reported = sum(metrics.get(name, 0.0) for name in REPORTED)
        if len(missing) > reported:
            violations.append(
                f"{len(missing)} bars with a complete window neither predicted nor reported "
                f"(reported: {reported:g}), e.g. {missing[:4]}"
            )
        return Outcome(violations, predicted, len(missing), reported)

    def _bad(self, message: dict[str, Any], opens: set[int]) -> str | None:
        if message["bar_open_ms"] not in opens:
            return f"prediction for a bar that never closed: {message}"
        if message["bar_close_ms"] != message["bar_open_ms"] + self.bar_ms:
            return f"wrong bar_close_ms in {message}"
        if not np.isfinite(message["value"]):
            return f"non-finite value in {message}"
        return None


def _bars_problem(members: list[tuple[bytes, float]], span: np.ndarray) -> str | None:
    """The stored bars against the exchange's bars of the kept span."""
    scores = [int(score) for _member, score in members]
    doubled = [t for t, n in Counter(scores).items() if n > 1]
    if doubled:
        return f"bars stored twice: {doubled}"
    wanted = [int(t) for t in span[:, 0]]
    if scores != wanted:
        extra, lost = sorted(set(scores) - set(wanted)), sorted(set(wanted) - set(scores))
        return f"stored bars differ from the exchange's: extra {extra}, missing {lost}"
    bars = unpack_bars([m for m, _ in members])
    same = (bars[:, :6] == span).all(axis=1)
    if not same.all():
        return f"stored OHLCV differs from the exchange's at {span[~same, 0].astype(int)[:5]}"
    whale = bars[:, 6:]
    if not (np.isfinite(whale).all() and (whale >= 0).all()):
        return "stored whale aggregates not finite and non-negative"
    return None


def _window_problem(members: list[tuple[bytes, float]], blob: Any, series: Series) -> str | None:
    """The stored window against ``compute_features`` over the stored bars."""
    stored = unpack_window(blob, WINDOW)
    if stored is None:
        return "no window stored"
    frame = pd.DataFrame(unpack_bars([m for m, _ in members]), columns=list(BAR_COLUMNS))
    expected = compute_features(frame, series.timeframe).to_numpy()[-WINDOW:].astype(np.float32)
    pad = np.full((WINDOW - len(expected), len(FEATURE_NAMES)), np.nan, np.float32)
    expected = np.vstack([pad, expected])
    close = np.isclose(stored, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
    if close.all():
        return None
    row, col = np.argwhere(~close)[0]
    return (
        f"window row {row} {FEATURE_NAMES[col]} is {stored[row, col]}, "
        f"the features of the stored bars give {expected[row, col]}"
    )


def connect_plain(url: str, **kwargs: Any) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, **kwargs)


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value


# ---------------------------------------------------------------------------- fixtures
# (test modules import them by name and use them as pytest fixtures)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model registry with the tiny direction and volume models, once per module."""
    from testkit.daemon import write_demo_models

    path = tmp_path_factory.mktemp("registry")
    write_demo_models(path)
    return path


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """The shipped data slice with whale alerts, stepped by hand, 120 bars of history."""
    simulator = Simulator(SimulatorConfig(bar_seconds=None, history_bars=120))
    await simulator.start()
    yield simulator
    await simulator.stop()


# ---------------------------------------------------------------------------- in-process daemon


def daemon_problem(daemon: Daemon) -> str | None:
    """None while every task of the daemon runs; else which one ended and how."""
    for task in daemon.tasks:
        if task.done():
            error = None if task.cancelled() else task.exception()
            return f"daemon task {task.get_name()} ended: {error!r}"
    return None


@asynccontextmanager
async def own_daemon(
    settings: Settings, invariant: Invariant | None = None
) -> AsyncIterator[Daemon]:
    """A daemon with its own Redis client (as ``whalecast run`` builds it)."""
    async with RedisHandle(settings.redis) as redis:
        daemon = Daemon(settings, Metrics(), redis)
        if invariant is not None:
            invariant.daemon_started()
        await daemon.start()
        try:
            yield daemon
        finally:
            await daemon.stop()
            if invariant is not None:
                invariant.daemon_stopped()


@asynccontextmanager
async def checked_daemon(
    sim: Simulator,
    redis_url: str,
    registry: Path,
    *,
    daemon_redis_url: str | None = None,
    **sections: Any,
) -> AsyncIterator[tuple[Invariant, Daemon]]:
    """A daemon on ``sim`` (reaching Redis through ``daemon_redis_url`` if given), its first
    bar checked; yields the invariant and the daemon."""
    invariant = Invariant(sim, redis_url)
    settings = fault_settings(sim, daemon_redis_url or redis_url, registry, **sections)
    async with own_daemon(settings, invariant) as daemon:
        await check_daemon(invariant, daemon)
        yield invariant, daemon


def redis_errors(daemon: Daemon, operation: str) -> float:
    return sample(daemon.metrics, "whalecast_redis_errors_total", operation=operation)


async def check_daemon(
    invariant: Invariant, daemon: Daemon, timeout_seconds: float = 30.0
) -> Outcome:
    """The invariant for an in-process daemon."""
    return await invariant.check(
        lambda: daemon.metrics.render().decode(),
        lambda: daemon_problem(daemon),
        timeout_seconds=timeout_seconds,
    )


def copy_registry(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def fault_settings(sim: Simulator, redis_url: str, registry: Path, **sections: Any) -> Settings:
    """Daemon settings for fault tests: short grace, backoff and staleness; the keras backend."""
    from testkit.daemon import daemon_settings

    defaults: dict[str, dict[str, Any]] = {
        "feed": {"grace_seconds": 1.0, "backoff_initial_seconds": 0.05,
                 "backoff_max_seconds": 0.5, "stale_after_seconds": 3.0,
                 "deadline_check_seconds": 0.1, "batch_wait_seconds": 0.1},
        "inference": {"backend": "keras", "batch_buckets": [1, 8, 32],
                      "reload_poll_seconds": 0.3, "shutdown_grace_seconds": 10.0},
        "redis": {"socket_timeout_seconds": 1.0},
    }  # fmt: skip
    for name, values in sections.items():
        defaults[name] = {**defaults.get(name, {}), **values}
    return daemon_settings(sim, redis_url, registry, **defaults)


async def advance(sim: Simulator, bars: int = 1) -> None:
    """Play bars one at a time, letting the daemon read each."""
    for _ in range(bars):
        await sim.advance(1)
        await asyncio.sleep(0.05)


def tags(series: Iterable[Series]) -> list[str]:
    return [s.tag for s in series]
