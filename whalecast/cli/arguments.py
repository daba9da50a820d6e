"""What the commands share: how a command is added, and the argument types they parse."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]
#: Adds one command (name, handler, help) with the ``--config`` every command takes.
Add = Callable[[str, Handler, str], argparse.ArgumentParser]


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 10,100,1000")
    return values


def port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def exchange_list(text: str) -> tuple[str, ...]:
    from streamer.simulator.simulator import EXCHANGES

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in EXCHANGES]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a comma-separated list of distinct names out of {', '.join(EXCHANGES)}"
        )
    return names


def exchanges_argument(group: Any) -> None:
    group.add_argument(
        "--exchanges", type=exchange_list, default=("binance",), metavar="LIST",
        help="exchange protocols to serve, each listing every series, e.g. binance,bybit,okx "
        "(default: binance)",
    )  # fmt: skip
