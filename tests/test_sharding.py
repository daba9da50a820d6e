"""Rendezvous sharding: exact cover, balance, and minimal movement on resize."""

from __future__ import annotations

import pytest

from whalecast.domain import Series
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
