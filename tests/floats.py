"""How tests compare predictions: the float32 rules, stated once.

- Bit equality (``np.testing.assert_array_equal``) only where the code claims the same
  arithmetic in the same order: prime-then-step against the full pass of the same runtime,
  the same model and batch read twice.
- Everywhere else (Keras against ONNX or our own kernels, one process against another,
  a batch of 1 against a padded batch of 32, a full window against a primed step) the
  values are float32 from different kernel orders: equal to a relative tolerance that fits
  float32, whose epsilon is 1.2e-7. An absolute floor covers values near zero.

A daemon's volume prediction of about 236.26 computed along two paths differed by 7e-6
(3e-8 relative): an absolute tolerance of 1e-6 called that a failure, wrongly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

FLOAT32_RTOL = 1e-5  # about 80 units in the last place of float32
FLOAT32_ATOL = 1e-6  # for probabilities and scaled values close to zero


def float32_approx(expected: Any) -> Any:
    """``pytest.approx`` with the float32 tolerance, for scalars and sequences."""
    return pytest.approx(expected, rel=FLOAT32_RTOL, abs=FLOAT32_ATOL)


def assert_float32_close(actual: Any, desired: Any, err_msg: str = "") -> None:
    """Arrays of predictions from two computation paths agree to float32 precision."""
    np.testing.assert_allclose(
        actual, desired, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL, err_msg=err_msg
    )
