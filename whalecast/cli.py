"""The ``whalecast`` command line: the top floor, the only place that imports every part.

Heavy imports (TensorFlow, ccxt, pandas) happen inside each command's handler,
so ``whalecast --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from whalecast import __version__

Handler = Callable[[argparse.Namespace], int]
#: what the ``train`` extra adds: the serving install (``pip install whalecast``) has none
TRAIN_EXTRA_MODULES = frozenset(
    {"tensorflow", "keras", "tf2onnx", "sklearn", "scipy", "matplotlib", "optuna", "tqdm"}
)


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


def _cmd_simulate(args: argparse.Namespace) -> int:
    from streamer.simulator.cli import run
    from whalecast.logs import configure_logging
    from whalecast.settings import load_settings

    configure_logging(load_settings(args.config).log)
    return run(args)


def _exchange_list(text: str) -> tuple[str, ...]:
    from streamer.simulator.simulator import EXCHANGES

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in EXCHANGES]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a comma-separated list of distinct names out of {', '.join(EXCHANGES)}"
        )
    return names


def _exchanges_argument(group: Any) -> None:
    group.add_argument(
        "--exchanges", type=_exchange_list, default=("binance",), metavar="LIST",
        help="exchange protocols to serve, each listing every series, e.g. binance,bybit,okx "
        "(default: binance)",
    )  # fmt: skip


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
    _exchanges_argument(data)
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


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _shard_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"--shards must be 1..64, got {count}")
    return count


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
                         help="run only these sections, comma-separated (matmul, backends, incremental, per_series, loop_lag, summary, e2e)")  # fmt: skip
    command.add_argument("--e2e-series", type=int, default=1000,
                         help="end to end: synthetic series the simulator serves (default 1000)")  # fmt: skip
    command.add_argument("--e2e-bars", type=int, default=40,
                         help="end to end: bars measured after 3 warm-up bars (default 40)")  # fmt: skip
    command.add_argument("--e2e-backend", default=None,
                         help="end to end: inference backend (default: inference.backend of the config)")  # fmt: skip
    command.add_argument("--e2e-horizons", action="store_true",
                         help="end to end: also serve a volume model of six outputs (1, 6 and 24 bars at p50 and p90)")  # fmt: skip


def _cmd_train(args: argparse.Namespace) -> int:
    from training.commands import train_command
    from whalecast.logs import configure_logging
    from whalecast.settings import load_settings

    settings = load_settings(args.config)
    configure_logging(settings.log)
    return train_command(settings, args)


def _cmd_tune(args: argparse.Namespace) -> int:
    from training.commands import tune_command
    from whalecast.logs import configure_logging
    from whalecast.settings import load_settings

    settings = load_settings(args.config)
    configure_logging(settings.log)
    return tune_command(settings, args)


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from pathlib import Path

    from training.onnx_export import add_graphs
    from whalecast.artifact import ArtifactError
    from whalecast.logs import configure_logging
    from whalecast.settings import load_settings

    configure_logging(load_settings(args.config).log)
    failed = 0
    for directory in args.artifacts:
        try:
            manifest = add_graphs(Path(directory))
        except ArtifactError as e:
            print(f"whalecast: {directory}: {e}", file=sys.stderr)
            failed += 1
            continue
        graphs = "full, prime, step" if manifest.step else f"full ({manifest.incremental_off})"
        print(f"{directory}: ONNX graphs written: {graphs}")
    return 1 if failed else 0


PRESETS = (
    "volume",
    "volume-wide",
    "direction",
    "direction-wide",
    "direction-deep",
    "direction-gru",
    "ensemble",
)


def _duration(text: str) -> float:
    from training.commands import parse_duration

    return parse_duration(text)


def _training_arguments(command: argparse.ArgumentParser) -> None:
    """Flags shared by train and tune: data, preset and the common hyper-parameters."""
    add = command.add_argument
    add("--preset", choices=PRESETS, help="model preset (default: training.preset)")
    add(
        "--candles",
        nargs="+",
        metavar="CSV",
        help="candle CSV files, one series each (default: training.candles_csv, else REST)",
    )
    add("--whale", nargs="+", metavar="CSV", help="hourly whale exchange-flow CSV files")
    add("--epochs", type=int, help="maximum epochs (early stopping may end sooner)")
    add("--batch-size", type=int, dest="batch_size")
    add("--learning-rate", type=float, dest="learning_rate")
    add("--window", type=int, help="input window in bars (the volume preset's look_back)")
    add("--test-days", type=float, dest="test_days", help="held-out test period in days")
    add(
        "--train-days",
        type=float,
        dest="train_days",
        help="fit on only the last N days before validation",
    )
    add("--seed", type=int)
    add(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any preset hyper-parameter, e.g. --set units=64 (repeatable)",
    )
    add("--params", metavar="JSON", help="hyper-parameters from a file (whalecast tune output)")
    add("--progress", action="store_true", help="progress bars and per-epoch Keras output")


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


def _cmd_ui(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from whalecast.logs import configure_logging
    from whalecast.settings import load_settings
    from whalecast.ui.runner import serve_ui

    settings = load_settings(args.config)
    if args.host is not None or args.port is not None:
        ui = settings.ui.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None})  # fmt: skip
        settings = settings.model_copy(update={"ui": ui})
    configure_logging(settings.log)

    async def main() -> int:  # no TensorFlow import here: the page starts in a second
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        return await serve_ui(settings, stop)

    return asyncio.run(main())


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
        "check-config",
        _cmd_check_config,
        "validate the configuration offline (keys and types, exchange ids, symbols and "
        "timeframes against ccxt, registry, metrics port) and print it, secrets masked",
    )
    add("version", _cmd_version, "print the version")
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
    ui = add(
        "ui", _cmd_ui,
        "serve the web page: every series' latest predictions, a chart per series, models and "
        "feeds, live; reads Redis only (ui.host:ui.port, loopback by default)",
    )  # fmt: skip
    ui.add_argument("--host", default=None, help="listen address (default: ui.host)")
    ui.add_argument("--port", type=_port, default=None, help="port, 0 for any free one (default: ui.port)")  # fmt: skip
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
    demo.add_argument("--ui-port", type=_port, default=9110, dest="ui_port",
                      help="port of the web page on 127.0.0.1 (default 9110, else any free one; 0: any)")  # fmt: skip
    _exchanges_argument(demo)
    _simulate_arguments(
        add(
            "simulate",
            _cmd_simulate,
            "run the exchange simulator: Binance, Bybit and OKX REST/websockets and Whale Alert's "
            "websocket on 127.0.0.1, replaying history until Ctrl-C or SIGTERM",
        )
    )
    _add_bench_options(
        add(
            "bench",
            _cmd_bench,
            "measure the batched forward pass per backend, per-series model.predict, the matmul "
            "rate, the FLOP floor and the daemon's end-to-end bar latency on this machine",
        )
    )

    train = add(
        "train", _cmd_train,
        "train a model preset on history, evaluate it against baselines on a held-out "
        "period, write a versioned artifact and promote it when it is better",
    )  # fmt: skip
    _training_arguments(train)
    train.add_argument("--registry", metavar="DIR", help="default: inference.registry")
    train.add_argument("--name", help="model name in the registry (default: the preset name)")
    train.add_argument("--job", type=int, metavar="INDEX",
                       help="train entry INDEX of training.jobs (default: training.job_index)")  # fmt: skip
    train.add_argument("--force", action="store_true", help="promote even if not better")
    train.add_argument(
        "--without",
        action="append",
        metavar="GROUP",
        choices=("whale", "calendar", "memory", "activity", "regime"),
        help="leave an input group out of the preset's features (ablation; "
        "repeatable): whale, calendar, memory, activity, regime",
    )
    train.add_argument("--no-promote", action="store_true", dest="no_promote",
                       help="write the artifact but leave CURRENT alone")  # fmt: skip
    train.add_argument("--every", type=_duration, metavar="DURATION",
                       help="keep running and retrain this often, e.g. 6h (SIGTERM stops)")  # fmt: skip
    train.add_argument("--quick", action="store_true",
                       help="train small direction and volume models on the shipped data slice")  # fmt: skip
    train.add_argument("--list-presets", action="store_true", dest="list_presets",
                       help="print every preset's hyper-parameters and exit")  # fmt: skip
    train.add_argument("--walk-forward", type=int, metavar="FOLDS", dest="walk_forward",
                       help="rolling-origin evaluation instead: refit and score on FOLDS "
                            "consecutive test windows; writes a report, promotes nothing")  # fmt: skip
    train.add_argument("--fold-days", type=float, metavar="DAYS", dest="fold_days",
                       help="length of each walk-forward test window (default: test_days / FOLDS)")  # fmt: skip
    train.add_argument("--output", metavar="JSON",
                       help="where --walk-forward writes its report (default: walk-forward-<model>.json)")  # fmt: skip
    tune = add(
        "tune", _cmd_tune,
        "search a preset's main hyper-parameters with Optuna on the validation split "
        "and write the best ones as JSON",
    )  # fmt: skip
    export = add(
        "export-onnx", _cmd_export_onnx,
        "add the ONNX graphs the onnx backend serves (full window, prime and step) to model "
        "versions trained before the trainer wrote them",
    )  # fmt: skip
    export.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                        help="a version directory, <registry>/<model>/<version>")  # fmt: skip
    _training_arguments(tune)
    tune.add_argument("--trials", type=int, help="number of trials (default: training.tune_trials)")
    tune.add_argument("--output", metavar="JSON", help="default: tuned-<preset>.json")
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
