"""``whalecast demo``: shipped market data replayed through the live daemon."""

from __future__ import annotations

import argparse

from whalecast.cli.arguments import Add, exchanges_argument, port


def _cmd_demo(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from whalecast.demo import DemoOptions, run_demo

    options = DemoOptions(
        bars=args.bars, bar_seconds=args.bar_seconds, state_dir=Path(args.state_dir),
        metrics_port=args.metrics_port, ui_port=args.ui_port, config=args.config,
        exchanges=args.exchanges,
    )  # fmt: skip
    return asyncio.run(run_demo(options))


def register(add: Add) -> None:
    demo = add(
        "demo", _cmd_demo,
        "replay shipped market data through the live daemon on this machine (embedded Redis, "
        "exchange simulator, small models trained if none) and print predictions as they arrive",
    )  # fmt: skip
    demo.add_argument(
        "--bars",
        type=int,
        default=None,
        help="stop after this many bars (default: the whole replay)",
    )
    demo.add_argument("--bar-seconds", type=float, default=1.0, dest="bar_seconds",
                      help="wall seconds per replayed 1h bar (default 1)")  # fmt: skip
    demo.add_argument("--state-dir", default=".whalecast/demo", dest="state_dir",
                      help="embedded Redis data and model registry of the demo")  # fmt: skip
    demo.add_argument("--metrics-port", type=int, default=0, dest="metrics_port",
                      help="port for /metrics (default: any free port)")  # fmt: skip
    demo.add_argument("--ui-port", type=port, default=9110, dest="ui_port",
                      help="port of the web page on 127.0.0.1 (default 9110, else any free one; 0: any)")  # fmt: skip
    exchanges_argument(demo)
