"""``whalecast run``: the daemon, or one daemon per shard on this machine."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from whalecast.cli.arguments import Add


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import socket

    from whalecast.logs import configure_logging
    from whalecast.metrics import Metrics
    from whalecast.settings import load_settings, with_shard_from_hostname

    settings = load_settings(args.config)
    if args.shards is not None:
        return _run_shards(args, settings)
    settings = with_shard_from_hostname(settings, socket.gethostname())
    configure_logging(settings.log)
    from inference.lifecycle import run_forever

    return asyncio.run(run_forever(settings, Metrics()))


def _run_shards(args: argparse.Namespace, settings: Any) -> int:
    from whalecast.logs import configure_logging
    from whalecast.supervisor import STOP_MARGIN_SECONDS, run_shards

    configure_logging(settings.log)
    if settings.shard.count > 1 or settings.shard.index_from_hostname:
        print("whalecast: --shards runs every shard on this machine; it cannot be combined "
              "with shard.count > 1 or shard.index_from_hostname (one process per replica)",
              file=sys.stderr)  # fmt: skip
        return 2
    stop_seconds = settings.inference.shutdown_grace_seconds + STOP_MARGIN_SECONDS
    return run_shards(args.config, args.shards, settings.metrics.port, stop_seconds)


def _shard_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"--shards must be 1..64, got {count}")
    return count


def register(add: Add) -> None:
    run = add(
        "run", _cmd_run,
        "run the daemon: feeds in, one batched forward pass per model at every bar close, "
        "predictions out to Redis, metrics on /metrics (SIGTERM drains and exits 0)",
    )  # fmt: skip
    run.add_argument(
        "--shards", type=_shard_count, default=None,
        help="run N daemon processes on this machine, one shard each (one per core); shard i "
             "serves /metrics on metrics.port + i; SIGTERM drains them all",
    )  # fmt: skip
