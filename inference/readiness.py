"""What ``/readyz`` answers: ready only when every check holds, and what is missing since when.

Three checks, fed with facts the daemon already has (no I/O here; time is an
argument):

- ``windows``: every owned series has a complete window, or is known unable to
  have one. A series is known unable when its bars are in up to the newest
  closed bar and its window is still incomplete (the exchange has less history
  than the window needs, or holes in it); it stays so until its window
  completes, and is counted and named.
- ``models``: every configured model has a version in service.
- ``feeds``: every feed is connected; a feed that is not says since when, how
  many attempts failed, what was last tried and the last error.

The body is JSON; ``missing`` and ``checks`` keep the shape probes and scripts
already read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamer.link import FeedFacts, iso
from whalecast.domain import Series

#: Series named in the body per list (the counts are always complete).
NAMED_SERIES = 20


@dataclass(frozen=True)
class ModelFacts:
    configured: tuple[str, ...]
    serving: Mapping[str, str]  # model -> version in service
    registry: str


@dataclass(frozen=True)
class Report:
    ready: bool
    body: dict[str, Any]


class ReadinessTracker:
    """Evaluates readiness from facts; remembers since when each check and series is missing."""

    def __init__(self, series: Sequence[Series], started_s: float) -> None:
        self.series = tuple(series)
        self._missing_since: dict[str, float] = {}
        self._unable_since: dict[int, float] = {}
        self._started_s = started_s
        self._evaluated = False

    def evaluate(
        self,
        now_s: float,
        complete: Sequence[bool],
        caught_up: Sequence[bool],
        models: ModelFacts,
        feeds: Sequence[FeedFacts],
    ) -> Report:
        """``complete``/``caught_up``: per owned series, in order (see the module docstring)."""
        windows_ok, windows = self._windows(now_s, complete, caught_up)
        missing_models = [m for m in models.configured if m not in models.serving]
        checks = {
            "feeds": all(f.connected for f in feeds),
            "models": not missing_models,
            "windows": windows_ok,
        }
        since = self._since(now_s, checks)
        body: dict[str, Any] = {
            "ready": all(checks.values()),
            "missing": sorted(name for name, ok in checks.items() if not ok),
            "checks": checks,
            "since": {name: iso(at) for name, at in sorted(since.items())},
            "windows": windows,
            "models": {
                "configured": list(models.configured),
                "serving": dict(models.serving),
                "missing": missing_models,
                "registry": models.registry,
            },
            "feeds": [_feed(f, now_s) for f in feeds],
        }
        return Report(body["ready"], body)

    def _since(self, now_s: float, checks: Mapping[str, bool]) -> dict[str, float]:
        """When each missing check went missing (the start, for those missing from it)."""
        at = now_s if self._evaluated else self._started_s
        self._evaluated = True
        for name, ok in checks.items():
            if ok:
                self._missing_since.pop(name, None)
            else:
                self._missing_since.setdefault(name, at)
        return dict(self._missing_since)

    def _windows(
        self, now_s: float, complete: Sequence[bool], caught_up: Sequence[bool]
    ) -> tuple[bool, dict[str, Any]]:
        waiting: list[str] = []
        for position, (done, in_) in enumerate(zip(complete, caught_up, strict=True)):
            if done:
                self._unable_since.pop(position, None)
            elif in_:
                self._unable_since.setdefault(position, now_s)
            elif position not in self._unable_since:
                waiting.append(self.series[position].tag)
        unable = sorted(self._unable_since)
        return not waiting, {
            "series": len(self.series),
            "complete": sum(bool(c) for c in complete),
            "waiting": len(waiting),
            "waiting_series": waiting[:NAMED_SERIES],
            "unable": len(unable),
            "unable_series": [
                {
                    "series": self.series[p].tag,
                    "since": iso(self._unable_since[p]),
                    "reason": "every bar the exchange has is in, fewer than the window needs",
                }
                for p in unable[:NAMED_SERIES]
            ],
        }


def _feed(facts: FeedFacts, now_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"feed": facts.feed, "connected": facts.connected,
                           "since": iso(facts.since_s)}  # fmt: skip
    if not facts.connected:
        out.update(
            down_seconds=round(now_s - facts.since_s, 1), attempts=facts.attempts,
            last_tried=facts.last_tried, last_error=facts.last_error,
        )  # fmt: skip
    return out
