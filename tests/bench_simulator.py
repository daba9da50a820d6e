"""How many kline events per second the simulator pushes (a benchmark, not a test).

    python -m tests.bench_simulator --symbols 1000 --bars 20 --connections 1

Starts a simulator with N synthetic symbols, a consumer process that subscribes
every stream (``--connections`` websocket connections, streams split evenly) and
counts frames, then times ``advance(bars)`` until the consumer has every event: each
bar is ``forming_updates + 1`` events per symbol. Reports events/s (wall, delivered)
and the simulator's CPU µs per event (its process time while sending).
The consumer only counts frames, so the number is the simulator's, not a client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from streamer.simulator import Simulator, SimulatorConfig

ROOT = Path(__file__).resolve().parents[1]


async def consume(url: str, streams: list[str], connections: int, expected: int) -> None:
    """Consumer process: subscribe, say ready, count kline frames until ``expected``."""
    async with aiohttp.ClientSession() as session:
        sockets = []
        for k in range(connections):
            ws = await session.ws_connect(f"{url}/{k}", max_msg_size=0)
            part = streams[k::connections]
            for start in range(0, len(part), 200):  # stay under 5 subscribe messages per second
                await ws.send_str(
                    json.dumps(
                        {"method": "SUBSCRIBE", "params": part[start : start + 200], "id": start}
                    )
                )
                await ws.receive()
                await asyncio.sleep(0.25)
            sockets.append(ws)
        print("ready", flush=True)
        counts = [0] * connections

        async def count(k: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            async for _ in ws:
                counts[k] += 1
                if sum(counts) >= expected:
                    return

        tasks = [asyncio.create_task(count(k, ws)) for k, ws in enumerate(sockets)]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        print(sum(counts), flush=True)
        for task in tasks:
            task.cancel()


async def bench(
    symbols: int, bars: int, connections: int, forming_updates: int
) -> dict[str, float]:
    config = SimulatorConfig(synthetic=symbols, synthetic_bars=bars + 20, history_bars=10,
                             forming_updates=forming_updates, whale=False)  # fmt: skip
    async with Simulator(config) as sim:
        streams = [sim.stream.stream_name(b) for b in sim.market.series.values()]
        expected = symbols * bars * (forming_updates + 1)
        consumer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.bench_simulator", "--consume", sim.ws_url,
            "--streams", ",".join(streams), "--connections", str(connections),
            "--expected", str(expected), cwd=ROOT, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert consumer.stdout is not None
        assert (await consumer.stdout.readline()).strip() == b"ready"
        cpu, wall = time.process_time(), time.perf_counter()
        await sim.advance(bars)
        sent_wall = time.perf_counter() - wall
        sent_cpu = time.process_time() - cpu
        received = int((await consumer.stdout.readline()).strip() or 0)
        delivered_wall = time.perf_counter() - wall
        await consumer.wait()
    return {"symbols": symbols, "bars": bars, "connections": connections, "events": expected,
            "received": received, "sent_seconds": round(sent_wall, 3),
            "delivered_seconds": round(delivered_wall, 3),
            "events_per_second": round(expected / delivered_wall),
            "cpu_us_per_event": round(sent_cpu / expected * 1e6, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=20)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--forming-updates", type=int, default=2)
    parser.add_argument("--consume", metavar="WS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--streams", help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        asyncio.run(consume(args.consume, args.streams.split(","), args.connections, args.expected))
        return
    result = asyncio.run(bench(args.symbols, args.bars, args.connections, args.forming_updates))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
