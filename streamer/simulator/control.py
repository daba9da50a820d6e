"""HTTP control endpoint, for tests and demos that run the simulator as a separate process.

``GET /_sim/state`` → clock, symbols and fault counters; ``POST /_sim/advance``
``{"bars": 3}`` → play bars now; ``POST /_sim/faults`` ``{"action": "stall",
"seconds": 5}`` → call the :class:`~streamer.simulator.faults.Faults` method of that
name with the other fields as keyword arguments.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from streamer.simulator.simulator import Simulator

ACTIONS = frozenset(
    {
        "drop_connections",
        "refuse",
        "hold",
        "stall",
        "inject",
        "delay_close",
        "withhold",
        "rest_gap",
        "clear_gaps",
        "rest_errors",
        "whale_down",
        "whale_flap",
        "whale_inject",
    }
)


def state(sim: Simulator) -> dict[str, Any]:
    return {
        "now_ms": sim.now_ms,
        "finished": sim.finished,
        "bars_played": sim.bars_played,
        "timeframe": sim.timeframe,
        "symbols": sim.symbols,
        "rest_url": sim.rest_url,
        "ws_url": sim.ws_url,
        "exchanges": {e: sim.exchange_section(e) for e in sim.exchanges},
        "whale_url": sim.whale_url if sim.whale is not None else None,
        "connections": {
            "exchange": sum(len(s.hub) for s in sim.streams.values()),
            "whale": len(sim.whale.hub) if sim.whale else 0,
        },
        "faults": sim.faults.snapshot(),
    }


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as e:
        raise web.HTTPBadRequest(text=f"body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


def control_routes(sim: Simulator) -> list[web.RouteDef]:
    async def get_state(request: web.Request) -> web.Response:
        return web.json_response(state(sim))

    async def advance(request: web.Request) -> web.Response:
        bars = (await _body(request)).get("bars", 1)
        if not isinstance(bars, int) or bars < 1:
            raise web.HTTPBadRequest(text="bars must be a positive integer")
        played = await sim.advance(bars)
        return web.json_response({"played": played, **state(sim)})

    async def faults(request: web.Request) -> web.Response:
        body = await _body(request)
        action = body.pop("action", None)
        if action not in ACTIONS:
            raise web.HTTPBadRequest(text=f"action must be one of {sorted(ACTIONS)}")
        try:
            result = getattr(sim.faults, action)(**body)
            if isinstance(result, asyncio.Task):
                result = await result
        except (TypeError, ValueError) as e:
            raise web.HTTPBadRequest(text=f"{action}: {e}") from e
        return web.json_response(
            {"action": action, "result": result, **state(sim)}, dumps=json.dumps
        )

    return [
        web.get("/_sim/state", get_state),
        web.post("/_sim/advance", advance),
        web.post("/_sim/faults", faults),
    ]
