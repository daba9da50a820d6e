"""What every path of a runtime is checked against at load (no TensorFlow here).

A backend, and prime-then-step, must match a reference output to :data:`TOLERANCE`
(absolute or relative) on warm-up batches: under the TensorFlow backends the Keras
model's output on fresh batches, under ``onnx`` the Keras output the artifact stores
with its check batches (:mod:`whalecast.graphs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from whalecast.artifact import Preprocess
from whalecast.graphs import check_batch

TOLERANCE = 1e-5
WARMUP_SIZES = (1, 7, 70)


class RefusalReason(Exception):
    """Internal: a check failed; :meth:`ModelRuntime.load` turns it into ModelRefused."""


def check_outputs(units: int, preprocess: Preprocess) -> None:
    """The model's last layer has one unit per output ``preprocess.json`` declares."""
    declared = len(preprocess.output_specs())
    if units != declared:
        raise RefusalReason(
            f"the model returns {units} values per sample, preprocess.json declares "
            f"{declared} output{'s' if declared != 1 else ''}"
        )


def warmup_batch(preprocess: Preprocess, rows: int, seed: int = 0) -> np.ndarray:
    """Scaled-space input (standard normal, like real scaled features)."""
    return check_batch(preprocess.window, len(preprocess.features), rows, seed)


@dataclass(frozen=True)
class Reference:
    """The warm-up batches and the reference output on each: what every faster
    path (a backend, incremental steps) must match to :data:`TOLERANCE`."""

    batches: list[np.ndarray]
    outputs: list[np.ndarray]

    def mismatch(self, run: Callable[[np.ndarray], np.ndarray]) -> tuple[int, float] | None:
        """The first batch on which ``run`` differs from Keras: its size and the largest
        difference; None when every batch matches."""
        for batch, want in zip(self.batches, self.outputs, strict=True):
            got = run(batch)
            if got.shape != want.shape:
                raise RefusalReason(f"output shape {got.shape}, the reference's {want.shape}")
            if not np.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE):
                return len(batch), float(np.max(np.abs(got.astype(np.float64) - want)))
        return None


def parse_trained_at(metadata: dict[str, Any]) -> datetime:
    raw = metadata.get("trained_at")
    try:
        moment = datetime.fromisoformat(str(raw))
    except ValueError as e:
        raise RefusalReason(f"metadata.json trained_at {raw!r} is not an ISO time") from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
