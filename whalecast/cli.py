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
