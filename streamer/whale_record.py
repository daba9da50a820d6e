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
again); one file per daemon. At start-up the daemon reads the recording's tail back
(:func:`recent_entries`) for the bars it has not stored yet, so a restart mid-bar
loses none of the transfers that arrived before it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamer.whale_alert import WhaleReject, parse_alert
from streamer.whale_history import WhaleHistory
from whalecast.logs import get_logger
from whalecast.settings import ConfigError

log = get_logger(__name__)


class AlertRecorder:
    """Appends admitted alerts to a JSON-lines file (opened per line: rotation-safe)."""

    def __init__(self, path: Path) -> None:
        """Raises ConfigError naming ``whale.record_path`` when the file cannot be appended to."""
        self.path = Path(path)
        self.errors = 0
        writable = os.access(self.path if self.path.exists() else self.path.parent, os.W_OK)
        if not self.path.parent.is_dir() or self.path.is_dir() or not writable:
            raise ConfigError(
                f"whale.record_path: cannot append to {self.path} "
                "(the directory must exist and be writable)"
            )

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


TAIL_CHUNK_BYTES = 1 << 16


def _entry(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:  # a line cut short by a crash, or not ours
        return None
    if not isinstance(entry, dict) or not is_recorded(entry):
        return None
    known = entry["known_ms"]
    return entry if isinstance(known, int) and not isinstance(known, bool) else None


def _newer(lines: list[bytes], since_ms: int, out: list[dict[str, Any]]) -> bool:
    """Appends, newest first, the entries of ``lines`` known at or after ``since_ms``;
    False once an older one is met (the file is in knowledge-time order)."""
    for line in reversed(lines):
        entry = _entry(line)
        if entry is None:
            continue
        if entry["known_ms"] < since_ms:
            return False
        out.append(entry)
    return True


def recent_entries(path: Path, since_ms: int) -> list[dict[str, Any]]:
    """The recorded alerts known at or after ``since_ms``, oldest first, read from the end."""
    if not path.exists():
        return []
    newest_first: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        rest = b""
        while end > 0:
            start = max(0, end - TAIL_CHUNK_BYTES)
            handle.seek(start)
            lines = (handle.read(end - start) + rest).split(b"\n")
            rest, end = (lines.pop(0) if start > 0 else b""), start
            if not _newer(lines, since_ms, newest_first):
                break
    return newest_first[::-1]
