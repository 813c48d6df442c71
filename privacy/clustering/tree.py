"""The partition tree of the private initialisation: a random-projection tree grown on DP counts.

Following Chang, Ghazi, Kumar & Manurangsi's practical DP clustering (Google, 2021:
"Locally Private k-Means in One Round", ICML 2021, and the central-model library
``google/differential-privacy/learning/clustering``), the data is split by a tree of random
hyperplanes; a node of the tree is split again only while its *noisy* count is large, so the
leaves are regions holding enough customers for their noisy mean to be accurate, fine where the
data is dense and coarse where it is not. Each leaf's noisy count and noisy mean make a private
weighted coreset, and ordinary k-means++ on that coreset (post-processing, free) gives initial
centres near the best ones.

Where Google's tree splits every node at the origin (SimHash: the cells are cones), ours splits
each node through its own noisy centre along the level's direction (a random-projection tree,
Dasgupta & Freund 2008): a node's mean projection on the next direction is summed with its
count in the same round, at a small extra cost in sensitivity. Cells then follow the data
instead of meeting at one point; on the synthetic sector this gave initial centres that needed
fewer Lloyd rounds (docs/segmentation.md has the measurements).

Cells are numbered as in a binary heap: the root is 1 and the children of cell c are 2c (the
side below the split) and 2c + 1 (at or above it), so a cell's depth is its bit length - 1.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from privacy.clustering.space import FloatMatrix

ROOT: Final[int] = 1
MAX_DEPTH: Final[int] = 30
MAX_SPLITS: Final[int] = 100_000
IntArray = npt.NDArray[np.int64]


class InvalidTree(ValueError):
    """A tree that is not one: unsorted or orphan splits, bad directions, too deep."""


def depth(cell: int) -> int:
    return cell.bit_length() - 1


def children(cell: int) -> tuple[int, int]:
    return 2 * cell, 2 * cell + 1


@dataclass(frozen=True, slots=True)
class PartitionTree:
    """``directions[l]`` splits the cells of depth l; ``splits`` holds (cell, offset) for every
    internal cell, sorted by cell: a row goes to 2c + 1 when its projection is >= the offset."""

    directions: tuple[tuple[float, ...], ...]
    splits: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= len(self.directions) <= MAX_DEPTH:
            raise InvalidTree(f"a tree has 1 to {MAX_DEPTH} levels")
        dim = len(self.directions[0])
        for v in self.directions:
            if len(v) != dim or not all(math.isfinite(x) for x in v):
                raise InvalidTree("directions must be finite and of one dimension")
            if abs(math.fsum(x * x for x in v) - 1.0) > 1e-6:
                raise InvalidTree("directions must be unit vectors")
        if len(self.splits) > MAX_SPLITS:
            raise InvalidTree(f"a tree has at most {MAX_SPLITS} splits")
        cells = [c for c, _ in self.splits]
        if any(b <= a for a, b in itertools.pairwise(cells)):
            raise InvalidTree("splits must be sorted by cell, without repeats")
        known = set(cells)
        for c, offset in self.splits:
            if c < ROOT or depth(c) >= len(self.directions):
                raise InvalidTree(f"cell {c} is outside a tree of {len(self.directions)} levels")
            if c != ROOT and c // 2 not in known:
                raise InvalidTree(f"cell {c} is split but its parent {c // 2} is not")
            if not math.isfinite(offset):
                raise InvalidTree(f"cell {c} has a non-finite offset")

    @property
    def dim(self) -> int:
        return len(self.directions[0])

    @property
    def levels(self) -> int:
        return len(self.directions)

    def route(self, centred: FloatMatrix) -> IntArray:
        """The cell each row ends in: it descends while its cell is split."""
        x = np.asarray(centred, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected rows of {self.dim} features, got shape {x.shape}")
        cell = np.full(x.shape[0], ROOT, dtype=np.int64)
        if not self.splits or x.shape[0] == 0:
            return cell
        split_cells = np.asarray([c for c, _ in self.splits], dtype=np.int64)
        offsets = np.asarray([o for _, o in self.splits], dtype=np.float64)
        projections = x @ np.asarray(self.directions, dtype=np.float64).T
        for level in range(self.levels):
            pos = np.searchsorted(split_cells, cell)
            inside = pos < split_cells.size
            inside[inside] = split_cells[pos[inside]] == cell[inside]
            if not inside.any():
                break
            above = projections[inside, level] >= offsets[pos[inside]]
            cell[inside] = 2 * cell[inside] + above
        return cell

    def with_splits(self, new: dict[int, float]) -> PartitionTree:
        merged = dict(self.splits)
        merged.update(new)
        return PartitionTree(self.directions, tuple(sorted(merged.items())))


@dataclass(frozen=True, slots=True)
class GrowthRule:
    """When a cell is kept (``min_points``) and when it is split again (``min_branch``), by its
    noisy count. Google's library keeps a node with at least ``min_points`` and branches one with
    three times that; the values come from the noise of the leaf round (see ``budget``)."""

    min_points: float
    min_branch: float
    max_depth: int

    def __post_init__(self) -> None:
        if not (self.min_points >= 1 and self.min_branch >= self.min_points):
            raise ValueError("need 1 <= min_points <= min_branch")
        if not 1 <= self.max_depth <= MAX_DEPTH:
            raise ValueError(f"max_depth must be 1..{MAX_DEPTH}")


@dataclass(frozen=True, slots=True)
class Growth:
    """Where the tree stands between rounds: what to count next, and the leaves so far."""

    tree: PartitionTree
    frontier: tuple[int, ...]  # cells to count in the next level round (empty: done)
    leaves: tuple[int, ...]  # cells that exist and are not split


def grow(
    tree: PartitionTree,
    cells: tuple[int, ...],
    counts: npt.NDArray[np.float64],
    mean_projections: npt.NDArray[np.float64],
    leaves: tuple[int, ...],
    rule: GrowthRule,
) -> Growth:
    """After a level round over ``cells``: drop the cells with too few customers, split the
    big ones through their noisy mean projection, and keep the rest as leaves."""
    split: dict[int, float] = {}
    kept_leaves = list(leaves)
    for cell, n, mean in zip(cells, counts, mean_projections, strict=True):
        if n < rule.min_points:
            continue  # too few to describe privately: its customers join no leaf
        if n >= rule.min_branch and depth(cell) < min(rule.max_depth, tree.levels):
            split[cell] = float(mean)
        else:
            kept_leaves.append(cell)
    frontier = tuple(sorted(c for cell in split for c in children(cell)))
    return Growth(tree.with_splits(split), frontier, tuple(sorted(kept_leaves)))
