"""Error bars from the known noise: the half-width of the central interval that holds it.

These are intervals for the *noise* only (the released value minus the bounded true value), which
is what DP lets us state exactly. Bias from contribution bounding is a separate, data-dependent
effect that the benchmarks measure against the synthetic sector's truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

# Above this scale the discrete Gaussian's quantiles match the continuous ones to well under one
# count (their total-variation distance is exp(-2 pi^2 sigma^2)-small), so we stop summing the pmf.
_EXACT_SIGMA_LIMIT = 60.0


def _check_confidence(confidence: float) -> None:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def discrete_gaussian_half_width(sigma: float, confidence: float = 0.95) -> int:
    """Smallest integer h with P(|X| <= h) >= confidence for X ~ N_Z(0, sigma^2)."""
    _check_confidence(confidence)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if sigma > _EXACT_SIGMA_LIMIT:
        z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
        return math.ceil(z * sigma)
    support = np.arange(0, math.ceil(12 * sigma) + 12, dtype=np.float64)
    weights = np.exp(-(support**2) / (2.0 * sigma**2))
    total = weights[0] + 2.0 * weights[1:].sum()
    central = weights[0] + 2.0 * np.cumsum(np.concatenate(([0.0], weights[1:])))
    mass = central / total
    return int(np.searchsorted(mass, confidence, side="left"))


def discrete_laplace_half_width(scale: float, confidence: float = 0.95) -> int:
    """Smallest integer h with P(|X| <= h) >= confidence for the two-sided geometric.

    P(|X| > h) = 2 a^(h+1) / (1 + a) with a = exp(-1/scale).
    """
    _check_confidence(confidence)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    a = math.exp(-1.0 / scale)
    tail = 1.0 - confidence
    # Solve 2 a^(h+1) / (1 + a) <= tail for the smallest integer h >= 0.
    h = math.log(tail * (1.0 + a) / 2.0) / math.log(a) - 1.0
    return max(0, math.ceil(h - 1e-12))


def sum_half_width(variances: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width for a sum of independent noises (nodes' answers added up).

    By the central limit theorem the sum of several discrete Gaussians is close to a Gaussian of
    the summed variance; each variance we pass is an upper bound, so the interval is conservative.
    """
    _check_confidence(confidence)
    if not variances:
        return 0.0
    if any(v < 0 for v in variances):
        raise ValueError("variances must be non-negative")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    return z * math.sqrt(math.fsum(variances))
