"""A small model in well under a minute, from the data slice shipped in ``streamer/data``.

The demo calls :func:`train_quick` when the registry has no model to serve. The models are
deliberately tiny (few units, few epochs, a short test period) and are promoted even if
they do not beat the baselines: they exist so a fresh clone has something to serve, not to
be good. Their reports still say honestly how they compare.
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

#: Tiny overrides per preset: a few epochs of a small network.
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "volume": {"epochs": 3, "units": 16, "batch_size": 128, "patience": 0},
    "direction": {"epochs": 2, "units": 16, "batch_size": 128, "patience": 0},
    "direction-deep": {"epochs": 1, "units": 16, "units_2": 8, "dense_units": 8,
                       "dense_units_2": 4, "batch_size": 128, "patience": 0, "lr_patience": 0},
    "direction-gru": {"epochs": 1, "units": 16, "units_2": 8, "dense_units": 8,
                      "dense_units_2": 4, "batch_size": 128, "patience": 0, "lr_patience": 0},
}  # fmt: skip
QUICK_TRAINING = {"test_days": 30.0, "validation_fraction": 0.15, "bootstrap_samples": 100}


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
        say(f"training a small {name} model")
        job = make_job(settings, name, registry=registry, extra=QUICK_PARAMS.get(name),
                       force=True, plots=False, publish=publish)  # fmt: skip
        outcome = run(settings, job, histories)
        versions[name] = outcome.version
        say(f"{name} {outcome.version} in service ({outcome.decision.reason})")
    return versions
