"""The k-means query: one round of the shared audience segmentation (S12), summed securely.

A ``KMeansQuery`` travels in a secure-aggregation setup like a histogram does. It names the
public feature space (every bound, the scaling, the origin and the radius that fix what one
customer can add), the step, and its cost. The steps:

- ``TreeLevel``, ``TreeLeaves``, ``LloydStep``: the fit itself (``privacy.clustering.steps``);
- ``SegmentCounts``: applying a fitted model, S12's published tables: customers by their nearest
  centre and one public dimension (home region, discipline, ...), a histogram whose contribution
  bound is ``max_cells`` cells of 1 (a customer who visits three disciplines counts once in each
  of at most ``max_cells`` of them).

Secure mode only: an institution's own segment counts are never seen on their own.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Final

from privacy.budget import Rho
from privacy.clustering import steps as kmeans_steps
from privacy.clustering.space import FeatureSpace
from privacy.clustering.steps import MAX_CENTRES, LloydStep, TreeLeaves, TreeLevel
from privacy.clustering.tree import depth
from protocols.dimensions import dimension_problems
from protocols.errors import ErrorCode, MalformedMessage
from protocols.messages import MAX_CELLS, MECHANISMS, Dimension, ReleaseMode

# What a customer can be counted by in S12: one key per customer, or (discipline) several.
SEGMENT_DIMENSIONS: Final[tuple[str, ...]] = (
    "region",
    "discipline",
    "institution_region",
    "institution_type",
    "age_band",
    "distance_band",
)
_STATISTIC: Final[re.Pattern[str]] = re.compile(r"^S\d{1,2}$")


def _bad(message: str) -> MalformedMessage:
    return MalformedMessage(message, ErrorCode.INVALID_TASK)


@dataclass(frozen=True, slots=True)
class SegmentCounts:
    """Customers by nearest centre x the keys of one public dimension."""

    centres: tuple[tuple[float, ...], ...]
    dimension: Dimension
    max_cells: int = 1

    def __post_init__(self) -> None:
        try:
            LloydStep(self.centres)  # the same checks on the centres
        except kmeans_steps.InvalidStep as err:
            raise _bad(str(err)) from err
        problems = dimension_problems(self.dimension.name, self.dimension.keys)
        if self.dimension.name not in SEGMENT_DIMENSIONS:
            problems.append(
                f"segments can be counted by {', '.join(SEGMENT_DIMENSIONS)},"
                f" not {self.dimension.name[:40]!r}"
            )
        if not 1 <= self.max_cells <= len(self.dimension.keys):
            problems.append("max_cells must be between 1 and the number of keys")
        if problems:
            raise _bad("; ".join(problems))

    @property
    def k(self) -> int:
        return len(self.centres)

    @property
    def dim(self) -> int:
        return len(self.centres[0])


KMeansStep = TreeLevel | TreeLeaves | LloydStep | SegmentCounts


def step_name(step: KMeansStep) -> str:
    if isinstance(step, TreeLevel):
        return f"tree level {depth(step.cells[0])} ({len(step.cells)} cells)"
    if isinstance(step, TreeLeaves):
        return f"tree leaves ({len(step.cells)} leaves)"
    if isinstance(step, LloydStep):
        return f"Lloyd step ({step.k} centres)"
    return f"segments by {step.dimension.name} ({step.k} x {len(step.dimension.keys)} cells)"


@dataclass(frozen=True, slots=True)
class KMeansQuery:
    statistic: str
    space: FeatureSpace
    step: KMeansStep
    rho: Rho
    mode: ReleaseMode = ReleaseMode.SECURE
    as_of: str = ""  # ISO date the features are measured at; empty: each node's own
    mechanism: str = "discrete_gaussian"

    def __post_init__(self) -> None:
        problems = []
        if not _STATISTIC.match(self.statistic):
            problems.append("statistic must be like 'S12'")
        if self.mode is not ReleaseMode.SECURE:
            problems.append("a k-means round runs in secure mode only")
        if self.mechanism not in MECHANISMS:
            problems.append(f"unknown mechanism {self.mechanism[:40]!r}")
        if self.rho.is_zero():
            problems.append("rho must be positive")
        if self.as_of:
            try:
                date.fromisoformat(self.as_of)
            except ValueError:
                problems.append(f"as_of must be a date like 2024-12-31, got {self.as_of[:20]!r}")
        step_dim = (
            self.step.dim
            if isinstance(self.step, SegmentCounts)
            else kmeans_steps.step_dim(self.step)
        )
        if step_dim != self.space.dim:
            problems.append(f"the step has {step_dim} features, the space {self.space.dim}")
        if not problems and self.n_cells > MAX_CELLS:
            problems.append(f"the round sums {self.n_cells} values (at most {MAX_CELLS})")
        if problems:
            raise _bad("; ".join(problems))

    @property
    def n_cells(self) -> int:
        if isinstance(self.step, SegmentCounts):
            return self.step.k * len(self.step.dimension.keys)
        return kmeans_steps.n_cells(self.step)

    @property
    def l2_sensitivity(self) -> float:
        if isinstance(self.step, SegmentCounts):
            return math.sqrt(self.step.max_cells)
        return kmeans_steps.l2_sensitivity(self.step, self.space.radius)

    @property
    def l1_sensitivity(self) -> float:
        if isinstance(self.step, SegmentCounts):
            return float(self.step.max_cells)
        return kmeans_steps.l1_sensitivity(self.step, self.space.radius)

    def describe(self) -> str:
        return f"{self.statistic}: segmentation, {step_name(self.step)} ({self.mode.value} mode)"


__all__ = ["MAX_CENTRES", "KMeansQuery", "KMeansStep", "SegmentCounts", "step_name"]
