"""Per-privacy-unit contribution bounds, applied before any noise.

The privacy unit is one customer account at one institution. A histogram's sensitivity is only
known if each unit's influence is capped first: at most ``max_cells`` distinct cells and at most
``max_per_cell`` in any one cell. Adding or removing one unit then changes the vector by a vector
with L2 norm at most ``max_per_cell * sqrt(max_cells)`` (and L1 at most their product).

Which cells a heavy unit keeps depends only on that unit's own data (its largest cells, ties to
the lowest cell index), so the selection itself leaks nothing about anyone else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Hostile or mistaken plans should not make a node allocate or add noise to absurd tables.
MAX_CELLS_PER_UNIT = 10_000
MAX_PER_CELL = 1_000_000


class InvalidBound(ValueError):
    """A contribution bound that is zero, negative or absurd."""


@dataclass(frozen=True, slots=True)
class ContributionBound:
    max_cells: int
    max_per_cell: int

    def __post_init__(self) -> None:
        if not (1 <= self.max_cells <= MAX_CELLS_PER_UNIT):
            raise InvalidBound(
                f"max_cells must be between 1 and {MAX_CELLS_PER_UNIT}, got {self.max_cells}"
            )
        if not (1 <= self.max_per_cell <= MAX_PER_CELL):
            raise InvalidBound(
                f"max_per_cell must be between 1 and {MAX_PER_CELL}, got {self.max_per_cell}"
            )

    @property
    def l2_sensitivity(self) -> float:
        return self.max_per_cell * math.sqrt(self.max_cells)

    @property
    def l1_sensitivity(self) -> int:
        return self.max_per_cell * self.max_cells


def bounded_histogram(
    unit: npt.NDArray[np.int64],
    cell: npt.NDArray[np.int64],
    weight: npt.NDArray[np.int64],
    n_cells: int,
    bound: ContributionBound,
) -> npt.NDArray[np.int64]:
    """Sum ``weight`` per cell after capping each unit's contribution.

    ``unit[i]`` is the privacy unit of row i, ``cell[i]`` its cell index in [0, n_cells) (rows
    outside the key set must be removed by the caller), ``weight[i]`` its non-negative count.
    """
    if not (unit.shape == cell.shape == weight.shape) or unit.ndim != 1:
        raise ValueError("unit, cell and weight must be 1-d arrays of equal length")
    if n_cells < 1:
        raise ValueError("a histogram needs at least one cell")
    if unit.size == 0:
        return np.zeros(n_cells, dtype=np.int64)
    if int(cell.min()) < 0 or int(cell.max()) >= n_cells:
        raise ValueError("cell index out of range")
    if int(weight.min()) < 0:
        raise ValueError("weights must be non-negative")

    # 1. Total per (unit, cell): one entry per distinct pair.
    pair = np.stack([unit, cell])
    pairs, inverse = np.unique(pair, axis=1, return_inverse=True)
    totals = np.zeros(pairs.shape[1], dtype=np.int64)
    np.add.at(totals, inverse.ravel(), weight)
    pair_unit, pair_cell = pairs[0], pairs[1]

    # 2. Cap what one unit adds to one cell.
    clipped = np.minimum(totals, bound.max_per_cell)

    # 3. Keep each unit's max_cells largest cells (ties: lowest cell index first).
    order = np.lexsort((pair_cell, -clipped, pair_unit))
    sorted_unit = pair_unit[order]
    starts = np.flatnonzero(np.r_[True, sorted_unit[1:] != sorted_unit[:-1]])
    run_id = np.cumsum(np.r_[True, sorted_unit[1:] != sorted_unit[:-1]]) - 1
    rank = np.arange(sorted_unit.size) - starts[run_id]
    keep = order[rank < bound.max_cells]

    out = np.zeros(n_cells, dtype=np.int64)
    np.add.at(out, pair_cell[keep], clipped[keep])
    return out
