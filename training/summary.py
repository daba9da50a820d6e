"""Plain-text and Markdown summaries of a training report (stdout, docs)."""

from __future__ import annotations

from typing import Any

from training.params import DEFAULTS, groups_left_out
from whalecast.artifact import baseline_label
from whalecast.targets import VOLUME

VOLUME_COLUMNS = ("mae", "rmse", "mape")
DIRECTION_COLUMNS = ("auc", "accuracy", "balanced_accuracy", "log_loss")


def columns_of(report: dict[str, Any]) -> tuple[str, ...]:
    return VOLUME_COLUMNS if report["target"] == VOLUME else DIRECTION_COLUMNS


def cell(entry: dict[str, Any] | None, digits: int = 4) -> str:
    """``0.5312 [0.5201, 0.5420]``, or ``–`` when the metric is not defined."""
    if not entry or entry.get("value") is None:
        return "–"
    value = f"{entry['value']:.{digits}f}"
    if entry.get("low") is None:
        return value
    return f"{value} [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"


def markdown_rows(scored: dict[str, Any], columns: tuple[str, ...], label: str = "") -> list[str]:
    """One row per model: every metric with its interval, then model-minus-row verdicts."""
    rows = []
    for name, metrics in scored["models"].items():
        cells = [cell(metrics.get(c)) for c in columns]
        paired = scored["paired"].get(name, {})
        verdicts = ", ".join(f"{c}: {paired[c]['verdict']}" for c in columns if c in paired)
        rows.append(f"| {label}{name} | " + " | ".join(cells) + f" | {verdicts or '—'} |")
    return rows


def markdown(report: dict[str, Any], title: str, per_series: bool = False) -> str:
    columns = columns_of(report)
    test = report["test"]
    head = [
        f"#### {title}",
        "",
        f"Test samples: {test['samples']} in {test['blocks']} day blocks (pooled).",
        "",
        "| model | " + " | ".join(columns) + " | model vs this row (paired) |",
        "|---" * (len(columns) + 2) + "|",
    ]
    lines = head + markdown_rows(test["pooled"], columns)
    if per_series:
        for tag, scored in test["series"].items():
            lines += markdown_rows(scored, columns, label=f"{tag} ")
    return "\n".join(lines) + "\n"


def text(report: dict[str, Any], model: str, version: str) -> str:
    """A short console summary: pooled test metrics with intervals and the decision."""
    columns = columns_of(report)
    pooled = report["test"]["pooled"]
    what = f" ({report['baseline']['kind']} over the window)" if "baseline" in report else ""
    lines = [f"{model} {version}{what}: {report['promotion']['reason']}"]
    lines.append(f"  test: {report['test']['samples']} samples, {report['test']['blocks']} days")
    for name, metrics in pooled["models"].items():
        values = "  ".join(f"{c}={cell(metrics.get(c))}" for c in columns[:2])
        lines.append(f"  {name:<15} {values}")
    if "backtest" in report:
        strat = report["backtest"]["portfolio"]["strategy"]
        hold = report["backtest"]["portfolio"]["buy_and_hold"]
        lines.append(
            f"  backtest: strategy {strat['total_return']:+.2%} (Sharpe {_num(strat['sharpe'])}),"
            f" buy-and-hold {hold['total_return']:+.2%}"
        )
    return "\n".join(lines)


# --- the results page (docs/training-results.md) -------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.2%}"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def paired_cell(entry: dict[str, Any] | None) -> str:
    """``+0.0059 [+0.0009, +0.0112] better``: a paired difference, its interval, the verdict."""
    if not entry or entry.get("value") is None:
        return "–"
    return f"{entry['value']:+.4f} [{entry['low']:+.4f}, {entry['high']:+.4f}] {entry['verdict']}"


def _name(meta: dict[str, Any]) -> str:
    """The registry name, with the preset when it differs (``direction-2y (direction)``)."""
    model, preset = meta.get("model", meta["preset"]), meta["preset"]
    name = model if model == preset else f"{model} ({preset})"
    if "baseline" in meta:  # the strong baseline (itself, or over the window) as a version
        return f"{name}: {baseline_label(meta['baseline'])}"
    if left_out(meta):
        return f"{name} without {', '.join(left_out(meta))}"
    return name


def _fit_span(meta: dict[str, Any]) -> str:
    train_days = meta["config"]["training"]["train_days"]
    return "all history" if train_days is None else f"last {train_days:g} days"


def left_out(meta: dict[str, Any]) -> list[str]:
    """The input groups an ablation run left out of its preset's features (none: a full run)."""
    preset = meta["preset"]
    if preset not in DEFAULTS:
        return []
    return groups_left_out(preset, meta["hyper_parameters"]["features"])


