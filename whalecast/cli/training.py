"""``whalecast train``, ``tune`` and ``export-onnx``: the trainer's commands."""

from __future__ import annotations

import argparse
import sys

from whalecast.cli.arguments import Add

PRESETS = (
    "volume",
    "volume-wide",
    "direction",
    "direction-wide",
    "direction-deep",
    "direction-gru",
    "ensemble",
    "volume-horizons",
    "direction-horizons",
)


def _duration(text: str) -> float:
    from training.commands import parse_duration

    return parse_duration(text)


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


def register(add: Add) -> None:
    train = add(
        "train", _cmd_train,
        "train a model preset on history, evaluate it against baselines on a held-out "
        "period, write a versioned artifact and promote it when it is better",
    )  # fmt: skip
    _training_arguments(train)
    _train_options(train)
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


def _train_options(train: argparse.ArgumentParser) -> None:
    """The flags only ``train`` takes."""
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
