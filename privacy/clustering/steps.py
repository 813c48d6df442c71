"""The steps of a federated DP k-means: what each customer adds, its sensitivity, and decoding.

Every step is one secure-aggregation round. Each node routes every customer to one cell and adds
a small per-customer vector to that cell; the coordinator only ever sees the sum over nodes, with
distributed discrete Gaussian noise in it. Per customer, in the scaled space, with ``x`` the row
relative to the public origin and clipped to the public radius R (``FeatureSpace.centred``):

| step | cells | per cell, what one customer adds | L2 norm at most |
|---|---|---|---|
| ``TreeLevel`` | the cells listed | (1, a <v, x>), v the cell's next direction | sqrt(1+a^2 R^2) |
| ``TreeLeaves`` | the leaves listed | (1, x) | sqrt(1+R^2) |
| ``LloydStep`` | the nearest centre | (1, x, b min(\\|x - c\\|^2, R^2)) | sqrt(1+R^2+(b R^2)^2) |

A customer touches one cell, so these norms are the sensitivities of the whole vector under
adding or removing a customer. Values are encoded as integers at ``SCALE`` steps per unit,
per customer, before summing: rounding moves each of the m real entries of a cell by at most
1/2, so the encoded sensitivity is ``SCALE * norm + sqrt(m) / 2`` (the count, 1 * SCALE, is
exact). ``a = 0.5`` makes the split positions cost a quarter of R^2 extra instead of all of it:
they need to be roughly right, not exact. ``b = 0.5 / R^2`` gives each Lloyd round a noisy
k-means cost (for the stopping rule and the model card) for a few percent more noise.

Nothing random happens here; the noise is added by the node's secure-aggregation client.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from privacy.clustering.space import FeatureSpace, FloatMatrix
from privacy.clustering.tree import PartitionTree, depth

SCALE: Final[int] = 2**10
PROJECTION_WEIGHT: Final[float] = 0.5
COST_WEIGHT_TIMES_R2: Final[float] = 0.5
MAX_CELLS: Final[int] = 20_000
MAX_CENTRES: Final[int] = 64
IntVector = npt.NDArray[np.int64]


class InvalidStep(ValueError):
    pass


def _check_cells(cells: tuple[int, ...]) -> None:
    if not 1 <= len(cells) <= MAX_CELLS:
        raise InvalidStep(f"a step lists 1 to {MAX_CELLS} cells")
    if any(c < 1 for c in cells) or any(b <= a for a, b in itertools.pairwise(cells)):
        raise InvalidStep("cells must be positive, sorted and without repeats")


@dataclass(frozen=True, slots=True)
class TreeLevel:
    """Count the customers of each listed cell and sum their projection on its next direction."""

    tree: PartitionTree
    cells: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_cells(self.cells)

    @property
    def per_cell(self) -> int:
        return 2


@dataclass(frozen=True, slots=True)
class TreeLeaves:
    """Count and sum the customers of each listed leaf: the private coreset."""

    tree: PartitionTree
    cells: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_cells(self.cells)

    @property
    def per_cell(self) -> int:
        return 1 + self.tree.dim


@dataclass(frozen=True, slots=True)
class LloydStep:
    """Count, sum and cost of the customers nearest each centre (scaled coordinates)."""

    centres: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.centres) <= MAX_CENTRES:
            raise InvalidStep(f"a Lloyd step has 1 to {MAX_CENTRES} centres")
        dim = len(self.centres[0])
        for c in self.centres:
            if len(c) != dim or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in c):
                raise InvalidStep("centres must be finite, of one dimension, in the scaled box")

    @property
    def k(self) -> int:
        return len(self.centres)

    @property
    def per_cell(self) -> int:
        return 2 + len(self.centres[0])

    def matrix(self) -> FloatMatrix:
        return np.asarray(self.centres, dtype=np.float64)


Step = TreeLevel | TreeLeaves | LloydStep


def step_dim(step: Step) -> int:
    return step.tree.dim if isinstance(step, TreeLevel | TreeLeaves) else len(step.centres[0])


def n_cells(step: Step) -> int:
    """Length of the summed vector."""
    cells = step.k if isinstance(step, LloydStep) else len(step.cells)
    return cells * step.per_cell


def _norm(step: Step, radius: float) -> float:
    if isinstance(step, TreeLevel):
        return math.sqrt(1.0 + (PROJECTION_WEIGHT * radius) ** 2)
    if isinstance(step, TreeLeaves):
        return math.sqrt(1.0 + radius**2)
    return math.sqrt(1.0 + radius**2 + COST_WEIGHT_TIMES_R2**2)


def l2_sensitivity(step: Step, radius: float) -> float:
    """Of the encoded vector, under adding or removing one customer."""
    rounded = step.per_cell - 1  # the count entry is exact
    return SCALE * _norm(step, radius) + math.sqrt(rounded) / 2.0


def l1_sensitivity(step: Step, radius: float) -> float:
    return math.sqrt(step.per_cell) * l2_sensitivity(step, radius)


def nearest(scaled: FloatMatrix, centres: FloatMatrix) -> npt.NDArray[np.int64]:
    """Index of the nearest centre of every row (ties: the lowest index)."""
    d2 = (centres**2).sum(axis=1)[None, :] - 2.0 * scaled @ centres.T
    return np.asarray(d2.argmin(axis=1), dtype=np.int64)


def _cell_sums(cell: npt.NDArray[np.int64], rows: IntVector, n: int) -> IntVector:
    out = np.zeros((n, rows.shape[1]), dtype=np.int64)
    np.add.at(out, cell, rows)
    return out


def contribution(step: Step, space: FeatureSpace, scaled: FloatMatrix) -> IntVector:
    """The node's noiseless, encoded vector for this step (it never leaves the node as is)."""
    if step_dim(step) != space.dim:
        raise InvalidStep(f"the step has {step_dim(step)} features, the space {space.dim}")
    x = space.centred(scaled)
    n = x.shape[0]
    if isinstance(step, LloydStep):
        centres = step.matrix()
        cell = nearest(scaled, centres)
        diff = x - (centres[cell] - np.asarray(space.origin))
        cost = np.minimum((diff**2).sum(axis=1), space.radius**2)
        cost_weight = COST_WEIGHT_TIMES_R2 / space.radius**2
        per = np.column_stack([np.ones(n), x, cost_weight * cost])
        return _encode(cell, per, step.k)
    cells = np.asarray(step.cells, dtype=np.int64)
    routed = step.tree.route(x)
    pos = np.searchsorted(cells, routed)
    inside = pos < cells.size
    inside[inside] = cells[pos[inside]] == routed[inside]
    pos, x = pos[inside], x[inside]
    if isinstance(step, TreeLevel):
        levels = np.asarray([depth(int(c)) for c in step.cells], dtype=np.int64)
        directions = np.vstack([np.asarray(step.tree.directions), np.zeros((1, space.dim))])
        # A cell at the last level has no next direction: its projection entry stays 0.
        v = directions[np.minimum(levels, step.tree.levels)][pos]
        proj = PROJECTION_WEIGHT * (x * v).sum(axis=1)
        per = np.column_stack([np.ones(pos.size), proj])
    else:
        per = np.column_stack([np.ones(pos.size), x])
    return _encode(pos, per, cells.size)


