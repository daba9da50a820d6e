"""``whalecast simulate``: the exchange simulator on 127.0.0.1."""

from __future__ import annotations

import argparse

from whalecast.cli.arguments import Add, exchanges_argument


def _cmd_simulate(args: argparse.Namespace) -> int:
    from streamer.simulator.cli import run
    from whalecast.logs import configure_logging
    from whalecast.settings import load_settings

    configure_logging(load_settings(args.config).log)
    return run(args)


def _simulate_arguments(command: argparse.ArgumentParser) -> None:
    data = command.add_argument_group("what to replay")
    data.add_argument(
        "--data",
        nargs="+",
        metavar="CSV",
        help="candle CSVs (timestamp_ms,open,high,low,close,volume; .gz or plain), "
        "symbol from the file name (binance_BTC-USDT_1h.csv.gz: BTC/USDT); "
        "default: the shipped 1h slice",
    )
    data.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="replay N synthetic random-walk symbols (S0001/USDT...) instead",
    )
    data.add_argument(
        "--synthetic-bars",
        type=int,
        default=2000,
        metavar="N",
        help="bars per synthetic series (default: %(default)s)",
    )
    data.add_argument(
        "--seed", type=int, default=7, help="synthetic data seed (default: %(default)s)"
    )
    data.add_argument("--timeframe", default="1h", help="bar length (default: %(default)s)")
    clock = command.add_argument_group("virtual clock")
    clock.add_argument(
        "--bar-seconds",
        type=float,
        default=1.0,
        metavar="S",
        help="wall seconds per bar (default: %(default)s)",
    )
    clock.add_argument(
        "--manual",
        action="store_true",
        help="do not run the clock; step it with POST /_sim/advance",
    )
    clock.add_argument(
        "--history-bars",
        type=int,
        default=200,
        metavar="N",
        help="bars already closed (served over REST) at the start (default: %(default)s)",
    )
    clock.add_argument(
        "--start-ms",
        type=int,
        metavar="MS",
        help="open time of the first forming bar (instead of --history-bars)",
    )
    clock.add_argument(
        "--forming-updates",
        type=int,
        default=2,
        metavar="N",
        help="forming (x=false) events per bar (default: %(default)s)",
    )
    exchanges_argument(data)
    server = command.add_argument_group("server")
    server.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port on 127.0.0.1, 0 for any free one (default: %(default)s)",
    )
    server.add_argument(
        "--whale",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the Whale Alert websocket (default: on)",
    )
    server.add_argument(
        "--whale-data",
        nargs="+",
        metavar="CSV",
        help="hourly exchange-flow CSVs for the whale alerts (default: the shipped ones)",
    )
    server.add_argument("--whale-api-key", default="simulator-key", metavar="KEY",
                        help="the API key whale clients must present (default: %(default)s)")  # fmt: skip
    server.add_argument("--whale-delay", type=float, default=0.0, metavar="SECONDS",
                        help="send each whale alert this long after its block time, as Whale "
                             "Alert does (default: %(default)s)")  # fmt: skip


def register(add: Add) -> None:
    _simulate_arguments(
        add(
            "simulate",
            _cmd_simulate,
            "run the exchange simulator: Binance, Bybit and OKX REST/websockets and Whale Alert's "
            "websocket on 127.0.0.1, replaying history until Ctrl-C or SIGTERM",
        )
    )
