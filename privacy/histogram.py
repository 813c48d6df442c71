"""A DP histogram over a public key set: bound contributions, then add discrete Gaussian noise.

The key set is public and fixed before any data is seen (every cell is released, even empty ones),
so the shape of the answer reveals nothing. The mechanism describes itself (scale, cost, interval)
so that the release can carry honest error bars and the ledger an exact cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privacy.bounding import ContributionBound, bounded_histogram
from privacy.budget import Rho
from privacy.noise import DiscreteGaussian, IntVector

MAX_HISTOGRAM_CELLS = 1_000_000


@dataclass(frozen=True, slots=True)
class HistogramDescription:
    mechanism: str
    noise_scale: float
    l2_sensitivity: float
    rho: Rho
    half_width_95: float


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

    def describe(self) -> HistogramDescription:
        noise = self.noise
        return HistogramDescription(
            mechanism="discrete_gaussian",
            noise_scale=noise.scale,
            l2_sensitivity=self.bound.l2_sensitivity,
            rho=self.rho,
            half_width_95=noise.half_width(0.95),
        )

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
