"""The ``whalecast`` command line: the top floor, the only place that imports every part.

Each command is a module of this package (its handler and its flags). Heavy imports
(TensorFlow, ccxt, pandas, Redis) happen inside each command's handler, so
``whalecast --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from whalecast import __version__
from whalecast.cli import bench, config, demo, serve, simulate, training, ui
from whalecast.cli.arguments import Handler
from whalecast.cli.training import PRESETS

__all__ = ["PRESETS", "build_parser", "main"]

#: what the ``train`` extra adds: the serving install (``pip install whalecast``) has none
TRAIN_EXTRA_MODULES = frozenset(
    {"tensorflow", "keras", "tf2onnx", "sklearn", "scipy", "matplotlib", "optuna", "tqdm"}
)


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

    for command in (config, serve, ui, demo, simulate, bench, training):  # the order of --help
        command.register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter (CPU feature notes) before logging is configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    from whalecast.settings import ConfigError

    try:
        result: Any = args.handler(args)
    except ConfigError as e:
        print(f"whalecast: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name not in TRAIN_EXTRA_MODULES:
            raise
        print(f"whalecast: {args.command} needs {e.name}, which the serving install leaves out: "
              "pip install 'whalecast[train]'", file=sys.stderr)  # fmt: skip
        return 2
    except Exception as e:
        redisconn = sys.modules.get("whalecast.redisconn")  # loaded by commands that use Redis
        if redisconn is None or not isinstance(e, redisconn.RedisUnavailable):
            raise
        print(f"whalecast: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
