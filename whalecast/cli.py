"""The ``whalecast`` command line: the top floor, the only place that imports every part.

Heavy imports (TensorFlow, ccxt, pandas) happen inside each command's handler,
so ``whalecast --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from whalecast import __version__

Handler = Callable[[argparse.Namespace], int]


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"whalecast {__version__}")
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from whalecast.settings import load_settings

    settings = load_settings(args.config)
    print(json.dumps(settings.masked(), indent=2, sort_keys=False))
    print(f"configuration OK ({len(settings.exchanges)} exchange(s), "
          f"{sum(len(e.symbols) for e in settings.exchanges)} series)", file=sys.stderr)  # fmt: skip
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whalecast",
        description="Streaming LSTM inference for crypto markets: candles and whale "
        "transfers in, batched predictions out through Redis and Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"whalecast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--config", "-c", default=None, metavar="PATH",
            help="config file (default: $WHALECAST_CONFIG, else built-in defaults)",
        )  # fmt: skip
        command.set_defaults(handler=handler)
        return command

    add(
        "check-config", _cmd_check_config, "validate the configuration and print it, secrets masked"
    )
    add("version", _cmd_version, "print the version")
    _simulate_arguments(
        add(
            "simulate",
            _cmd_simulate,
            "run the exchange simulator: Binance spot REST/websocket and Whale Alert's "
            "websocket on 127.0.0.1, replaying history until Ctrl-C or SIGTERM",
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from whalecast.settings import ConfigError

    try:
        result: Any = args.handler(args)
    except ConfigError as e:
        print(f"whalecast: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
