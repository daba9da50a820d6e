"""``whalecast bench``: the benchmarks, loaded only when the command runs."""

from __future__ import annotations

import argparse
import sys

from whalecast.cli.arguments import Add, int_list, name_list


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks import bench_inference as bench
    from benchmarks.bench_e2e import E2EOptions
    from whalecast.logs import configure_logging
    from whalecast.settings import LogSettings, load_settings

    settings = load_settings(args.config)
    e2e = E2EOptions(
        series=args.e2e_series, bars=args.e2e_bars, window=settings.features.window,
        backend=args.e2e_backend or settings.inference.backend, horizons=args.e2e_horizons,
        sim_process=args.e2e_sim_process, forming_updates=args.e2e_forming_updates,
    )  # fmt: skip
    options = bench.BenchOptions(
        sizes=args.sizes, backends=args.backends, repeats=args.repeats,
        per_series_sample=args.per_series_sample, matmul_size=args.matmul_size,
        buckets=settings.inference.batch_buckets, window=settings.features.window, e2e=e2e,
    )  # fmt: skip
    try:
        sections = bench.chosen_sections(options, args.sections)
    except ValueError as e:
        print(f"whalecast bench: {e}", file=sys.stderr)
        return 2
    configure_logging(LogSettings(level="WARNING", format="console"))  # the daemon's, in e2e
    results = bench.run_bench(options, sections)
    print(bench.format_table(results))
    if args.out:
        bench.write_results(results, Path(args.out))
        print(f"results written to {args.out}", file=sys.stderr)
    return 0


def _add_bench_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--out", metavar="PATH", help="also write the results as JSON here")
    command.add_argument(
        "--sizes",
        type=int_list,
        default=[10, 100, 1000, 5000],
        help="batch sizes (series), comma-separated (default: 10,100,1000,5000)",
    )
    command.add_argument(
        "--backends",
        type=name_list,
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
    command.add_argument("--sections", type=name_list, default=None,
                         help="run only these sections, comma-separated (matmul, backends, incremental, per_series, loop_lag, summary, e2e)")  # fmt: skip
    command.add_argument("--e2e-series", type=int, default=1000,
                         help="end to end: synthetic series the simulator serves (default 1000)")  # fmt: skip
    command.add_argument("--e2e-bars", type=int, default=40,
                         help="end to end: bars measured after 3 warm-up bars (default 40)")  # fmt: skip
    command.add_argument("--e2e-backend", default=None,
                         help="end to end: inference backend (default: inference.backend of the config)")  # fmt: skip
    command.add_argument("--e2e-horizons", action="store_true",
                         help="end to end: also serve a volume model of six outputs (1, 6 and 24 bars at p50 and p90)")  # fmt: skip
    command.add_argument("--e2e-forming-updates", type=int, default=2, metavar="N",
                         help="end to end: forming updates the simulator sends per series right before each close (default 2; live, they come during the bar)")  # fmt: skip
    command.add_argument("--e2e-sim-process", action="store_true",
                         help="end to end: run the exchange simulator as a process of its own, not in the daemon's")  # fmt: skip


def register(add: Add) -> None:
    _add_bench_options(
        add(
            "bench",
            _cmd_bench,
            "measure the batched forward pass per backend, per-series model.predict, the matmul "
            "rate, the FLOP floor and the daemon's end-to-end bar latency on this machine",
        )
    )
