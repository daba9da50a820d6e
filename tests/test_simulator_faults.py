"""Each fault control of the exchange simulator, and what a client observes of it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import ccxt
import pytest

from streamer.simulator import KLINE_FAULTS, Simulator, SimulatorConfig
from testkit.simulator import binance_client

HOUR = 3_600_000
BTC, ETH = "btcusdt@kline_1h", "ethusdt@kline_1h"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(
        SimulatorConfig(history_bars=100, whale=False, max_streams_per_connection=3)
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def subscribe(
    session: aiohttp.ClientSession, sim: Simulator, streams: list[str]
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(sim.ws_url + "/0", autoping=False)
    await ws.send_json({"method": "SUBSCRIBE", "params": streams, "id": 1})
    assert await ws.receive_json(timeout=5) == {"result": None, "id": 1}
    return ws


async def drain(ws: aiohttp.ClientWebSocketResponse, quiet: float = 0.2) -> list[aiohttp.WSMessage]:
    """Every frame that arrives until the connection is quiet for ``quiet`` seconds."""
    frames = []
    while True:
        try:
            frames.append(await ws.receive(timeout=quiet))
        except TimeoutError:
            return frames
        if frames[-1].type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return frames


def texts(frames: list[aiohttp.WSMessage]) -> list[str]:
    return [f.data for f in frames if f.type is aiohttp.WSMsgType.TEXT]


def parsed(frames: list[aiohttp.WSMessage]) -> list[dict[str, Any]]:
    out = []
    for text in texts(frames):
        try:
            out.append(json.loads(text))
        except ValueError:
            continue
    return out


# -- connections ------------------------------------------------------------------------


async def test_drop_closes_with_going_away(sim: Simulator, session: aiohttp.ClientSession) -> None:
    ws = await subscribe(session, sim, [BTC])
    assert await sim.faults.drop_connections() == 1
    frame = await ws.receive(timeout=5)
    assert frame.type is aiohttp.WSMsgType.CLOSE and frame.data == 1001
    assert sim.faults.counters["exchange_dropped"] == 1


async def test_refuse_answers_503_then_recovers(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.faults.refuse(0.3)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(sim.ws_url + "/0")
    assert refused.value.status == 503
    assert sim.faults.counters["exchange_refused"] == 1
    await asyncio.sleep(0.35)
    ws = await subscribe(session, sim, [BTC])
    await ws.close()


async def test_stall_sends_nothing_not_even_pongs(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    ws = await subscribe(session, sim, [BTC])
    sim.faults.stall(0.4)
    await ws.ping(b"are you there")
    await sim.advance()
    assert await drain(ws) == []
    assert not ws.closed  # connected, silent
    assert sim.faults.counters["stall_events_withheld"] == 3  # 2 forming + 1 closed
    assert sim.faults.counters["stall_pongs_withheld"] == 1
    await asyncio.sleep(0.3)
    await ws.ping(b"now?")
    assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.PONG
    await sim.advance()
    frames = await drain(ws)
    closed = [m["k"]["t"] for m in parsed(frames) if m["k"]["x"]]
    assert closed == [sim.now_ms - HOUR]  # the stalled bar is lost on the stream (REST has it)
    await ws.close()


# -- bad messages -----------------------------------------------------------------------

CHECKS: dict[str, Callable[[str, int], bool]] = {
    "malformed_json": lambda text, t: not _is_json(text),
    "wrong_type": lambda text, t: _is_json(text) and isinstance(json.loads(text)["k"]["t"], str),
    "nan": lambda text, t: _is_json(text) and json.loads(text)["k"]["c"] == "NaN",
    "negative": lambda text, t: _is_json(text) and float(json.loads(text)["k"]["c"]) < 0,
    "high_below_low": lambda text, t: (
        _is_json(text) and float(json.loads(text)["k"]["h"]) < float(json.loads(text)["k"]["l"])
    ),
    "off_grid": lambda text, t: _is_json(text) and json.loads(text)["k"]["t"] % HOUR != 0,
    "unknown_symbol": lambda text, t: _is_json(text) and json.loads(text)["s"] == "NOSUCHUSDT",
    "future": lambda text, t: _is_json(text) and json.loads(text)["k"]["t"] > t + 100 * HOUR,
    "out_of_order": lambda text, t: _is_json(text) and json.loads(text)["k"]["t"] == t - HOUR,
}


def _values(event: dict[str, Any]) -> tuple[Any, ...] | None:
    """``(open_ms, o, h, l, c, v)`` of a well-formed closed kline event, else None."""
    k = event["k"]
    if k["x"] is not True:
        return None
    return (k["t"], *(float(k[f]) for f in "ohlcv"))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("kind", sorted(KLINE_FAULTS))
async def test_inject_adds_one_bad_message_for_one_symbol_and_one_bar(
    sim: Simulator, session: aiohttp.ClientSession, kind: str
) -> None:
    ws = await subscribe(session, sim, [BTC, ETH])
    bar = sim.now_ms
    sim.faults.inject(kind, symbol="BTC/USDT")
    await sim.advance()
    frames = texts(await drain(ws))
    truth = {"BTCUSDT": sim.closed_bars("BTC/USDT")[-1], "ETHUSDT": sim.closed_bars("ETH/USDT")[-1]}
    real = [
        t for t in frames if _is_json(t) and _values(json.loads(t)) == truth.get(json.loads(t)["s"])
    ]
    real_btc = [t for t in real if json.loads(t)["s"] == "BTCUSDT"]
    assert len(real) == (3 if kind == "duplicate" else 2)  # the real closed bars still come
    assert len(real_btc) == (2 if kind == "duplicate" else 1)
    if kind != "duplicate":
        bad = [t for t in frames if CHECKS[kind](t, bar)]
        assert len(bad) == 1
        position = frames.index(bad[0])
        assert (position > frames.index(real_btc[0])) == (kind == "out_of_order")
    assert len(frames) == 2 * 2 + 2 + 1  # 2 forming per symbol, 2 real closed, 1 injected
    assert sim.faults.counters[f"injected:{kind}"] == 1
    await sim.advance()  # armed for one bar only
    assert len(texts(await drain(ws))) == 2 * 2 + 2
    await ws.close()


async def test_inject_rejects_unknown_kind(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="unknown kline fault"):
        sim.faults.inject("gibberish")


async def test_delay_close_sends_one_closed_event_late(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    ws = await subscribe(session, sim, [BTC, ETH])
    bar = sim.now_ms
    sim.faults.delay_close("BTC/USDT", 0.5)
    await sim.advance()
    on_time = [m for m in parsed(await drain(ws, quiet=0.1)) if m["k"]["x"]]
    assert [(m["s"], m["k"]["t"]) for m in on_time] == [("ETHUSDT", bar)]
    later = [m for m in parsed(await drain(ws, quiet=1.0)) if m["k"]["x"]]
    assert [(m["s"], m["k"]["t"]) for m in later] == [("BTCUSDT", bar)]
    assert sim.faults.counters["delayed_close"] == 1
    await sim.advance()  # armed for one bar only
    closed = [m["s"] for m in parsed(await drain(ws)) if m["k"]["x"]]
    assert sorted(closed) == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(ValueError, match="positive"):
        sim.faults.delay_close("BTC/USDT", 0)
    await ws.close()


# -- REST -------------------------------------------------------------------------------


async def test_rest_gap_omits_a_range_for_one_symbol(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    now = sim.now_ms
    sim.faults.rest_gap("BTC/USDT", now - 10 * HOUR, now - 5 * HOUR)
    params = {"interval": "1h", "startTime": str(now - 20 * HOUR), "limit": "1000"}
    async with session.get(sim.rest_url + "/klines", params={**params, "symbol": "BTCUSDT"}) as r:
        btc = [row[0] for row in await r.json()]
    async with session.get(sim.rest_url + "/klines", params={**params, "symbol": "ETHUSDT"}) as r:
        eth = [row[0] for row in await r.json()]
    assert eth == [now - k * HOUR for k in range(20, -1, -1)]
    assert btc == [t for t in eth if not now - 10 * HOUR <= t < now - 5 * HOUR]
    assert sim.faults.counters["rest_gap_bars_omitted"] == 5


async def test_rest_errors_then_recovery_through_ccxt(sim: Simulator) -> None:
    client = binance_client(sim)
    try:
        await client.load_markets()
        sim.faults.rest_errors(1, status=500)  # Binance's JSON error -1000
        with pytest.raises(ccxt.OperationFailed):
            await client.fetch_ohlcv("BTC/USDT", "1h", limit=5)
        sim.faults.rest_errors(1, status=503)  # a gateway page, no JSON
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await client.fetch_ohlcv("BTC/USDT", "1h", limit=5)
        sim.faults.rest_errors(2, status=429, retry_after=7)
        for _ in range(2):
            with pytest.raises(ccxt.DDoSProtection):
                await client.fetch_ohlcv("BTC/USDT", "1h", limit=5)
        assert len(await client.fetch_ohlcv("BTC/USDT", "1h", limit=5)) == 5
        assert sim.faults.counters["rest_errors:500"] == 1
        assert sim.faults.counters["rest_errors:503"] == 1
        assert sim.faults.counters["rest_errors:429"] == 2
    finally:
        await client.close()


async def test_rate_limited_response_has_retry_after(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.faults.rest_errors(1, status=429, retry_after=7)
    async with session.get(
        sim.rest_url + "/klines", params={"symbol": "BTCUSDT", "interval": "1h"}
    ) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "7"
        assert (await r.json())["code"] == -1003


async def test_rest_parameter_errors_are_binance_shaped(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    cases = {
        (("symbol", "NOPE"), ("interval", "1h")): -1121,
        (("symbol", "BTCUSDT"), ("interval", "5m")): -1120,
        (("symbol", "BTCUSDT"), ("interval", "1h"), ("limit", "1001")): -1130,
        (("symbol", "BTCUSDT"), ("interval", "1h"), ("startTime", "yesterday")): -1100,
    }
    for params, code in cases.items():
        async with session.get(sim.rest_url + "/klines", params=dict(params)) as r:
            assert r.status == 400
            assert (await r.json())["code"] == code


# -- stream limits ----------------------------------------------------------------------


async def test_too_many_streams_is_an_error_reply(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    ws = await subscribe(session, sim, [BTC, ETH])
    await ws.send_json(
        {"method": "SUBSCRIBE", "params": ["solusdt@kline_1h", "xrpusdt@kline_1h"], "id": 2}
    )
    reply = await ws.receive_json(timeout=5)
    assert reply["id"] == 2 and reply["error"]["code"] == 2
    assert sim.faults.counters["exchange_too_many_streams"] == 1
    await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 3})
    assert await ws.receive_json(timeout=5) == {"result": [BTC, ETH], "id": 3}
    await ws.send_json({"method": "UNSUBSCRIBE", "params": [ETH], "id": 4})
    assert await ws.receive_json(timeout=5) == {"result": None, "id": 4}
    await asyncio.sleep(1.0)  # stay within 5 messages per second
    await sim.advance()
    streams = {m["s"] for m in parsed(await drain(ws))}
    assert streams == {"BTCUSDT"}
    await ws.close()


async def test_message_rate_limit_closes_the_connection(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    ws = await subscribe(session, sim, [BTC])
    for n in range(6):
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 10 + n})
    frames = await drain(ws, quiet=1.0)
    assert frames[-1].type is aiohttp.WSMsgType.CLOSE and frames[-1].data == 1008
    assert len(texts(frames)) == 4  # subscribe + 4 answered within the 5/s budget
    assert sim.faults.counters["exchange_rate_limited"] == 1


# -- control over HTTP ------------------------------------------------------------------


async def test_control_endpoint_drives_faults(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    ws = await subscribe(session, sim, [BTC])
    async with session.post(
        sim.base_url + "/_sim/faults", json={"action": "drop_connections"}
    ) as r:
        assert r.status == 200
        assert (await r.json())["result"] == 1
    assert (await ws.receive(timeout=5)).data == 1001
    async with session.post(
        sim.base_url + "/_sim/faults", json={"action": "rest_errors", "count": 1}
    ) as r:
        assert r.status == 200
    async with session.get(sim.rest_url + "/ping") as r:
        assert r.status == 500
    async with session.post(
        sim.base_url + "/_sim/faults", json={"action": "inject", "kind": "bogus"}
    ) as r:
        assert r.status == 400
    async with session.post(sim.base_url + "/_sim/faults", json={"action": "stop"}) as r:
        assert r.status == 400
    async with session.get(sim.base_url + "/_sim/state") as r:
        state = await r.json()
    assert state["faults"]["counters"]["rest_errors:500"] == 1
    assert state["now_ms"] == sim.now_ms


async def test_server_pings_and_connection_lifetime(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(
        history_bars=10, whale=False, ws_ping_seconds=0.1, connection_lifetime_seconds=0.45
    )
    async with Simulator(config) as sim:
        ws = await subscribe(session, sim, [BTC])
        frames = await drain(ws, quiet=2.0)
    kinds = [f.type for f in frames]
    assert kinds.count(aiohttp.WSMsgType.PING) >= 2  # Binance pings; the client must pong
    assert kinds[-1] is aiohttp.WSMsgType.CLOSE and frames[-1].data == 1001
    assert sim.faults.counters["exchange_lifetime_closed"] == 1
