"""The live feed's recording: appended as alerts are admitted, its tail read back at start-up
so that a restart mid-bar loses none of the transfers the bar already had."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from streamer.whale_bars import WhaleBarAggregator
from streamer.whale_intake import WhaleIntake
from streamer.whale_record import TAIL_CHUNK_BYTES, AlertRecorder, recent_entries
from tests.test_whale import BINANCE, UNKNOWN, alert
from whalecast.domain import Series, WhaleBar
from whalecast.metrics import Metrics
from whalecast.settings import ConfigError

H = 3_600_000
T0 = 1_730_728_800_000  # an hour boundary
BTC = Series("binance", "BTC/USDT", "1h")
ETH = Series("binance", "ETH/USDT", "1h")


def recorded_alert(n: int, usd: float = 1e6) -> dict[str, Any]:
    body = copy.deepcopy(alert([UNKNOWN], [BINANCE], usd=usd))
    body["transaction"]["hash"] = f"h{n}"
    return body


def test_the_tail_read_back_is_every_entry_known_since_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "whale.jsonl"
    recorder = AlertRecorder(path)
    for n in range(600):  # several read chunks
        recorder.write(T0 + n * 60_000, recorded_alert(n))
    assert path.stat().st_size > 3 * TAIL_CHUNK_BYTES
    with path.open("a") as handle:
        handle.write('{"known_ms": 99, "alert": {"type": "al')  # cut short by a crash
    since = T0 + 100 * 60_000
    entries = recent_entries(path, since)
    assert [e["known_ms"] for e in entries] == [T0 + n * 60_000 for n in range(100, 600)]
    assert entries[0]["alert"] == recorded_alert(100)
    assert recent_entries(tmp_path / "none.jsonl", since) == []


def test_a_restart_puts_back_the_transfers_of_bars_not_stored_yet(tmp_path: Path) -> None:
    path = tmp_path / "whale.jsonl"
    recorder = AlertRecorder(path)
    recorder.write(T0 + 10, recorded_alert(1, usd=1e6))  # bar T0: stored by both series
    recorder.write(T0 + H + 10, recorded_alert(2, usd=2e6))  # bar T0+H: stored by ETH only
    recorder.write(T0 + 2 * H + 10, recorded_alert(3, usd=3e6))  # bar T0+2H: in progress
    recorder.write(T0 + 2 * H + 20, recorded_alert(4, usd=4e6))
    metrics = Metrics(process=False)
    intake = WhaleIntake(WhaleBarAggregator([BTC, ETH], stablecoins=[]), metrics)
    restored = intake.restore_recording(path, {BTC: T0, ETH: T0 + H})
    assert restored == 3
    assert intake.take(BTC, T0) == WhaleBar()
    assert intake.take(BTC, T0 + H) == WhaleBar(2e6, 0.0, 1, 0.0)
    assert intake.take(BTC, T0 + 2 * H) == WhaleBar(7e6, 0.0, 2, 0.0)
    reached = metrics.registry.get_sample_value(
        "whalecast_whale_transfers_total", {"flow": "inflow"}
    )
    assert not reached  # counted once, by the process that received them


def test_a_recording_line_is_the_alert_and_its_knowledge_time(tmp_path: Path) -> None:
    path = tmp_path / "whale.jsonl"
    AlertRecorder(path).write(T0 + 5, recorded_alert(1))
    (line,) = path.read_text().splitlines()
    assert json.loads(line) == {"known_ms": T0 + 5, "alert": recorded_alert(1)}
    for bad in (tmp_path, tmp_path / "missing" / "whale.jsonl"):  # a directory, no directory
        with pytest.raises(ConfigError, match=r"whale\.record_path"):
            AlertRecorder(bad)
    recorder = AlertRecorder(path)
    path.unlink()
    path.mkdir()  # replaced under a running daemon: every write fails, the feed goes on
    recorder.write(T0, recorded_alert(2))
    assert recorder.errors == 1
