"""Publish -> shown on the web page, with 1,000 series publishing every second
(a benchmark, not a test: it measures, and says whether the 1 s p99 target is met).

    python -m tests.bench_ui --series 1000 --bars 20 --out bench_ui.json --screenshot docs/img/ui.png

The simulator serves ``--series`` synthetic series and closes one bar every second;
the real daemon (two models with seed 004's and seed 000's architectures, as in
``whalecast bench --sections e2e``) predicts and publishes them; ``whalecast ui``
runs as a process of its own, as deployed; headless Chromium shows the page. For
every row the page receives it records the wall time from the prediction's
``published_ms`` to receiving the row (``received``) and to the end of the frame
that painted it (``shown``). Everything shares this machine's cores: the numbers
include the daemon's own load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_e2e import E2EOptions, bench_daemon
from testkit.process import write_config
from testkit.redis_servers import free_port
from tests.browser import browser_page
from tests.ui_helpers import ui_process, ui_settings

TARGET_P99_MS = 1000.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(series: int, bars: int, workdir: Path, screenshot: Path | None) -> dict[str, Any]:
    async with bench_daemon(E2EOptions(series=series, bars=bars, warmup_bars=1), workdir) as run:
        port = free_port()
        config = write_config(workdir / "ui.yml", ui_settings(run.settings, port=port))
        async with (
            ui_process(config, port, workdir / "ui.log") as url,
            browser_page(workdir / "profile") as page,
        ):
            await page.navigate(url)
            await page.wait_for(f"document.getElementById('series-count').textContent === '{series}'", 120)  # fmt: skip
            await page.wait_for("window.whalecastStats.chartBars > 0")
            await page.evaluate("window.whalecastStats.latencies.length = 0")
            await page.evaluate("window.whalecastStats.received.length = 0")
            started = time.monotonic()
            for bar in range(bars):  # one bar a second, on a fixed schedule
                await run.sim.advance(1)
                await asyncio.sleep(max(0.0, started + bar + 1 - time.monotonic()))
            await page.wait_for(f"window.whalecastStats.latencies.length >= {series * bars}", 300)
            shown: list[float] = await page.evaluate("window.whalecastStats.latencies")
            received: list[float] = await page.evaluate("window.whalecastStats.received")
            if screenshot is not None:
                await page.screenshot(screenshot)
    p99 = percentile(shown, 0.99)
    return {
        "series": series, "bars": bars, "rows": len(shown),
        "shown_median_ms": statistics.median(shown), "shown_p99_ms": p99, "shown_max_ms": max(shown),
        "received_median_ms": statistics.median(received), "received_p99_ms": percentile(received, 0.99),
        "target_p99_ms": TARGET_P99_MS, "target_met": p99 <= TARGET_P99_MS,
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(),
                    "python": platform.python_version()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    parser.add_argument("--screenshot", type=Path, help="write a screenshot of the page here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as workdir:
        result = asyncio.run(measure(args.series, args.bars, Path(workdir), args.screenshot))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"publish -> shown p99 {result['shown_p99_ms']:.0f} ms: target {TARGET_P99_MS:.0f} ms "
          f"{'met' if result['target_met'] else 'NOT met'}", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
