"""structlog set-up: JSON lines off a terminal, readable console output on one.

Per-bar and per-connection fields travel in contextvars
(``structlog.contextvars.bound_contextvars(series=..., bar_open_ms=...)``), so
every line logged inside that block carries them without passing them down.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from whalecast.settings import LogSettings

#: Field names whose values are never written, whatever logs them.
REDACTED_FIELDS = frozenset({"password", "api_key", "secret", "token", "apikey"})


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for name in REDACTED_FIELDS.intersection(event):
        event[name] = "**********"
    return event


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger once, at start-up."""
    out = stream if stream is not None else sys.stderr
    use_json = settings.format == "json" or (settings.format == "auto" and not out.isatty())
    level = logging.getLevelName(settings.level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any
    if use_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # third-party libraries log through the stdlib: keep them quiet and on the same stream
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
