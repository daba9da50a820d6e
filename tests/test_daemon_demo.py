"""``whalecast demo --bars 3`` on a fresh state directory: the README's first command.

It trains the small models (about half a minute here), replays the shipped slice
through the live daemon and prints a table of predictions, then a summary.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.tf]

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = {"BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"}
ROW = re.compile(
    r"^binance:(?P<symbol>\S+)\s+(?P<bar>\d{4}-\d\d-\d\d \d\d:\d\d)\s+(?P<p_up>[0-9.]+)"
    r"\s+(?P<volume>[0-9,.]+)\s+(?P<latency>[0-9.]+)ms$"
)


def test_demo_trains_then_prints_three_whole_bars(short_tmp: Path) -> None:
    state = short_tmp / "state"
    result = subprocess.run(
        [sys.executable, "-m", "whalecast", "demo", "--bars", "3", "--state-dir", str(state),
         "--ui-port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "training small direction, volume models" in out
    assert re.search(r"^web page: http://127\.0\.0\.1:\d+/ \(live", out, re.M)
    assert re.search(r"^series\s+bar \(UTC\)\s+p_up_next\s+next_volume\s+latency$", out, re.M)
    bars: dict[str, set[str]] = defaultdict(set)
    for line in out.splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        assert 0.0 <= float(match["p_up"]) <= 1.0
        assert float(match["volume"].replace(",", "")) > 0
        assert match["symbol"] not in bars[match["bar"]], "one row per series and bar"
        bars[match["bar"]].add(match["symbol"])
    assert len(bars) == 3 and all(symbols == SYMBOLS for symbols in bars.values()), dict(bars)
    assert re.search(r"^3 bars, 24 predictions; latency median [0-9.]+ ms", out, re.M)
    assert re.search(r"^direction: live direction accuracy [0-9.]+ over \d+ scored", out, re.M)
    assert (state / "models" / "direction" / "CURRENT").is_file()
