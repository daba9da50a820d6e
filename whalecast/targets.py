"""The prediction targets: what a model's value means, named once for every package.

A model artifact names its target (:mod:`whalecast.artifact`), every published
prediction carries it (:mod:`whalecast.schema`), and scoring, training and the
baselines choose their arithmetic by it.

The two v1 targets are about the next bar only. The horizon targets carry a
``horizon_bars`` (and, for volume, optionally a ``quantile``) beside them in the
artifact's outputs and in every message.
"""

from __future__ import annotations

from typing import Final, Literal

Target = Literal["p_up_next_bar", "next_bar_volume", "p_up_in_bars", "volume_next_bars"]
DIRECTION: Final = "p_up_next_bar"
VOLUME: Final = "next_bar_volume"
DIRECTION_AT: Final = "p_up_in_bars"
VOLUME_SUM: Final = "volume_next_bars"
#: Every target, and what a prediction's ``value`` then means.
MEANING: Final[dict[Target, str]] = {
    DIRECTION: "probability that the next bar closes above this bar's close",
    VOLUME: "predicted volume of the next bar, in base-asset units",
    DIRECTION_AT: "probability that the close horizon_bars bars ahead is above this bar's close",
    VOLUME_SUM: (
        "total volume of the next horizon_bars bars, in base-asset units; "
        "with a quantile, that quantile of it"
    ),
}
#: Targets whose value is a probability (a sigmoid output, scored by Brier and hit rate).
PROBABILITY_TARGETS: Final[frozenset[Target]] = frozenset({DIRECTION, DIRECTION_AT})
#: Targets whose value is a volume (non-negative, scored by error and, with a quantile, pinball).
VOLUME_TARGETS: Final[frozenset[Target]] = frozenset({VOLUME, VOLUME_SUM})
#: The v1 targets: next bar only, no horizon or quantile.
NEXT_BAR_TARGETS: Final[frozenset[Target]] = frozenset({DIRECTION, VOLUME})
