"""Binance's wire formats for candles: REST kline rows and websocket kline events.

A real kline event (spot, ``<symbol>@kline_<interval>`` stream)::

    {"e":"kline","E":1579482921215,"s":"ETHBTC","k":{"t":1579482900000,"T":1579482959999,
     "s":"ETHBTC","i":"1m","f":158411535,"L":158411550,"o":"0.01913200","c":"0.01913500",
     "h":"0.01913700","l":"0.01913200","v":"5.08400000","n":16,"x":false,"q":"0.09728060",
     "V":"3.30200000","Q":"0.06318500","B":"0"}}

A REST kline row: ``[open_ms,"o","h","l","c","v",close_ms,"quote_vol",trades,
"taker_base","taker_quote","0"]``. Prices travel as strings with 8 decimals.
"""

from __future__ import annotations

import json
from typing import Any

from streamer.simulator.market import Candle, Ohlcv


def fmt(x: float) -> str:
    """Binance's 8-decimal string, unless that would change the value (then the exact repr)."""
    text = f"{x:.8f}"
    return text if float(text) == x else repr(x)


def _plain(x: float) -> str:
    return f"{x:.8f}"


def _derived(ohlcv: Ohlcv) -> tuple[str, str, str]:
    """Quote volume, taker base and taker quote volume: plausible, not part of the truth."""
    o, h, l, c, v = ohlcv  # noqa: E741
    quote = v * (o + h + l + c) / 4
    return f"{quote:.8f}", f"{v / 2:.8f}", f"{quote / 2:.8f}"


def rest_row(candle: Candle, bar_ms: int) -> list[Any]:
    o, h, l, c, v = candle.ohlcv  # noqa: E741
    q, taker_base, taker_quote = _derived(candle.ohlcv)
    close_ms = candle.open_ms + bar_ms - 1
    return [candle.open_ms, fmt(o), fmt(h), fmt(l), fmt(c), fmt(v), close_ms, q, candle.trades,
            taker_base, taker_quote, "0"]  # fmt: skip


def _trade_ids(candle: Candle) -> tuple[int, int]:
    first = candle.index * 2000
    return first, first + max(candle.trades, 1) - 1


def kline_fields(candle: Candle, wire: str, interval: str, bar_ms: int) -> dict[str, Any]:
    """The ``k`` object of a kline event, as a dict (fault injection edits it)."""
    return json.loads(kline_text(candle, wire, interval, bar_ms, 0))["k"]  # type: ignore[no-any-return]


def kline_event(k: dict[str, Any], event_ms: int) -> str:
    """One websocket message from a ``k`` object (the symbol is taken from it)."""
    return json.dumps({"e": "kline", "E": event_ms, "s": k["s"], "k": k}, separators=(",", ":"))


def kline_text(candle: Candle, wire: str, interval: str, bar_ms: int, event_ms: int) -> str:
    """One websocket kline event, built directly as text (the hot path: thousands per bar).

    Closed bars carry exact values (:func:`fmt`); a forming bar's values are already
    rounded to 8 decimals, so plain formatting is exact for them and cheaper.
    """
    text = fmt if candle.closed else _plain
    o = fmt(candle.ohlcv[0])  # the open is the real one even while forming
    h, l, c, v = (text(x) for x in candle.ohlcv[1:])  # noqa: E741
    q, taker_base, taker_quote = _derived(candle.ohlcv)
    first, last = _trade_ids(candle)
    t = candle.open_ms
    return (
        f'{{"e":"kline","E":{event_ms},"s":"{wire}","k":{{"t":{t},"T":{t + bar_ms - 1},'
        f'"s":"{wire}","i":"{interval}","f":{first},"L":{last},"o":"{o}","c":"{c}",'
        f'"h":"{h}","l":"{l}","v":"{v}","n":{candle.trades},'
        f'"x":{"true" if candle.closed else "false"},"q":"{q}","V":"{taker_base}",'
        f'"Q":"{taker_quote}","B":"0"}}}}'
    )
