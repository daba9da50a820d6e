"""Plain-text and Markdown summaries of a training report (stdout, docs)."""

from __future__ import annotations

from typing import Any

VOLUME_COLUMNS = ("mae", "rmse", "mape")
DIRECTION_COLUMNS = ("auc", "accuracy", "balanced_accuracy", "log_loss")


def columns_of(report: dict[str, Any]) -> tuple[str, ...]:
    return VOLUME_COLUMNS if report["target"] == "next_bar_volume" else DIRECTION_COLUMNS


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
    lines = [f"{model} {version}: {report['promotion']['reason']}"]
    lines.append(f"  test: {report['test']['samples']} samples, {report['test']['blocks']} days")
    for name, metrics in pooled["models"].items():
        values = "  ".join(f"{c}={cell(metrics.get(c))}" for c in columns[:2])
        lines.append(f"  {name:<15} {values}")
    if "backtest" in report:
        strat = report["backtest"]["portfolio"]["strategy"]
        hold = report["backtest"]["portfolio"]["buy_and_hold"]
        lines.append(
            f"  backtest: strategy {strat['total_return']:+.2%} (Sharpe {strat['sharpe']}), "
            f"buy-and-hold {hold['total_return']:+.2%}"
        )
    return "\n".join(lines)
