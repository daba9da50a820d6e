"""Fault controls: what the simulator does wrong on purpose, and counters of what it did.

Every fault is deterministic (armed for N seconds, N requests or N bars) and every
injected effect is counted in :attr:`Faults.counters` (``"<fault>"`` or
``"<fault>:<kind>"`` → how many times the client was exposed to it), so a test can
assert exactly what the client saw.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

#: Bad kline messages :meth:`Faults.inject` can add to the exchange feed.
KLINE_FAULTS = frozenset(
    {
        "malformed_json",  # a truncated JSON text
        "wrong_type",  # fields of the wrong JSON type (open time as text, price as object)
        "nan",  # prices "NaN"
        "negative",  # negative close and volume
        "high_below_low",  # high and low swapped
        "duplicate",  # the closed bar sent a second time
        "out_of_order",  # an older closed bar sent again after the new one
        "off_grid",  # a closed bar whose open time is off the timeframe grid
        "unknown_symbol",  # a closed bar for a market that does not exist
        "future",  # a closed bar that opens far in the future
    }
)

#: Bad messages :meth:`Faults.whale_inject` can add to the whale feed.
WHALE_FAULTS = frozenset(
    {
        "malformed_json",
        "wrong_type",
        "missing_field",
        "negative",
        "nan",
        "unknown_type",
    }
)

Dropper = Callable[[], Coroutine[Any, Any, int]]


@dataclass
class _Armed:
    """A kline fault waiting for closed bars: ``remaining`` bars of ``symbol`` (None: all)."""

    kind: str
    symbol: str | None
    remaining: int


@dataclass
class Faults:
    """Fault state shared by the simulator's servers; methods are safe to call from tests."""

    clock: Callable[[], float] = time.monotonic
    counters: Counter[str] = field(default_factory=Counter)
    refuse_until: float = 0.0
    hold_until: float = 0.0
    stall_until: float = 0.0
    whale_down_until: float = 0.0
    whale_flap_bars: int = 0
    _rest_errors: list[tuple[int, float, str | None]] = field(default_factory=list)
    _gaps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    _armed: list[_Armed] = field(default_factory=list)
    _withheld: dict[str, int] = field(default_factory=dict)
    _whale_armed: list[str] = field(default_factory=list)
    _close_delays: dict[str, list[float]] = field(default_factory=dict)
    _droppers: dict[str, Dropper] = field(default_factory=dict)
    _tasks: set[asyncio.Task[int]] = field(default_factory=set)

    # -- connections ------------------------------------------------------------------

    def register_dropper(self, feed: str, dropper: Dropper) -> None:
        self._droppers[feed] = dropper

    def _drop(self, feed: str) -> asyncio.Task[int]:
        """Runs the droppers of ``feed`` (and of ``feed:<name>``, one per protocol)."""
        droppers = [d for f, d in self._droppers.items() if f.split(":", 1)[0] == feed]

        async def drop_all() -> int:
            return sum(await asyncio.gather(*(dropper() for dropper in droppers)))

        task = asyncio.get_running_loop().create_task(drop_all())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def drop_connections(self) -> asyncio.Task[int]:
        """Close every exchange websocket with code 1001 (going away). Await for the count."""
        return self._drop("exchange")

    def refuse(self, seconds: float) -> None:
        """Answer new exchange websocket handshakes with HTTP 503 for ``seconds``."""
        self.refuse_until = self.clock() + seconds

    def refusing(self) -> bool:
        return self.clock() < self.refuse_until

    def hold(self, seconds: float) -> None:
        """Leave new exchange websocket handshakes unanswered for ``seconds`` (the client
        waits on an open connection), then refuse them (HTTP 503)."""
        self.hold_until = self.clock() + seconds

    def holding(self) -> float:
        """Seconds the handshakes are still held (0.0: not held)."""
        return max(0.0, self.hold_until - self.clock())

    def stall(self, seconds: float) -> None:
        """Keep exchange connections open but send nothing (no events, no pongs) for a while."""
        self.stall_until = self.clock() + seconds

    def stalled(self) -> bool:
        return self.clock() < self.stall_until

    # -- bad kline messages -----------------------------------------------------------

    def inject(self, kind: str, symbol: str | None = None, count: int = 1) -> None:
        """Add bad messages of ``kind`` around the next ``count`` closed bars of ``symbol``
        (every series when None). The real closed bar is still sent."""
        if kind not in KLINE_FAULTS:
            raise ValueError(f"unknown kline fault {kind!r}; known: {sorted(KLINE_FAULTS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        self._armed.append(_Armed(kind, symbol, count))

    def kinds_for(self, symbol: str) -> list[str]:
        """Kinds armed for ``symbol``'s next closed bar (the caller then calls :meth:`bar_done`)."""
        return [a.kind for a in self._armed if a.symbol in (None, symbol)]

    def bar_done(self) -> None:
        """A closed bar went out for every series: armed faults count one bar down."""
        for armed in self._armed:
            armed.remaining -= 1
        self._armed = [a for a in self._armed if a.remaining > 0]

    def delay_close(self, symbol: str, seconds: float, count: int = 1) -> None:
        """Send the real closed event of ``symbol``'s next ``count`` bars ``seconds`` (wall
        time) after the others: one stream of the exchange lags; REST has the bar at once."""
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        if count < 1:
            raise ValueError("count must be at least 1")
        self._close_delays.setdefault(symbol, []).extend([seconds] * count)

    def take_close_delay(self, symbol: str) -> float | None:
        """The delay for ``symbol``'s closing bar now, if one is armed (then it is used up)."""
        delays = self._close_delays.get(symbol)
        if not delays:
            return None
        self.counters["delayed_close"] += 1
        return delays.pop(0)

    def withhold(self, symbol: str, bars: int = 1) -> None:
        """Leave out ``symbol``'s closed event for its next ``bars`` closes (REST still has
        the bars): that series' close is only seen at the next bar or over REST, late."""
        if bars < 1:
            raise ValueError("bars must be at least 1")
        self._withheld[symbol] = self._withheld.get(symbol, 0) + bars

    def take_withheld(self, symbol: str) -> bool:
        """True (and one bar counted down) when ``symbol``'s closed event is to be left out."""
        left = self._withheld.get(symbol, 0)
        if left <= 0:
            return False
        self._withheld[symbol] = left - 1
        self.counters["closed_withheld"] += 1
        return True

    # -- REST -------------------------------------------------------------------------

    def rest_gap(self, symbol: str, start_ms: int, end_ms: int) -> None:
        """REST klines of ``symbol`` omit bars opening in [start_ms, end_ms)."""
        if end_ms <= start_ms:
            raise ValueError("end_ms must be after start_ms")
        self._gaps.setdefault(symbol, []).append((start_ms, end_ms))

    def in_gap(self, symbol: str, open_ms: int) -> bool:
        return any(start <= open_ms < end for start, end in self._gaps.get(symbol, ()))

    def clear_gaps(self) -> None:
        self._gaps.clear()

    def rest_errors(
        self, count: int, status: int = 500, retry_after: float = 1.0, endpoint: str | None = None
    ) -> None:
        """Fail the next ``count`` REST requests with ``status`` (429/418 carry Retry-After);
        with ``endpoint`` only requests to that endpoint (``"klines"``: each exchange's
        candle endpoint; else the path's last part). Each exchange answers in its own
        terms: Bybit's 429 is retCode 10006, its 418 an HTTP 403; OKX's is code 50011."""
        if status not in (418, 429, 500, 502, 503, 504):
            raise ValueError(f"unsupported REST failure status {status}")
        self._rest_errors.extend([(status, retry_after, endpoint)] * count)

    def clear_rest_errors(self) -> None:
        """Drop the REST failures not served yet: the exchange answers again."""
        self._rest_errors.clear()

    def take_rest_error(self, endpoint: str | None = None) -> tuple[int, float] | None:
        for index, (status, retry_after, only) in enumerate(self._rest_errors):
            if only is None or only == endpoint:
                del self._rest_errors[index]
                self.counters[f"rest_errors:{status}"] += 1
                return status, retry_after
        return None

    # -- whale feed -------------------------------------------------------------------

    def whale_down(self, seconds: float) -> asyncio.Task[int]:
        """Close every whale connection and refuse new ones for ``seconds``."""
        self.whale_down_until = self.clock() + seconds
        return self._drop("whale")

    def whale_refusing(self) -> bool:
        return self.clock() < self.whale_down_until

    def whale_flap(self, bars: int) -> None:
        """Drop every whale connection at the start of each of the next ``bars`` bars."""
        self.whale_flap_bars = bars

    def take_whale_flap(self) -> bool:
        if self.whale_flap_bars <= 0:
            return False
        self.whale_flap_bars -= 1
        return True

    def whale_inject(self, kind: str, count: int = 1) -> None:
        """Send ``count`` bad whale messages of ``kind`` at the next bar's alerts that has a
        subscribed client to receive them."""
        if kind not in WHALE_FAULTS:
            raise ValueError(f"unknown whale fault {kind!r}; known: {sorted(WHALE_FAULTS)}")
        self._whale_armed.extend([kind] * count)

    def take_whale_injections(self) -> list[str]:
        kinds, self._whale_armed = self._whale_armed, []
        return kinds

    def snapshot(self) -> dict[str, object]:
        """A JSON-safe view for the control endpoint."""
        return {
            "counters": dict(self.counters),
            "refusing": self.refusing(),
            "holding": self.holding() > 0,
            "stalled": self.stalled(),
            "whale_refusing": self.whale_refusing(),
            "armed": [vars(a) for a in self._armed],
            "close_delays": {k: list(v) for k, v in self._close_delays.items() if v},
            "withheld": {k: v for k, v in self._withheld.items() if v > 0},
            "rest_errors_pending": len(self._rest_errors),
            "whale_armed": list(self._whale_armed),
        }
