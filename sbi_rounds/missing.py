"""What counts as missing: a simulation with a NaN or infinite value, a table cell that is None
or NaN. Every stage, check and table reads it from here."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["is_missing", "valid_rows"]


def valid_rows(x: Any) -> np.ndarray:
    """Which simulations are valid: those whose every value is finite.

    A NaN or an infinity in a row marks a simulation that failed, or was never made (the
    store's simulations start as NaN): it is left out of training, of the checks and of
    the plots, and counted as invalid.

    Args:
        x: Simulations (or observations), one per row, with shape (N, D).

    Returns:
        Whether each row is valid, with shape (N,).

    Examples:
        >>> valid_rows(np.array([[0.5, -0.3], [np.nan, 1.0], [np.inf, 0.0]]))
        array([ True, False, False])
    """
    return np.isfinite(np.asarray(x)).all(axis=1)


def is_missing(value: Any) -> bool:
    """Whether a table cell has no value: None, or a float NaN (shown as ``-``).

    Examples:
        >>> [is_missing(v) for v in (None, float("nan"), 0.0, -1, "text")]
        [True, True, False, False, False]
    """
    return value is None or (isinstance(value, float) and math.isnan(value))
