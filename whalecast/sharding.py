"""Which replica owns which series: rendezvous (highest-random-weight) hashing.

Every replica computes the same answer from the series tag and the shard
count alone, with no coordination: series ``s`` belongs to the shard ``i`` in
``0..count-1`` with the highest ``hash(s, i)``. Together the shards cover every
series exactly once, and when the count changes only the series that must move
do: going from 3 to 2 replicas moves exactly the series of shard 2; going from
2 to 3 moves about a third of the series, all of them to the new shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from whalecast.domain import Series


def _weight(tag: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{tag}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(series: Series, count: int) -> int:
    """The shard (0-based) that owns ``series`` among ``count`` shards."""
    if count < 1:
        raise ValueError("shard count must be at least 1")
    return max(range(count), key=lambda shard: _weight(series.tag, shard))


def owned(series: Iterable[Series], index: int, count: int) -> list[Series]:
    """The series shard ``index`` of ``count`` owns, in their given order."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1}")
    return [s for s in series if shard_of(s, count) == index]
