"""Console and Markdown summaries of multi-horizon reports (``report["horizons"]``)."""

from __future__ import annotations

from typing import Any

from training.summary import cell, paired_cell

QUANTILE_COLUMNS = ("mae", "pinball_50", "pinball_90", "coverage_90")
DIRECTION_COLUMNS = ("auc", "accuracy", "log_loss")
Run = tuple[dict[str, Any], dict[str, Any]]


def is_multi(report: dict[str, Any]) -> bool:
    return "horizons" in report


def _quantiles(report: dict[str, Any]) -> bool:
    return any(o["quantile"] is not None for o in report["outputs"])


def text(report: dict[str, Any], model: str, version: str) -> str:
    """Pooled test scores per horizon and the decision, for the console."""
    columns = QUANTILE_COLUMNS if _quantiles(report) else DIRECTION_COLUMNS
    lines = [f"{model} {version}: {report['promotion']['reason']}"]
    for scored in report["horizons"]:
        h = scored["horizon_bars"]
        lines.append(f"  {h} bars: {scored['samples']} samples, {scored['blocks']} days")
        for name, metrics in scored["pooled"]["models"].items():
            values = "  ".join(f"{c}={cell(metrics.get(c))}" for c in columns)
            lines.append(f"    {name:<17} {values}")
    return "\n".join(lines)


def tables(runs: list[Run]) -> str:
    """The results page's sections for multi-horizon runs: pooled per horizon, per series,
    the decision and the fit."""
    parts = []
    for report, meta in runs:
        quantile = _quantiles(report)
        columns = QUANTILE_COLUMNS if quantile else DIRECTION_COLUMNS
        paired = ("mae", "pinball_90") if quantile else ("auc", "log_loss")
        strong = "ridge" if quantile else "logistic"
        parts.append(f"#### {meta['preset']}: pooled over the series\n")
        parts.append(_pooled(report, columns, paired))
        parts.append(
            f"#### {meta['preset']}: per series (model, paired verdict against {strong})\n"
        )
        parts.append(_per_series(report, columns[0], strong, quantile))
        parts.append(_decision(report))
        parts.append(_fit(meta))
    return "\n".join(parts)


def _pooled(report: dict[str, Any], columns: tuple[str, ...], paired: tuple[str, ...]) -> str:
    head = ["| horizon | model | " + " | ".join(columns) + " | "
            + " | ".join(f"model − row, {p} (paired)" for p in paired) + " |",
            "|---" * (len(columns) + len(paired) + 2) + "|"]  # fmt: skip
    lines = []
    for scored in report["horizons"]:
        h, pooled = scored["horizon_bars"], scored["pooled"]
        for name in sorted(pooled["models"], key=lambda n: (n != "model", n)):
            metrics = pooled["models"][name]
            label = f"**{name}**" if name == "model" else name
            diff = pooled["paired"].get(name, {})
            cells = [cell(metrics.get(c)) for c in columns]
            cells += [paired_cell(diff.get(p)) if diff else "" for p in paired]
            lines.append(f"| {h} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(head + lines) + "\n"


def _per_series(report: dict[str, Any], key: str, strong: str, quantile: bool) -> str:
    tags = list(report["horizons"][0]["series"])
    head = ["| horizon | what | " + " | ".join(t.split(":")[1] for t in tags) + " |",
            "|---" * (len(tags) + 2) + "|"]  # fmt: skip
    lines = []
    for scored in report["horizons"]:
        h = scored["horizon_bars"]
        rows: dict[str, list[str]] = {f"model {key}": [], f"{strong} {key}": []}
        if quantile:
            rows["model p90 coverage"] = []
        for tag in tags:
            s = scored["series"][tag]
            verdict = s["paired"][strong][key]["verdict"]
            rows[f"model {key}"].append(f"{cell(s['models']['model'][key])} {verdict}")
            rows[f"{strong} {key}"].append(cell(s["models"][strong][key]))
            if quantile:
                rows["model p90 coverage"].append(cell(s["models"]["model"]["coverage_90"]))
        lines += [f"| {h} | {what} | " + " | ".join(v) + " |" for what, v in rows.items()]
    return "\n".join(head + lines) + "\n"


def _decision(report: dict[str, Any]) -> str:
    promotion = report["promotion"]
    state = "promoted" if promotion["promote"] else "not promoted"
    return f"Decision: {state}: {promotion['reason']}.\n"


def _fit(meta: dict[str, Any]) -> str:
    lines = []
    for name, f in meta["fit"].items():
        lines.append(
            f"Fit of {name}: {meta['parameter_count']:,} parameters, {f['epochs_run']} epochs "
            f"(best {f['best_epoch']}), {f['seconds'] / 60:.1f} min of `model.fit` on "
            f"{f['train_sequences']:,} training sequences ({f['sequences_per_second']:.0f}/s)."
        )
    return "\n".join(lines) + "\n"
