"""``whalecast demo --bars 3`` on a fresh state directory: the README's first command.

It trains the small models (about half a minute here), replays the shipped slice
through the live daemon and prints a table of predictions, then a summary. Then the
same models serve ``--exchanges binance,bybit,okx``: the slice through all three
exchanges' protocols at once.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from testkit.polling import wait_until_sync

pytestmark = [pytest.mark.slow, pytest.mark.tf]

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = {"BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"}
ROW = re.compile(
    r"^(?P<exchange>binance|bybit|okx):(?P<symbol>\S+)\s+(?P<bar>\d{4}-\d\d-\d\d \d\d:\d\d)\s+(?P<p_up>[0-9.]+)"
    r"\s+(?P<volume>[0-9,.]+)\s+(?P<latency>[0-9.]+)ms$"
)


def demo(state: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "whalecast", "demo", "--state-dir", str(state),
         "--ui-port", "0", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def rows_by_bar(out: str) -> dict[str, set[str]]:
    """``bar → {exchange:symbol}`` of the printed rows, each checked for sane values."""
    bars: dict[str, set[str]] = defaultdict(set)
    for line in out.splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        assert 0.0 <= float(match["p_up"]) <= 1.0
        assert float(match["volume"].replace(",", "")) > 0
        series = f"{match['exchange']}:{match['symbol']}"
        assert series not in bars[match["bar"]], "one row per series and bar"
        bars[match["bar"]].add(series)
    return bars


def test_demo_trains_then_prints_three_whole_bars(short_tmp: Path) -> None:
    state = short_tmp / "state"
    out = demo(state, "--bars", "3")
    assert "training small direction, volume models" in out
    assert re.search(r"^web page: http://127\.0\.0\.1:\d+/ \(live", out, re.M)
    assert re.search(r"^series\s+bar \(UTC\)\s+p_up_next\s+next_volume\s+latency$", out, re.M)
    bars = rows_by_bar(out)
    binance = {f"binance:{s}" for s in SYMBOLS}
    assert len(bars) == 3 and all(series == binance for series in bars.values()), dict(bars)
    assert re.search(r"^3 bars, 24 predictions; latency median [0-9.]+ ms", out, re.M)
    assert re.search(r"^direction: live direction accuracy [0-9.]+ over \d+ scored", out, re.M)
    assert (state / "models" / "direction" / "CURRENT").is_file()
    # what serves was promoted under the rules, never forced in, and says how it scored
    assert "forced" not in out
    for model, metric, baseline in (("direction", "auc", "logistic"), ("volume", "mae", "ridge")):
        line = rf"^{model}: serving \S+ \(.+\); held-out {metric} [0-9.]+ vs {baseline} [0-9.]+ \(better"
        assert re.search(line, out, re.M), out[-3000:]

    three = short_tmp / "three"
    shutil.copytree(state / "models", three / "models")  # the same models, a fresh Redis
    out = demo(three, "--bars", "2", "--exchanges", "binance,bybit,okx")
    assert "training" not in out and "on binance, bybit, okx from" in out
    bars = rows_by_bar(out)
    every = {f"{e}:{s}" for e in ("binance", "bybit", "okx") for s in SYMBOLS}
    assert len(bars) == 2 and all(series == every for series in bars.values()), dict(bars)
    assert re.search(r"^2 bars, 48 predictions; latency median [0-9.]+ ms", out, re.M)

    ctrl_c(short_tmp, state)


def ctrl_c(short_tmp: Path, state: Path) -> None:
    """Ctrl-C in a terminal: SIGINT to the demo's whole process group while bars play.
    The demo stops its page and subscriber, the daemon drains into Redis, the summary
    prints and nothing dies with a traceback."""
    live = short_tmp / "live"
    shutil.copytree(state / "models", live / "models")
    log = short_tmp / "live.out"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "whalecast", "demo", "--state-dir", str(live),
             "--ui-port", "0"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until_sync(lambda: len(rows_by_bar(log.read_text())) >= 2, 300, "two bars")
            os.killpg(demo.pid, signal.SIGINT)
            assert demo.wait(timeout=120) == 0, log.read_text()[-3000:]
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert re.search(r"^\d+ bars, \d+ predictions; latency median", text, re.M), text[-3000:]
