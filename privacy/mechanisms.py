"""The DP mechanisms publiek releases through, each bounding contributions before noise.

- ``GaussianHistogram``: counts over a public key set (every cell released, even empty ones, so
  the shape of the answer reveals nothing);
- ``DpCount``: one count, the one-cell histogram;
- ``BoundedSum``: a sum of per-unit totals clipped to [0, upper], fixed-point encoded;
- ``ClippedVectorSum``: per-unit vectors clipped to an L2 ball, fixed-point encoded and summed,
  the building block of federated k-means (per-cluster feature sums).

Every mechanism describes itself (noise scale, sensitivity, cost, and the 95% interval
half-width of each released cell, in the units of the cell), so releases carry honest error bars
and the ledger an exact cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privacy.bounding import ContributionBound, bounded_histogram
from privacy.budget import Rho
from privacy.fixedpoint import FixedPoint
from privacy.noise import DiscreteGaussian, IntVector

MAX_HISTOGRAM_CELLS = 1_000_000
FloatVector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Description:
    mechanism: str
    noise_scale: float  # sigma, in the integer units noise is added in
    l2_sensitivity: float  # in the same units
    rho: Rho
    half_width_95: float  # per released cell, in the cell's own units (e.g. euros, not cents)


def _describe(noise: DiscreteGaussian, l2: float, rho: Rho, steps_per_unit: int) -> Description:
    return Description(
        mechanism="discrete_gaussian",
        noise_scale=noise.scale,
        l2_sensitivity=l2,
        rho=rho,
        half_width_95=noise.half_width(0.95) / steps_per_unit,
    )


@dataclass(frozen=True, slots=True)
class GaussianHistogram:
    """Each unit touches at most ``bound.max_cells`` cells, adding at most ``max_per_cell``."""

    n_cells: int
    bound: ContributionBound
    rho: Rho

    def __post_init__(self) -> None:
        if not (1 <= self.n_cells <= MAX_HISTOGRAM_CELLS):
            raise ValueError(
                f"a histogram needs 1 to {MAX_HISTOGRAM_CELLS} cells, got {self.n_cells}"
            )

    @property
    def noise(self) -> DiscreteGaussian:
        return DiscreteGaussian.for_budget(self.bound.l2_sensitivity, self.rho)

    def describe(self) -> Description:
        return _describe(self.noise, self.bound.l2_sensitivity, self.rho, 1)

    def true_counts(
        self,
        unit: npt.NDArray[np.int64],
        cell: npt.NDArray[np.int64],
        weight: npt.NDArray[np.int64],
    ) -> IntVector:
        """The contribution-bounded, noiseless histogram (never leaves the node)."""
        return bounded_histogram(unit, cell, weight, self.n_cells, self.bound)

    def release(self, bounded_counts: IntVector) -> IntVector:
        if bounded_counts.shape != (self.n_cells,):
            raise ValueError(f"expected {self.n_cells} cells, got shape {bounded_counts.shape}")
        return self.noise.sample(bounded_counts)


@dataclass(frozen=True, slots=True)
class DpCount:
    """How many units (e.g. bookers): each unit counts at most once."""

    rho: Rho

    @property
    def _histogram(self) -> GaussianHistogram:
        return GaussianHistogram(1, ContributionBound(1, 1), self.rho)

    def describe(self) -> Description:
        return self._histogram.describe()

    def release(self, unit: npt.NDArray[np.int64]) -> int:
        ones = np.ones_like(unit)
        counts = self._histogram.true_counts(unit, np.zeros_like(unit), ones)
        return int(self._histogram.release(counts)[0])


def _per_unit_totals(
    unit: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    _, inverse = np.unique(unit, return_inverse=True)
    totals = np.zeros(int(inverse.max()) + 1 if inverse.size else 0, dtype=np.float64)
    np.add.at(totals, inverse, values)
    return totals


@dataclass(frozen=True, slots=True)
class BoundedSum:
    """Sum of per-unit totals, each clipped to [0, upper] (e.g. a customer's spend in euros)."""

    upper: float
    rho: Rho
    scale: int = 100  # integer steps per unit: cents for euros

    @property
    def fixed(self) -> FixedPoint:
        return FixedPoint(self.scale, self.upper)

    @property
    def l2_sensitivity(self) -> float:
        # One unit adds round(t * scale) with 0 <= t <= upper: at most round(upper * scale).
        return float(np.rint(self.upper * self.scale))

    @property
    def noise(self) -> DiscreteGaussian:
        return DiscreteGaussian.for_budget(self.l2_sensitivity, self.rho)

    def describe(self) -> Description:
        return _describe(self.noise, self.l2_sensitivity, self.rho, self.scale)

    def true_sum(self, unit: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> int:
        """Encoded, clipped, noiseless sum (never leaves the node)."""
        totals = np.clip(_per_unit_totals(unit, values), 0.0, self.upper)
        self.fixed.check_headroom(totals.size, self.noise.scale)
        return int(self.fixed.encode(totals).sum())

    def release(self, encoded_sum: int) -> float:
        noisy = self.noise.sample(np.array([encoded_sum], dtype=np.int64))
        return float(self.fixed.decode(noisy)[0])


@dataclass(frozen=True, slots=True)
class ClippedVectorSum:
    """Sum of per-unit vectors clipped to L2 norm ``clip_norm`` (one row per unit).

    Clipping scales a row down onto the ball (direction kept), then each coordinate is encoded.
    A unit's encoded row has L2 norm at most clip_norm * scale + sqrt(dim) / 2, which is the
    sensitivity under adding or removing that unit.
    """

    dim: int
    clip_norm: float
    rho: Rho
    scale: int = 2**10

    def __post_init__(self) -> None:
        if not (1 <= self.dim <= 100_000):
            raise ValueError(f"dim must be between 1 and 100000, got {self.dim}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be positive and finite, got {self.clip_norm}")

    @property
    def fixed(self) -> FixedPoint:
        return FixedPoint(self.scale, self.clip_norm)

    @property
    def l2_sensitivity(self) -> float:
        return self.clip_norm * self.scale + math.sqrt(self.dim) / 2.0

    @property
    def noise(self) -> DiscreteGaussian:
        return DiscreteGaussian.for_budget(self.l2_sensitivity, self.rho)

    def describe(self) -> Description:
        return _describe(self.noise, self.l2_sensitivity, self.rho, self.scale)

    def clip(self, rows: npt.ArrayLike) -> FloatVector:
        x = np.asarray(rows, dtype=np.float64).reshape(-1, self.dim)
        if not np.all(np.isfinite(x)):
            raise ValueError("rows contain NaN or infinite values")
        norms = np.linalg.norm(x, axis=1)
        factor = np.minimum(1.0, self.clip_norm / np.maximum(norms, 1e-300))
        return np.asarray(x * factor[:, None], dtype=np.float64)

    def true_sum(self, rows: npt.ArrayLike) -> IntVector:
        """Encoded, clipped, noiseless sum of the rows (never leaves the node)."""
        clipped = self.clip(rows)
        self.fixed.check_headroom(clipped.shape[0], self.noise.scale)
        return np.asarray(self.fixed.encode(clipped).sum(axis=0), dtype=np.int64)

    def release(self, encoded_sum: IntVector) -> FloatVector:
        if encoded_sum.shape != (self.dim,):
            raise ValueError(f"expected a vector of {self.dim}, got shape {encoded_sum.shape}")
        return self.fixed.decode(self.noise.sample(encoded_sum))
