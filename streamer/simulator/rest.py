"""What the simulator's REST endpoints share: injected failures before any handler runs,
and each exchange's own error shape for a bad parameter."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from streamer.simulator.data import Bars
from streamer.simulator.faults import Faults
from streamer.simulator.market import Market

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Failure = Callable[[int, float], web.Response]


class BadRequest(Exception):
    """A request the exchange refuses; ``code`` and ``msg`` in the exchange's own terms."""

    def __init__(self, code: int | str, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


def fault_middleware(
    prefix: str,
    faults: Faults,
    failure: Failure,
    bad_request: Callable[[BadRequest], web.Response],
    endpoints: dict[str, str] | None = None,
) -> Any:
    """Counts the requests under ``prefix``, answers armed REST failures with ``failure``
    (``endpoints`` renames a path's last part for :meth:`Faults.rest_errors`), and turns
    :class:`BadRequest` into the exchange's error body."""
    names = endpoints or {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix):
            return await handler(request)
        faults.counters["rest_requests"] += 1
        last = request.path.rsplit("/", 1)[-1]
        armed = faults.take_rest_error(names.get(last, last))
        if armed is not None:
            return failure(*armed)
        try:
            return await handler(request)
        except BadRequest as e:
            return bad_request(e)

    return middleware


def int_param(
    query: Any, name: str, default: int | None, error: Callable[[str], BadRequest]
) -> int | None:
    """An integer query parameter, ``default`` when absent, ``error(name)`` when not one."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise error(name) from e


def served(
    market: Market, faults: Faults, bars: Bars, start: int | None, end: int | None
) -> list[int]:
    """Indices of the bars visible now with open time in [start, end], minus injected gaps
    (each omitted bar counted)."""
    visible = market.visible_range(bars, start, end)
    indices = [i for i in visible if not faults.in_gap(bars.symbol, int(bars.open_ms[i]))]
    faults.counters["rest_gap_bars_omitted"] += len(visible) - len(indices)
    return indices


class ClockLog:
    """Per client connection (peer address): the wall time of its last time request and
    the virtual time it was told; tests wait on it for every polling clock to catch up."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.time_told: dict[str, tuple[float, int]] = {}

    def told(self, request: web.Request) -> int:
        """The virtual now, recorded as told to the request's peer."""
        now_ms = self.market.now_ms
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.time_told[str(peer)] = (time.monotonic(), now_ms)
        return now_ms

    def behind(self, recent_seconds: float = 1.0) -> int:
        """Client connections that asked the time in the last ``recent_seconds`` and were
        last told a time older than now (a replay clock that has not seen the last step)."""
        since = time.monotonic() - recent_seconds
        now_ms = self.market.now_ms
        return sum(1 for wall, told in self.time_told.values() if wall >= since and told < now_ms)