def _encode(cell: npt.NDArray[np.int64], per_customer: FloatMatrix, cells: int) -> IntVector:
    # Each customer's vector is rounded on its own, so the bound on one customer holds exactly.
    encoded = np.rint(per_customer * SCALE).astype(np.int64)
    return _cell_sums(cell, encoded, cells).reshape(-1)


@dataclass(frozen=True, slots=True)
class CellSums:
    """A step's summed vector decoded: per cell a noisy count and noisy real-valued sums."""

    counts: npt.NDArray[np.float64]
    sums: FloatMatrix  # cells x (per_cell - 1)


def decode(step: Step, total: npt.ArrayLike) -> CellSums:
    v = np.asarray(total, dtype=np.float64)
    if v.shape != (n_cells(step),):
        raise InvalidStep(f"expected {n_cells(step)} values, got shape {v.shape}")
    m = v.reshape(-1, step.per_cell) / SCALE
    return CellSums(counts=m[:, 0], sums=m[:, 1:])


def mean_projections(step: TreeLevel, sums: CellSums) -> npt.NDArray[np.float64]:
    return np.asarray(
        sums.sums[:, 0] / PROJECTION_WEIGHT / np.maximum(sums.counts, 1.0), dtype=np.float64
    )


def means(space: FeatureSpace, counts: npt.ArrayLike, sums: FloatMatrix) -> FloatMatrix:
    """origin + sum / count, projected onto the public box (post-processing)."""
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return space.clip_to_box(np.asarray(space.origin) + sums[:, : space.dim] / n[:, None])


def costs(step: LloydStep, space: FeatureSpace, sums: CellSums) -> npt.NDArray[np.float64]:
    """Noisy sum of (clipped) squared distances to each centre, in scaled units."""
    return np.asarray(sums.sums[:, -1] * space.radius**2 / COST_WEIGHT_TIMES_R2)
