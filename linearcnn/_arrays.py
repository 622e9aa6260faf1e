"""Numeric input conversion shared by the measuring modules (energy, dynamics)."""

from __future__ import annotations

from typing import Any

import numpy as np

from linearcnn.errors import LinearCNNInputError


def real_array(value: object, what: str, *, expected: str) -> np.ndarray:
    """`numpy.asarray(value)` (no copy, no dtype change), checked to hold real numbers (bool,
    integer or float); `what` names the input and `expected` what it should be in the one-line
    LinearCNNInputError."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise LinearCNNInputError(f"{what} is not {expected}") from None
    if array.dtype.kind not in "biuf":
        raise LinearCNNInputError(f"{what} has dtype {array.dtype}; expected real numbers")
    return array


def finite_float64(value: Any, what: str) -> np.ndarray:
    """A float64 numpy copy of an array-like or torch tensor (any device), checked to be real
    (bool, integer or float) and finite; `what` names the input in the one-line
    LinearCNNInputError. Does not import torch."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().double().numpy()
    array = real_array(value, what, expected="an array of numbers")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise LinearCNNInputError(f"{what} contains NaN or Inf; expected finite values")
    return array