def results_tables(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """Markdown tables for (report, metadata) pairs: models beside baselines, with intervals.

    A run that left input groups out and was scored beside the version in service (``whalecast
    train --without GROUP --no-promote`` under the full model's name) goes into the ablation
    table instead, with its paired difference against that full model.
    """
    runs = [(r, m) for r, m in runs if "horizons" not in r]  # see training.horizon_summary
    ablations = [
        (r, m) for r, m in runs if left_out(m) and "serving" in r["test"]["pooled"]["models"]
    ]
    runs = [run for run in runs if run not in ablations]
    volume = [(r, m) for r, m in runs if r["target"] == VOLUME]
    direction = [(r, m) for r, m in runs if r["target"] != VOLUME]
    parts = []
    if volume:
        parts.append(_table(volume, VOLUME_COLUMNS, "ridge", ("persistence", "seasonal_naive")))
    if volume:
        parts.append(_per_series(volume, "mae", "ridge"))
    if direction:
        naive = ("majority", "previous_bar", "reversal")
        parts.append(_table(direction, DIRECTION_COLUMNS, "logistic", naive))
        parts.append(_per_series(direction, "auc", "logistic"))
        parts.append(_backtests(direction))
    if ablations:
        parts.append(_ablations(ablations))
    if runs:
        parts.append(_fits(runs + ablations))
    return "\n".join(parts)


def _ablations(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    lines = [
        "| preset | left out | metric | value | model − full model (paired) "
        "| model − strong baseline (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for report, meta in runs:
        key = columns_of(report)[0]
        pooled = report["test"]["pooled"]
        strong = report["reference_baseline"]
        lines.append(
            f"| {meta['preset']} | {', '.join(left_out(meta))} | {key} "
            f"| {cell(pooled['models']['model'].get(key))} "
            f"| {paired_cell(pooled['paired']['serving'].get(key))} "
            f"| {paired_cell(pooled['paired'][strong].get(key))} ({strong}) |"
        )
    return "\n".join(lines) + "\n"


def _table(
    runs: list[tuple[dict[str, Any], dict[str, Any]]],
    columns: tuple[str, ...],
    strong: str,
    naive: tuple[str, ...],
) -> str:
    key = columns[0]
    lines = [
        "| model (fitted on) | " + " | ".join(columns) + f" | model − {strong}, {key} (paired) "
        f"| model − {naive[0]}, {key} (paired) |",
        "|---" * (len(columns) + 3) + "|",
    ]
    seen_baselines: set[str] = set()
    baseline_rows: list[str] = []
    for report, meta in runs:
        pooled = report["test"]["pooled"]
        span = _fit_span(meta)
        cells = " | ".join(cell(pooled["models"]["model"].get(c)) for c in columns)
        paired = pooled["paired"]
        lines.append(
            f"| **{_name(meta)}**, {span} | {cells} | {paired_cell(paired[strong].get(key))} "
            f"| {paired_cell(paired[naive[0]].get(key))} |"
        )
        names = (*naive, strong) if not baseline_rows else (strong,)
        for name in names:
            label = f"{name}, {span}"
            if label in seen_baselines:
                continue
            seen_baselines.add(label)
            values = " | ".join(cell(pooled["models"][name].get(c)) for c in columns)
            baseline_rows.append(f"| {label} | {values} | | |")
    return "\n".join(lines + baseline_rows) + "\n"


def _per_series(runs: list[tuple[dict[str, Any], dict[str, Any]]], key: str, strong: str) -> str:
    """One metric per series: each model (with its paired verdict against ``strong``)."""
    tags = list(runs[0][0]["test"]["series"])
    lines = [
        f"{key} per series (paired verdict of the model against {strong} on that series):",
        "",
        "| model | " + " | ".join(t.split(":")[1] for t in tags) + " |",
        "|---" * (len(tags) + 1) + "|",
    ]
    baselines: dict[str, list[str]] = {}
    for report, meta in runs:
        cells, base = [], []
        for tag in tags:
            scored = report["test"]["series"][tag]
            verdict = scored["paired"][strong][key]["verdict"]
            cells.append(f"{cell(scored['models']['model'][key])} {verdict}")
            base.append(cell(scored["models"][strong][key]))
        lines.append(f"| {_name(meta)}, {_fit_span(meta)} | " + " | ".join(cells) + " |")
        baselines.setdefault(f"{strong}, {_fit_span(meta)}", base)
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in baselines.items()]
    return "\n".join(lines) + "\n"


def _backtests(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    cfg = runs[0][0]["backtest"]["config"]
    lines = [
        f"Backtest of the direction signal on the test period ({cfg['mode']}, threshold "
        f"{cfg['threshold']}, fees {cfg['fees_bps']} bps per unit of position change), "
        "equal-weight across the series:",
        "",
        "| signal | total return | annual volatility | Sharpe | max drawdown | win rate "
        "| turnover / year |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    baselines: dict[str, Any] = {}
    for report, meta in runs:
        portfolio = report["backtest"]["portfolio"]
        rows.append((_name(meta), portfolio["strategy"]))
        if "strategy_before_fees" in portfolio:
            rows.append((f"{_name(meta)}, before fees", portfolio["strategy_before_fees"]))
        for name, strategy in report["backtest"].get("baseline_portfolio", {}).items():
            baselines.setdefault(f"{name}, {_fit_span(meta)}", strategy)
    rows += list(baselines.items())
    rows.append(("buy and hold", runs[0][0]["backtest"]["portfolio"]["buy_and_hold"]))
    for name, s in rows:
        lines.append(
            f"| {name} | {_pct(s['total_return'])} | {s['annual_volatility']:.2%} "
            f"| {_num(s['sharpe'])} | {_pct(s['max_drawdown'])} | {_num(s['win_rate'], 3)} "
            f"| {_num(s['turnover_per_year'], 0)} |"
        )
    return "\n".join(lines) + "\n"


def _unfitted(meta: dict[str, Any]) -> str:
    """What a version without a network fit holds: a linear fit, or registry members."""
    return f"({meta['baseline']['kind']} fit)" if "baseline" in meta else "(registry members)"


def _linear_time(meta: dict[str, Any]) -> str:
    baseline = meta.get("baseline")
    if not baseline:
        return "–"
    reused = " (the network's start, reused)" if baseline.get("reused") else ""
    return f"{baseline['fit_seconds'] / 60:.1f} min{reused}"


def _fits(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    lines = [
        "| model | parameters | fitted on | train / validation / test samples | network "
        "| epochs run (best) | fit time | sequences/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _report, meta in runs:
        counts = meta["data"]["samples"].values()
        totals = [sum(c[k] for c in counts) for k in ("train", "validation", "test")]
        for name, fit in (meta["fit"] or {_unfitted(meta): None}).items():
            epochs = f"{fit['epochs_run']} ({fit['best_epoch']})" if fit else "–"
            seconds = f"{fit['seconds'] / 60:.1f} min" if fit else _linear_time(meta)
            speed = f"{fit['sequences_per_second']:.0f}" if fit else "–"
            lines.append(
                f"| {_name(meta)} | {meta['parameter_count']:,} | {_fit_span(meta)} "
                f"| {' / '.join(f'{t:,}' for t in totals)} | {name} | {epochs} | {seconds} "
                f"| {speed} |"
            )
    return "\n".join(lines) + "\n"


def walk_forward_table(report: dict[str, Any]) -> str:
    """One row per fold of a ``--walk-forward`` report: the window, the model beside the
    strong baseline, the paired difference; then the record (per horizon, for a
    multi-horizon preset, with the p90 coverage of each fold)."""
    if "horizons" in report:
        return "\n".join(walk_forward_table(each) for each in report["horizons"])
    summary = report["summary"]
    ref = summary["reference"]
    metric = report["folds"][0]["metric"]
    coverage = "coverage_90" in report["folds"][0]
    lines = [
        f"`{report['preset']}`, {len(report['folds'])} folds of {report['fold_days']:g} days, "
        f"{metric}:",
        "",
        f"| test window | trained from | samples | model | {ref} | model − {ref} (paired) |"
        + (" model p90 coverage |" if coverage else ""),
        "|---|---|---|---|---|---|" + ("---|" if coverage else ""),
    ]
    for fold in report["folds"]:
        lines.append(
            f"| {fold['test_from'][:16]} → {fold['test_to'][:16]} | {fold['train_from'][:10]} "
            f"| {fold['samples']:,} | {cell(fold['models']['model'])} "
            f"| {cell(fold['models'][ref])} | {paired_cell(fold['vs_reference'])} |"
            + (f" {cell(fold['coverage_90'], 3)} |" if coverage else "")
        )
    record = ", ".join(f"{v} {n}" for n, v in summary["record"].items())
    mean = summary["mean_difference"]
    lines += ["", f"Mean difference {'–' if mean is None else f'{mean:+.4f}'}; folds: {record}."]
    return "\n".join(lines) + "\n"
