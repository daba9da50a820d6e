"""``whalecast check-config`` and ``whalecast version``."""

from __future__ import annotations

import argparse
import json
import sys

from whalecast import __version__
from whalecast.cli.arguments import Add


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"whalecast {__version__}")
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from streamer.capabilities import capabilities
    from whalecast.preflight import preflight
    from whalecast.settings import load_settings

    settings = load_settings(args.config)
    checked = preflight(settings, lambda exchange_id: capabilities(exchange_id).timeframes)
    for note in checked.notes:
        print(f"note:{note.line()}", file=sys.stderr)
    if checked.problems:
        print(f"whalecast: invalid configuration ({len(checked.problems)} problem(s)):",
              *(p.line() for p in checked.problems), sep="\n", file=sys.stderr)  # fmt: skip
        return 2
    print(json.dumps(settings.masked(), indent=2, sort_keys=False))
    print(f"configuration OK ({len(settings.exchanges)} exchange(s), "
          f"{sum(len(e.symbols) for e in settings.exchanges)} series)", file=sys.stderr)  # fmt: skip
    return 0


def register(add: Add) -> None:
    add(
        "check-config",
        _cmd_check_config,
        "validate the configuration offline (keys and types, exchange ids, symbols and "
        "timeframes against ccxt, registry, metrics port) and print it, secrets masked",
    )
    add("version", _cmd_version, "print the version")
