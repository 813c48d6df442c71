"""Noise on integer vectors, drawn only by OpenDP's samplers.

OpenDP's discrete Gaussian and discrete Laplace samplers are exact (Canonne, Kamath & Steinke
2020) and take their randomness from the operating system's CSPRNG, so they resist the
floating-point attacks that break textbook float noise (Mironov 2012). They are about 1,000x
slower than numpy, which is fine for the vectors we release; ``benchmarks/noise.py`` measures it.

Each mechanism knows its own scale, what it costs for a given sensitivity (by OpenDP's privacy
map, not by our own formula) and the 95% interval of the noise it adds.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from privacy._opendp import dp
from privacy.budget import InvalidBudget, Rho
from privacy.intervals import discrete_gaussian_half_width, discrete_laplace_half_width

IntVector = npt.NDArray[np.int64]

# OpenDP works on i64; we keep a margin so that value + noise cannot wrap.
_I64_SAFE = 2**62
# Above this length a vector is cut into chunks sampled on several threads. OpenDP is called
# through ctypes, which releases the GIL, so the exact sampler runs on every core; chunks are
# independent draws of the same distribution, so the result is distributed exactly as one call.
PARALLEL_FROM = 50_000
_WORKERS = max(1, min(8, os.cpu_count() or 1))


def _run(measurement: Any, data: list[int], parallel: bool) -> IntVector:
    if not parallel or len(data) < PARALLEL_FROM or _WORKERS == 1:
        return np.asarray(measurement(data), dtype=np.int64)
    size = -(-len(data) // _WORKERS)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        parts = list(pool.map(measurement, chunks))
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def _check_vector(values: npt.ArrayLike) -> list[int]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-d integer vector, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"expected integers, got {arr.dtype}; encode reals with privacy.fixedpoint")
    if arr.size and int(np.max(np.abs(arr.astype(np.int64)))) >= _I64_SAFE:
        raise OverflowError("vector entries are too large to add noise without overflow")
    return [int(v) for v in arr]


@dataclass(frozen=True, slots=True)
class _IntegerNoise:
    """Shared by the samplers: a validated scale, budget-to-scale, and sampling through OpenDP."""

    scale: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise InvalidBudget(f"noise scale must be positive and finite, got {self.scale}")

    @classmethod
    def for_budget(cls, sensitivity: float, rho: Rho) -> Self:
        """The smallest scale whose OpenDP privacy map at this sensitivity is at most rho."""
        if rho.is_zero():
            raise InvalidBudget("a release at rho = 0 would need infinite noise")
        if not (math.isfinite(sensitivity) and sensitivity > 0):
            raise InvalidBudget(f"sensitivity must be positive and finite, got {sensitivity}")
        # Both samplers cost (sensitivity / scale)^2 / 2 in zCDP. Computing the scale in floats
        # can land a hair under what the budget allows; step up until OpenDP's own
        # (conservatively rounded) map agrees the cost fits.
        scale = sensitivity / math.sqrt(2.0 * float(rho))
        while cls(scale).cost(sensitivity) > float(rho):
            scale = math.nextafter(scale, math.inf)
        return cls(scale)

    def _measurement(self) -> Any:
        raise NotImplementedError

    def cost(self, sensitivity: float) -> float:
        """zCDP rho of one release at this sensitivity, by OpenDP's privacy map."""
        raise NotImplementedError

    def sample(self, values: npt.ArrayLike, *, parallel: bool = True) -> IntVector:
        """values + independent noise on every entry, drawn by OpenDP."""
        data = _check_vector(values)
        if not data:
            return np.zeros(0, dtype=np.int64)
        return _run(self._measurement(), data, parallel)


@dataclass(frozen=True, slots=True)
class DiscreteGaussian(_IntegerNoise):
    """Adds discrete Gaussian noise N_Z(0, scale^2) to each entry; L2 sensitivity."""

    def _measurement(self) -> Any:
        return dp.m.make_gaussian(
            dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="f64"), scale=self.scale
        )

    def cost(self, sensitivity: float) -> float:
        return float(self._measurement().map(float(sensitivity)))

    def half_width(self, confidence: float = 0.95) -> float:
        """Half-width of the central interval holding the noise with this probability."""
        return float(discrete_gaussian_half_width(self.scale, confidence))

    @property
    def variance(self) -> float:
        # The discrete Gaussian's variance is at most scale^2 (Canonne et al. 2020, Prop. 19).
        return self.scale**2


@dataclass(frozen=True, slots=True)
class DiscreteLaplace(_IntegerNoise):
    """Adds discrete Laplace (two-sided geometric) noise; L1 sensitivity, pure epsilon-DP."""

    def _measurement(self) -> Any:
        return dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=self.scale
        )

    def epsilon(self, l1_sensitivity: int) -> float:
        return float(self._measurement().map(int(l1_sensitivity)))

    def cost(self, sensitivity: float) -> float:
        """zCDP rho via OpenDP's pure-DP conversion (eps^2 / 2); the L1 metric is integer."""
        if not float(sensitivity).is_integer():
            raise InvalidBudget(f"the L1 sensitivity of integer counts is whole, got {sensitivity}")
        conversion: Any = dp.c.make_pureDP_to_zCDP(self._measurement())
        return float(conversion.map(int(sensitivity)))

    def half_width(self, confidence: float = 0.95) -> float:
        return float(discrete_laplace_half_width(self.scale, confidence))

    @property
    def variance(self) -> float:
        # Var of the two-sided geometric with parameter a = exp(-1/scale) is 2a / (1 - a)^2.
        a = math.exp(-1.0 / self.scale)
        return 2.0 * a / (1.0 - a) ** 2
