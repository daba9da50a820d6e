"""``whalecast simulate``: run the simulator as a process until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TextIO

from streamer.simulator.simulator import Simulator, SimulatorConfig
from whalecast.logs import get_logger

log = get_logger(__name__)


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        data=tuple(Path(p) for p in args.data or ()),
        synthetic=args.synthetic,
        synthetic_bars=args.synthetic_bars,
        seed=args.seed,
        timeframe=args.timeframe,
        bar_seconds=None if args.manual else args.bar_seconds,
        history_bars=args.history_bars,
        start_ms=args.start_ms,
        forming_updates=args.forming_updates,
        port=args.port,
        whale=args.whale,
        whale_data=tuple(Path(p) for p in args.whale_data or ()),
        whale_api_key=args.whale_api_key,
        whale_delay_seconds=args.whale_delay,
    )


def config_snippet(sim: Simulator) -> str:
    """A whalecast config fragment that points the daemon at this simulator."""
    lines = [
        "exchanges:",
        "  - id: binance",
        f"    symbols: [{', '.join(sim.symbols)}]",
        f"    timeframe: {sim.timeframe}",
        f"    rest_url: {sim.rest_url}",
        f"    ws_url: {sim.ws_url}",
        "    enable_rate_limit: false",
        "feed:",
        "  clock: replay",
    ]
    if sim.whale is not None:
        lines += ["whale:", "  enabled: true", f"  url: {sim.whale_url}"]
        lines += [f"# and the key: WHALECAST_WHALE__API_KEY={sim.whale.api_key}"]
    return "\n".join(lines)


def print_banner(sim: Simulator, out: TextIO) -> None:
    pace = (
        "stepped over POST /_sim/advance"
        if sim.config.bar_seconds is None
        else f"{sim.config.bar_seconds:g} s per {sim.timeframe} bar"
    )
    print(f"whalecast simulator on {sim.base_url} ({len(sim.symbols)} symbols, {pace})", file=out)
    print(f"REST (ccxt urls['api']['public']): {sim.rest_url}", file=out)
    print(f"websocket (ccxt urls['api']['ws']['spot']): {sim.ws_url}", file=out)
    if sim.whale is not None:
        print(f"whale websocket: {sim.whale_url}?api_key={sim.whale.api_key}", file=out)
    print(f"control: {sim.base_url}/_sim/state, POST /_sim/advance, POST /_sim/faults", file=out)
    print("config:", file=out)
    print(config_snippet(sim), file=out)
    out.flush()


async def serve(config: SimulatorConfig, out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = Simulator(config)
    await sim.start()
    try:
        print_banner(sim, out)
        await stop.wait()
        log.info("simulator_stopping", now_ms=sim.now_ms, bars_played=sim.bars_played)
    finally:
        await sim.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    asyncio.run(serve(config_from_args(args), sys.stdout))
    return 0
