"""The simulator's Whale Alert websocket, driven by a plain websockets client."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from streamer.simulator import WHALE_FAULTS, Simulator, SimulatorConfig
from testkit.simulator import DATA

HOUR = 3_600_000
KEY = "test-key"
SUBSCRIBE = {"type": "subscribe_alerts", "blockchains": ["bitcoin", "ethereum"],
             "symbols": ["btc", "eth"], "tx_types": ["transfer"], "min_value_usd": 0}  # fmt: skip


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(SimulatorConfig(history_bars=200, whale_api_key=KEY))
    await simulator.start()
    yield simulator
    await simulator.stop()


async def subscribed(
    sim: Simulator, request: dict[str, Any] = SUBSCRIBE
) -> tuple[ClientConnection, str]:
    ws = await connect(f"{sim.whale_url}?api_key={KEY}")
    await ws.send(json.dumps(request))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["type"] == "subscribed_alerts"
    assert {k: reply[k] for k in request if k != "type"} == {
        k: v for k, v in request.items() if k != "type"
    }
    return ws, reply["channel_id"]


async def received(ws: ClientConnection, quiet: float = 0.2) -> list[str]:
    out = []
    while True:
        try:
            out.append(str(await asyncio.wait_for(ws.recv(), quiet)))
        except TimeoutError:
            return out


def flow_rows(symbol: str, start_ms: int, end_ms: int) -> list[dict[str, str]]:
    with gzip.open(
        DATA / f"whalealert_{symbol}_exchange_flows_1h.csv.gz", "rt", newline=""
    ) as handle:
        return [r for r in csv.DictReader(handle) if start_ms <= int(r["timestamp_ms"]) < end_ms]


async def test_alerts_replay_the_hourly_flows(sim: Simulator) -> None:
    ws, channel = await subscribed(sim)
    start = sim.now_ms
    await sim.advance(bars=72)
    alerts = [json.loads(m) for m in await received(ws)]
    await ws.close()
    assert alerts and all(a["type"] == "alert" and a["channel_id"] == channel for a in alerts)
    for symbol in ("BTC", "ETH"):
        rows = flow_rows(symbol, start, start + 72 * HOUR)
        assert rows, "the window must contain flows for the test to mean something"
        for direction, owner_side in (("inflow", "outputs"), ("outflow", "inputs")):
            mine = [a for a in alerts if a["amounts"][0]["symbol"] == symbol and _is(a, owner_side)]
            expected = {int(r["timestamp_ms"]): float(r[f"exchange_{direction}_usd"]) for r in rows
                        if float(r[f"exchange_{direction}_usd"]) > 0}  # fmt: skip
            got = {a["timestamp"] * 1000 // HOUR * HOUR: a["amounts"][0]["value_usd"] for a in mine}
            assert got == expected, (symbol, direction)
            assert len(mine) == len(expected)  # one alert per hour and direction
    sample = alerts[0]
    sub = sample["transaction"]["sub_transactions"][0]
    assert {"timestamp", "blockchain", "transaction_type", "from", "to", "amounts", "text"} <= set(
        sample
    )
    assert sub["inputs"][0]["owner_type"] != sub["outputs"][0]["owner_type"]


def _is(alert: dict[str, Any], exchange_side: str) -> bool:
    """Whether the exchange sits on ``exchange_side`` (outputs: inflow, inputs: outflow)."""
    sub = alert["transaction"]["sub_transactions"][0]
    return bool(sub[exchange_side][0]["owner_type"] == "exchange")


async def test_alerts_are_sent_while_their_bar_is_forming(sim: Simulator) -> None:
    ws, _ = await subscribed(sim)
    for _ in range(48):
        bar = sim.now_ms
        await sim.advance()
        for alert in [json.loads(m) for m in await received(ws, quiet=0.02)]:
            assert bar <= alert["timestamp"] * 1000 < bar + HOUR
    await ws.close()


async def test_wrong_key_is_refused(sim: Simulator) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(f"{sim.whale_url}?api_key=wrong")
    assert refused.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus):
        await connect(sim.whale_url)
    assert sim.faults.counters["whale_unauthorized"] == 2


async def test_subscription_filter_is_respected(sim: Simulator) -> None:
    request = {**SUBSCRIBE, "symbols": ["eth"], "min_value_usd": 20_000_000}
    ws, _ = await subscribed(sim, request)
    everything, _ = await subscribed(sim)
    await sim.advance(bars=72)
    alerts = [json.loads(m) for m in await received(ws)]
    all_alerts = [json.loads(m) for m in await received(everything)]
    expected = [a for a in all_alerts
                if a["amounts"][0]["symbol"] == "ETH" and a["amounts"][0]["value_usd"] >= 20_000_000]  # fmt: skip
    assert expected and len(expected) < len(all_alerts)
    assert [a["transaction"]["hash"] for a in alerts] == [
        a["transaction"]["hash"] for a in expected
    ]
    await ws.close()
    await everything.close()


async def test_bad_subscription_gets_an_error(sim: Simulator) -> None:
    ws = await connect(f"{sim.whale_url}?api_key={KEY}")
    await ws.send(json.dumps({**SUBSCRIBE, "symbols": "btc"}))
    assert "error" in json.loads(await asyncio.wait_for(ws.recv(), 5))
    await ws.send("not json")
    assert "error" in json.loads(await asyncio.wait_for(ws.recv(), 5))
    await ws.close()


async def test_whale_down_drops_and_refuses_then_recovers(sim: Simulator) -> None:
    ws, _ = await subscribed(sim)
    assert await sim.faults.whale_down(0.3) == 1
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(f"{sim.whale_url}?api_key={KEY}")
    assert refused.value.response.status_code == 503
    await asyncio.sleep(0.35)
    ws, _ = await subscribed(sim)
    await ws.close()
    assert sim.faults.counters["whale_dropped"] == 1
    assert sim.faults.counters["whale_refused"] == 1


async def test_whale_flap_drops_at_each_of_the_next_bars(sim: Simulator) -> None:
    sim.faults.whale_flap(2)
    for _ in range(2):
        ws, _ = await subscribed(sim)
        await sim.advance()
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    ws, _ = await subscribed(sim)
    await sim.advance()
    await received(ws)
    assert ws.state.name == "OPEN"
    await ws.close()
    assert sim.faults.counters["whale_dropped"] == 2


@pytest.mark.parametrize("kind", sorted(WHALE_FAULTS))
async def test_whale_garbage_is_sent_once(sim: Simulator, kind: str) -> None:
    ws, _ = await subscribed(sim)
    sim.faults.whale_inject(kind)
    await sim.advance()
    messages = await received(ws)
    good = []
    bad = []
    for text in messages:
        try:
            message = json.loads(text)
        except ValueError:
            bad.append(text)
            continue
        is_good = (message.get("type") == "alert" and isinstance(message.get("amounts"), list)
                   and isinstance(message.get("timestamp"), int)
                   and all(a["value_usd"] > 0 for a in message["amounts"]))  # fmt: skip
        (good if is_good else bad).append(text)
    assert len(bad) == 1
    assert sim.faults.counters[f"whale_injected:{kind}"] == 1
    await sim.advance()
    assert all(json.loads(m)["type"] == "alert" for m in await received(ws))
    await ws.close()


@pytest.mark.parametrize("timeframe", ["15m", "4h"])
async def test_alerts_never_come_from_the_virtual_future(timeframe: str) -> None:
    config = SimulatorConfig(synthetic=2, synthetic_bars=400, timeframe=timeframe, history_bars=20,
                             whale_api_key=KEY)  # fmt: skip
    async with Simulator(config) as sim:
        ws, _ = await subscribed(sim, {**SUBSCRIBE, "blockchains": [], "symbols": ["usdt"]})
        start = sim.now_ms
        seen = []
        for _ in range(96 if timeframe == "15m" else 12):
            await sim.advance()
            for alert in [json.loads(m) for m in await received(ws, quiet=0.02)]:
                assert alert["timestamp"] * 1000 <= sim.now_ms
                seen.append(alert["timestamp"] * 1000 // HOUR * HOUR)
        await ws.close()
        hours = [f.hour_ms for f in sim.whale.flows_between(start, sim.now_ms)] if sim.whale else []
    assert seen and seen == hours  # each flow hour once, in order
