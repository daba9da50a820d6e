"""The prediction targets: what a model's value means, named once for every package.

A model artifact names its target (:mod:`whalecast.artifact`), every published
prediction carries it (:mod:`whalecast.schema`), and scoring, training and the
baselines choose their arithmetic by it.
"""

from __future__ import annotations

from typing import Final, Literal

Target = Literal["p_up_next_bar", "next_bar_volume"]
DIRECTION: Final = "p_up_next_bar"
VOLUME: Final = "next_bar_volume"
#: Every target, and what a prediction's ``value`` then means.
MEANING: Final[dict[Target, str]] = {
    DIRECTION: "probability that the next bar closes above this bar's close",
    VOLUME: "predicted volume of the next bar, in base-asset units",
}
