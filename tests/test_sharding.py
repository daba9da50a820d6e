"""Rendezvous sharding: exact cover, balance, and minimal movement on resize."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from whalecast.domain import Series
from whalecast.settings import ConfigError, load_settings, with_shard_from_hostname
from whalecast.sharding import owned, shard_of

SERIES = [Series("binance", f"S{i:04d}/USDT", "1h") for i in range(3000)]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_cover_every_series_exactly_once(count: int) -> None:
    parts = [owned(SERIES, i, count) for i in range(count)]
    flat = [s for part in parts for s in part]
    assert sorted(flat) == sorted(SERIES)
    assert len(flat) == len(set(flat))
    expected = len(SERIES) / count
    assert all(abs(len(p) - expected) < 0.1 * expected + 5 for p in parts)


def test_removing_a_shard_moves_only_its_series() -> None:
    before = {s: shard_of(s, 3) for s in SERIES}
    after = {s: shard_of(s, 2) for s in SERIES}
    moved = [s for s in SERIES if before[s] != after[s]]
    assert moved and all(before[s] == 2 for s in moved)


def test_adding_a_shard_moves_series_only_to_it() -> None:
    before = {s: shard_of(s, 2) for s in SERIES}
    after = {s: shard_of(s, 3) for s in SERIES}
    moved = [s for s in SERIES if before[s] != after[s]]
    assert all(after[s] == 2 for s in moved)
    assert 0.25 < len(moved) / len(SERIES) < 0.42


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        owned(SERIES, 3, 3)
    with pytest.raises(ValueError):
        shard_of(SERIES[0], 0)


def test_index_and_count_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # what the StatefulSet sets: the pod-index label and the replica count
    monkeypatch.setenv("WHALECAST_SHARD__INDEX", "2")
    monkeypatch.setenv("WHALECAST_SHARD__COUNT", "3")
    shard = load_settings(None).shard
    assert (shard.index, shard.count) == (2, 3)
    monkeypatch.setenv("WHALECAST_SHARD__COUNT", "2")
    with pytest.raises(ConfigError, match=r"shard.index 2 is outside 0..1"):
        load_settings(None)


@pytest.mark.parametrize(
    ("hostname", "index"), [("whalecast-0", 0), ("whalecast-2", 2), ("wc-shards-11", 11)]
)
def test_index_from_the_statefulset_hostname(hostname: str, index: int) -> None:
    settings = load_settings(None, shard={"count": 12, "index_from_hostname": True})
    resolved = with_shard_from_hostname(settings, hostname)
    assert resolved.shard.index == index
    assert resolved.shard.index_from_hostname is False
    assert resolved.shard.count == 12


def test_hostname_without_ordinal_or_past_the_count_is_refused() -> None:
    settings = load_settings(None, shard={"count": 3, "index_from_hostname": True})
    with pytest.raises(ConfigError, match="does not end in -<ordinal>"):
        with_shard_from_hostname(settings, "laptop")
    with pytest.raises(ConfigError, match=r"shard index 3 .* outside 0..2"):
        with_shard_from_hostname(settings, "whalecast-3")
    plain = load_settings(None, shard={"count": 3, "index": 1})
    assert with_shard_from_hostname(plain, "laptop") is plain


def test_run_refuses_a_host_name_without_an_ordinal(tmp_path: Path) -> None:
    hostname = socket.gethostname()
    if re.fullmatch(r".*-0", hostname):
        pytest.skip(f"this host is named like shard 0 ({hostname})")
    env = {**os.environ, "WHALECAST_SHARD__INDEX_FROM_HOSTNAME": "true",
           "WHALECAST_SHARD__COUNT": "1", "WHALECAST_REDIS__STATE_DIR": str(tmp_path)}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "whalecast", "run"], cwd=Path(__file__).resolve().parents[1],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"host name {hostname!r}" in result.stderr
