"""The bodies of ``whalecast train`` and ``whalecast tune`` (the CLI parses, this runs).

``whalecast train --every 6h`` is a long-running refresh process of its own (never the
daemon's process): it trains, promotes when better, sleeps, and repeats. SIGTERM or
SIGINT stop it between runs with exit code 0; a signal during a fit abandons that run
(nothing is written) and exits 0 as well. A failed run is logged and the next one
still happens.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from streamer.whale_rule import WhaleRule
from training.history import HistoryError, SeriesHistory, from_csv, from_rest
from training.jobs import Job, TrainingInterrupted, make_job, narrowed, resolve_params, select
from training.params import DEFAULTS, without
from whalecast.artifact import ArtifactError
from whalecast.logs import get_logger
from whalecast.settings import Settings

log = get_logger(__name__)

_DURATION_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd]?)$")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``6h``, ``1d`` -> seconds."""
    match = _DURATION_RE.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30m, 6h or 1d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def load_histories(
    settings: Settings, args: argparse.Namespace, symbols: tuple[str, ...] = ()
) -> list[SeriesHistory]:
    """CSV files from the flags or config, else every configured series over REST.

    ``symbols`` (a job's series group) keeps only those series.
    """
    t = settings.training
    candles = [Path(p) for p in (args.candles or t.candles_csv)]
    whale = [Path(p) for p in (args.whale or t.whale_csv)]
    rule = WhaleRule.from_settings(settings.whale, settings.feed)
    first = settings.exchanges[0]
    if not candles:
        rest = narrowed(settings, symbols).exchanges
        return from_rest(
            rest, t.history_days, t.cache_dir, whale_paths=whale, progress=args.progress,
            stablecoins=settings.whale.stablecoins, whale_rule=rule,
        )  # fmt: skip
    histories = from_csv(
        candles, whale, first.id, first.timeframe, settings.whale.stablecoins, whale_rule=rule
    )
    if not symbols:
        return histories
    kept = [h for h in histories if h.series.symbol in symbols]
    missing = set(symbols) - {h.series.symbol for h in kept}
    if missing:
        raise ValueError(f"job symbols without a candle file: {sorted(missing)}")
    return kept


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Hyper-parameters from ``--params FILE``, then ``--set k=v``, then the named flags."""
    out: dict[str, Any] = {}
    if args.params:
        data = json.loads(Path(args.params).read_text(encoding="utf-8"))
        out.update(data.get("params", data))
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    named = {"epochs": args.epochs, "batch_size": args.batch_size,
             "learning_rate": args.learning_rate, "window": args.window}  # fmt: skip
    out.update({k: v for k, v in named.items() if v is not None})
    return out


def with_training(settings: Settings, args: argparse.Namespace) -> Settings:
    """Settings with the split flags applied to the training section."""
    updates = {k: v for k, v in {"test_days": args.test_days, "train_days": args.train_days,
               "seed": args.seed}.items() if v is not None}  # fmt: skip
    if not updates:
        return settings
    training = settings.training.model_copy(update=updates)
    return settings.model_copy(update={"training": training})


def list_presets() -> str:
    lines = []
    for name, params in DEFAULTS.items():
        shown = {k: v for k, v in params.items() if k != "features"}
        features = params["features"]
        described = "all v1" if len(features) > 5 else ", ".join(features)
        lines.append(f"{name}: features={described} {json.dumps(shown)}")
    return "\n".join(lines)


def ablated(settings: Settings, preset: str, args: argparse.Namespace) -> dict[str, Any]:
    """The overrides, with ``--without`` groups taken out of the resolved features."""
    extra = overrides(args)
    if getattr(args, "without", None):
        features = resolve_params(settings, preset, extra)["features"]
        extra["features"] = without(features, args.without)
    return extra


def train_once(settings: Settings, args: argparse.Namespace, stop: threading.Event) -> None:
    chosen = select(settings.training, args.job, args.preset, args.name)
    job = make_job(
        settings, chosen.preset, registry=args.registry,
        model_name=chosen.model_name, extra=ablated(settings, chosen.preset, args),
        force=args.force,
        promote=not args.no_promote, verbose=1 if args.progress else 0,
    )  # fmt: skip
    from training import horizon_summary  # noqa: PLC0415 - TensorFlow only once a job is valid
    from training.summary import text  # noqa: PLC0415
    from training.train import run  # noqa: PLC0415

    log.info("training_job", preset=job.preset, model=job.model_name,
             symbols=list(chosen.symbols) or "all")  # fmt: skip
    if args.walk_forward:
        walk_forward(settings, args, job, load_histories(settings, args, chosen.symbols), stop)
        return
    outcome = run(settings, job, load_histories(settings, args, chosen.symbols), stop)
    written = [outcome] + ([outcome.baseline] if outcome.baseline is not None else [])
    for each in written:
        said = horizon_summary.text if horizon_summary.is_multi(each.report) else text
        print(said(each.report, each.model, each.version))
    for each in written:
        print(json.dumps({"model": each.model, "version": each.version,
                          "promoted": bool(job.promote and each.decision.promote),
                          "baseline": each is outcome.baseline,
                          "directory": str(each.directory)}))  # fmt: skip
    sys.stdout.flush()


def walk_forward(
    settings: Settings,
    args: argparse.Namespace,
    job: Job,
    histories: list[SeriesHistory],
    stop: threading.Event,
) -> None:
    """``--walk-forward K``: the rolling-origin report, printed and written as JSON."""
    from training import walkforward  # noqa: PLC0415 - imports TensorFlow

    report = walkforward.run(
        settings, job, histories, args.walk_forward, fold_days=args.fold_days, stop=stop
    )
    output = Path(args.output or f"walk-forward-{job.model_name}.json")
    output.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(walkforward.text(report))
    print(json.dumps({"model": job.model_name, "walk_forward": args.walk_forward,
                      "written_to": str(output)}))  # fmt: skip
    sys.stdout.flush()


USER_ERRORS = (ValueError, OSError, HistoryError, ArtifactError)

#: What ``train --quick`` does not take: it trains the demo's two models, with their own
#: presets, on the shipped slice, and promotes under the usual rules.
QUICK_REFUSES = {
    "preset": "--preset", "name": "--name", "candles": "--candles", "whale": "--whale",
    "job": "--job", "without": "--without", "every": "--every", "walk_forward": "--walk-forward",
    "params": "--params", "set": "--set", "test_days": "--test-days", "force": "--force",
    "no_promote": "--no-promote", "epochs": "--epochs", "batch_size": "--batch-size",
    "learning_rate": "--learning-rate", "window": "--window", "train_days": "--train-days",
}  # fmt: skip


def refuse_with_quick(args: argparse.Namespace) -> None:
    """A flag ``--quick`` would ignore is an error naming it, not silently dropped."""
    given = [flag for dest, flag in QUICK_REFUSES.items() if getattr(args, dest, None)]
    if args.quick and given:
        raise ValueError(
            f"--quick trains the demo's small direction and volume models on the shipped "
            f"data slice; it does not take {', '.join(given)}"
        )


def _user_error(command: str, error: Exception) -> int:
    print(f"whalecast {command}: {error}", file=sys.stderr)
    return 2


def train_command(settings: Settings, args: argparse.Namespace) -> int:
    """Train once, or on a schedule with ``--every``; bad input exits 2 with the reason."""
    try:
        return _train(settings, args)
    except USER_ERRORS as e:
        return _user_error("train", e)


def tune_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return _tune(settings, args)
    except USER_ERRORS as e:
        return _user_error("tune", e)


def _train(settings: Settings, args: argparse.Namespace) -> int:
    if args.list_presets:
        print(list_presets())
        return 0
    refuse_with_quick(args)
    settings = with_training(settings, args)
    if args.quick:
        from training.quick import train_quick  # noqa: PLC0415 - imports TensorFlow

        registry = Path(args.registry or settings.inference.registry)
        print(json.dumps(train_quick(settings, registry, progress=print)))
        return 0
    stop = stop_on_signals()
    every = args.every or settings.training.refresh_every_seconds
    if args.walk_forward and args.every:
        raise ValueError("--walk-forward evaluates once; it does not combine with --every")
    if every is None:
        try:
            train_once(settings, args, stop)
        except TrainingInterrupted:
            log.warning("training_interrupted")
        return 0
    log.info("refresh_started", every_seconds=every)
    while not stop.is_set():
        try:
            train_once(settings, args, stop)
        except TrainingInterrupted:
            break
        except Exception as e:
            log.error("refresh_failed", error=f"{type(e).__name__}: {e}", exc_info=True)
        if stop.wait(every):
            break
    log.info("refresh_stopped")
    return 0


def _tune(settings: Settings, args: argparse.Namespace) -> int:
    from training.tune import tune  # noqa: PLC0415 - imports TensorFlow

    settings = with_training(settings, args)
    stop = stop_on_signals()
    preset = args.preset or settings.training.preset
    result = tune(
        settings, preset, load_histories(settings, args),
        trials=args.trials or settings.training.tune_trials,
        epochs=args.epochs or settings.training.tune_epochs, stop=stop,
    )  # fmt: skip
    output = Path(args.output or f"tuned-{preset}.json")
    output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps({"preset": preset, "best_params": result["params"],
                      "best_validation_loss": result["value"], "written_to": str(output)}))  # fmt: skip
    return 0
