"""Neural features: the same transform at calibration and online.

Kept separate from the decoders so a fitted decoder and the node that runs it
can never disagree on how counts become features.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Transform = Literal["none", "sqrt"]


def transform_counts(counts: np.ndarray, transform: Transform = "none") -> np.ndarray:
    """Counts per bin -> features (float64).

    ``"sqrt"`` stabilises Poisson variance (variance of sqrt(count) is about
    1/4 whatever the rate), which suits the Kalman filter's Gaussian noise.
    Works on one bin (N,) or many (T, N).
    """
    z = np.asarray(counts, dtype=np.float64)
    if transform == "sqrt":
        return np.sqrt(z)
    if transform == "none":
        return z
    raise ValueError(f"unknown transform {transform!r}; use 'none' or 'sqrt'")
