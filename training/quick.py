"""A small model in well under a minute, from the data slice shipped in ``streamer/data``.

The demo calls :func:`train_quick` when the registry has no model to serve. The networks
are deliberately tiny (few units, few epochs, a short test period) and are promoted under
the normal rules: only when they beat the strong baseline and what is in service. When a
network loses, the run writes that baseline over the same window as a version and promotes
it under the same rules (:mod:`training.linear`), so a fresh clone serves the best model
that exists. The 30-day test period is too short for the paired intervals to exclude zero
often, so the quick settings promote on the point values (``promote_requires_significance:
false``); the reports still carry the intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.history import from_csv
from training.jobs import make_job
from training.train import run
from whalecast.settings import Settings

DATA = Path(__file__).resolve().parents[1] / "streamer" / "data"
SLICE = ("binance_BTC-USDT_1h.csv.gz", "binance_ETH-USDT_1h.csv.gz")
WHALE = ("whalealert_BTC_exchange_flows_1h.csv.gz", "whalealert_ETH_exchange_flows_1h.csv.gz")

QUICK_VOLUME_FEATURES = [
    "log_volume", "log_volume_mean_6", "log_volume_mean_24", "abs_ret_1",
    "hour_sin", "hour_cos", "hour_sin_2", "hour_cos_2", "hour_sin_3", "hour_cos_3",
    "hour_sin_4", "hour_cos_4", "dow_sin", "dow_cos",
]  # fmt: skip

#: Tiny overrides per preset: a few epochs of a small network.
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "volume": {"epochs": 3, "units": 16, "batch_size": 128, "patience": 0},
    # the volume memory and calendar groups only: on the slice's 10,000 training windows
    # the activity columns overfit the linear part
    "volume-wide": {"epochs": 3, "units": 8, "dense_units": 8, "batch_size": 128, "patience": 0,
                    "features": QUICK_VOLUME_FEATURES},
    "direction": {"epochs": 2, "units": 16, "batch_size": 128, "patience": 0},
    "direction-deep": {"epochs": 1, "units": 16, "units_2": 8, "dense_units": 8,
                       "dense_units_2": 4, "batch_size": 128, "patience": 0, "lr_patience": 0},
    "direction-gru": {"epochs": 1, "units": 16, "units_2": 8, "dense_units": 8,
                      "dense_units_2": 4, "batch_size": 128, "patience": 0, "lr_patience": 0},
}  # fmt: skip
QUICK_TRAINING = {"test_days": 30.0, "validation_fraction": 0.15, "bootstrap_samples": 100,
                  "promote_requires_significance": False, "baseline_fallback": True}  # fmt: skip
#: The preset each served model name is trained with.
QUICK_PRESETS = {"direction": "direction", "volume": "volume-wide"}


def quick_settings(settings: Settings) -> Settings:
    """The same settings with a short test period and fewer bootstrap resamples."""
    training = settings.training.model_copy(update=QUICK_TRAINING)
    return settings.model_copy(update={"training": training})


def train_quick(
    settings: Settings,
    registry: Path,
    models: Sequence[str] = ("direction", "volume"),
    progress: Callable[[str], None] | None = None,
    publish: bool = True,
) -> dict[str, str]:
    """Train and promote one small model per preset name; returns ``{model: version}``."""
    say = progress or (lambda _message: None)
    settings = quick_settings(settings)
    say("loading the shipped data slice")
    histories = from_csv([DATA / name for name in SLICE], [DATA / name for name in WHALE])
    versions = {}
    for name in models:
        preset = QUICK_PRESETS.get(name, name)
        say(f"training a small {name} model ({preset})")
        job = make_job(settings, preset, registry=registry, model_name=name,
                       extra=QUICK_PARAMS.get(preset), plots=False, publish=publish)  # fmt: skip
        outcome = run(settings, job, histories)
        for each in (outcome, outcome.baseline):
            if each is None:
                continue
            baseline = each.report.get("baseline")
            kind = f"{baseline['kind']} baseline" if baseline else "network"
            verdict = "in service" if each.decision.promote else "not promoted"
            say(f"{name} {each.version} ({kind}) {verdict}: {each.decision.reason}")
            if each.decision.promote:
                versions[name] = each.version
    return versions
