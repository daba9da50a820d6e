"""A recording of the live whale feed: what the daemon admitted, and when it knew it.

With ``whale.record_path`` set, the daemon appends one JSON line per admitted alert
(after de-duplication and the rule of :mod:`streamer.whale_rule`)::

    {"known_ms": 1730730661250, "alert": {"type": "alert", "timestamp": 1730730600,
     "blockchain": "bitcoin", "amounts": [{"symbol": "BTC", "amount": 784.0,
     "value_usd": 53625145.0}], "transaction": {...}, ...}}

``known_ms`` is the alert's knowledge time, which decides its bar. Replayed by the
trainer (``whalecast train --whale FILE.jsonl``), a recording gives the whale columns
the daemon stored for the same bars: the point-in-time history of the feed as it was
really received, delays included. A recording is replayed as it is (no filter runs
again); one file per daemon.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamer.whale import WhaleReject, parse_alert
from streamer.whale_history import WhaleHistory
from whalecast.logs import get_logger

log = get_logger(__name__)


class AlertRecorder:
    """Appends admitted alerts to a JSON-lines file (opened per line: rotation-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.errors = 0

    def write(self, known_ms: int, alert: Mapping[str, Any]) -> None:
        line = json.dumps({"known_ms": known_ms, "alert": alert}, separators=(",", ":"))
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as e:  # a full disk must not stop the feed: logged, the alert still counts
            self.errors += 1
            if self.errors in (1, 10) or self.errors % 1000 == 0:
                log.warning("whale recording failed", path=str(self.path), error=repr(e),
                            errors=self.errors)  # fmt: skip


def is_recorded(entry: Mapping[str, Any]) -> bool:
    """Whether one JSON line is a recorded alert (not a REST transactions page)."""
    return "known_ms" in entry and "alert" in entry


def recorded_transfers(entries: Iterable[Mapping[str, Any]]) -> WhaleHistory:
    """The transfers of recorded alerts with their knowledge times; bad lines counted."""
    history = WhaleHistory()
    for entry in entries:
        known_ms, alert = entry.get("known_ms"), entry.get("alert")
        try:
            if isinstance(known_ms, bool) or not isinstance(known_ms, int):
                raise WhaleReject("malformed", "known_ms")
            if not isinstance(alert, dict):
                raise WhaleReject("malformed", "alert")
            history.transfers += [replace(t, known_ms=known_ms) for t in parse_alert(alert)]
        except WhaleReject as e:
            history.rejected[e.reason] += 1
    history.transfers.sort(key=lambda t: t.known_ms or 0)
    return history
