"""Event-loop lag: how late the loop runs a timer it was asked to run.

A task sleeps ``interval_seconds`` again and again and records, each time, how
much longer than asked it took (``whalecast_event_loop_lag_seconds``). Lag
means something blocks the loop (a forward pass not moved to a worker thread,
a large JSON decode); the bar-loop target is under 20 ms during inference. Each
tick also exports how many asyncio tasks are alive (``whalecast_event_loop_tasks``):
flat in a healthy daemon, growing with a task leak.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from whalecast.metrics import Metrics

#: ``(due, lag)``: when a timer was due (``time.monotonic()``) and how late it ran.
SampleHook = Callable[[float, float], None]


class LoopLagMonitor:
    def __init__(
        self,
        metrics: Metrics,
        interval_seconds: float = 0.1,
        on_sample: SampleHook | None = None,
    ) -> None:
        self.metrics = metrics
        self.interval = interval_seconds
        self.on_sample = on_sample
        self.max_lag = 0.0
        self.samples = 0

    def reset(self) -> None:
        """Start a new measuring period (e.g. around one bar in the benchmark)."""
        self.max_lag = 0.0
        self.samples = 0

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.monotonic() - started - self.interval)
            self.metrics.loop_lag.observe(lag)
            self.metrics.loop_tasks.set(len(asyncio.all_tasks()))
            self.max_lag = max(self.max_lag, lag)
            self.samples += 1
            if self.on_sample is not None:
                self.on_sample(started + self.interval, lag)
