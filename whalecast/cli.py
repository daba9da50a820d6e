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


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from inference.bench import BenchOptions, format_table, run_bench, write_results
    from whalecast.settings import load_settings

    settings = load_settings(args.config)
    options = BenchOptions(
        sizes=args.sizes, backends=args.backends, repeats=args.repeats,
        per_series_sample=args.per_series_sample, matmul_size=args.matmul_size,
        buckets=settings.inference.batch_buckets, window=settings.features.window,
    )  # fmt: skip
    try:
        results = run_bench(options, sections=args.sections)
    except ValueError as e:
        print(f"whalecast bench: {e}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.out:
        write_results(results, Path(args.out))
        print(f"results written to {args.out}", file=sys.stderr)
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 10,100,1000")
    return values


def _name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_bench_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--out", metavar="PATH", help="also write the results as JSON here")
    command.add_argument(
        "--sizes",
        type=_int_list,
        default=[10, 100, 1000, 5000],
        help="batch sizes (series), comma-separated (default: 10,100,1000,5000)",
    )
    command.add_argument(
        "--backends",
        type=_name_list,
        default=["keras", "tf-function", "tf-xla", "onnx"],
        help="backends to time, comma-separated (default: all four)",
    )
    command.add_argument(
        "--repeats", type=int, default=7, help="timed calls per batch size (median; default 7)"
    )
    command.add_argument(
        "--per-series-sample",
        type=int,
        default=20,
        help="model.predict calls timed for the per-series estimate (default 20)",
    )
    command.add_argument(
        "--matmul-size", type=int, default=2048, help="square matmul size (default 2048)"
    )
    command.add_argument("--sections", type=_name_list, default=None,
                         help="run only these sections, comma-separated (matmul, backends, per_series, summary)")  # fmt: skip


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
    _add_bench_options(
        add(
            "bench",
            _cmd_bench,
            "measure the batched forward pass per backend, per-series model.predict, the matmul "
            "rate and the FLOP floor on this machine",
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
