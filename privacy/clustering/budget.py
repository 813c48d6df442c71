"""How a federated k-means spends its privacy budget, round by round, and grows its tree.

The total per node (zCDP rho) is split, exactly, into three parts:

- the partition tree's level rounds (root plus up to ``max_depth`` levels): ``TREE_SHARE``,
  equally per level. A level costs little: it only decides where to cut;
- the leaf round (the private coreset): ``LEAVES_SHARE``, plus the share of every level the
  tree did not need. The initial centres are as good as the leaves' means, so it gets most;
- the Lloyd rounds: the rest, in ``max_lloyd_rounds - 1 + FINAL_WEIGHT`` equal shares: one per
  round, ``FINAL_WEIGHT`` for the last, whose noisy means are the published centres. When the
  stopping rule ends the rounds early, what is left goes into that final round too, so the
  centres that are published come from the most precise round. Nothing beyond the declared
  total is ever spent.

Shares were chosen by measurement on the synthetic sector (docs/segmentation.md): initial centres
matter more than Lloyd noise once tens of thousands of customers take part, so 60% of the budget
goes to the initialisation. Weighting the final Lloyd round 3x (instead of equal rounds) lowered
the median cost ratio from about 1.033 to 1.022 over 18 fits on three synthetic sectors.

zCDP composes by adding rho (Bun & Steinke 2016), so the node's total is the sum of the rounds
it answered; each round is charged in its ledger before it answers.
Choosing a round's rho from what earlier (noisy) rounds showed (unused levels, an early stop)
is adaptive composition under a fixed cap: a zCDP privacy filter (Rogers, Roth, Ullman & Vadhan
2016; Feldman & Zrnic 2021 for Renyi DP, of which zCDP is a special case) keeps the total at the
cap whatever the rounds showed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from privacy.budget import Rho
from privacy.clustering.tree import MAX_DEPTH, GrowthRule

TREE_SHARE: Final[Fraction] = Fraction(3, 20)
LEAVES_SHARE: Final[Fraction] = Fraction(9, 20)
DEFAULT_MAX_DEPTH: Final[int] = 16
DEFAULT_LLOYD_ROUNDS: Final[int] = 8
FINAL_WEIGHT: Final[int] = 3
# Google's default keeps a node when it holds at least 10 * sqrt(d) times the noise sd of its
# mean's sum (radius 1); ours measures the sd with the count entry in the leaf's sensitivity,
# and 1.5 gave finer leaves and better initial centres on the synthetic sector
# (docs/segmentation.md has the sweep).
MIN_POINTS_NOISE_MULTIPLE: Final[float] = 1.5
BRANCH_FACTOR: Final[float] = 3.0
# However large the budget, at most this many leaves: the leaf round's vector stays small
# (leaves x (1 + d) values) and the coreset k-means quick.
MAX_LEAVES: Final[int] = 1500


@dataclass(frozen=True, slots=True)
class Schedule:
    total: Rho
    k: int
    max_depth: int = DEFAULT_MAX_DEPTH
    max_lloyd_rounds: int = DEFAULT_LLOYD_ROUNDS

    def __post_init__(self) -> None:
        if self.total.is_zero():
            raise ValueError("a k-means needs a positive budget")
        if not 1 <= self.k <= 64:
            raise ValueError("k must be 1..64")
        if not 1 <= self.max_depth <= MAX_DEPTH:
            raise ValueError(f"max_depth must be 1..{MAX_DEPTH}")
        if not 1 <= self.max_lloyd_rounds <= 50:
            raise ValueError("max_lloyd_rounds must be 1..50")

    @property
    def level_rho(self) -> Rho:
        """Each tree level round, the root's included (max_depth + 1 of them at most)."""
        return Rho(self.total.value * TREE_SHARE / (self.max_depth + 1))

    @property
    def leaves_rho(self) -> Rho:
        return Rho(self.total.value * LEAVES_SHARE)

    def leaves_rho_after(self, level_rounds: int) -> Rho:
        """The leaf round's budget once the tree took ``level_rounds`` rounds (the root's
        included): its own share plus every level round the tree did not need."""
        unused = max(0, self.max_depth + 1 - level_rounds)
        return Rho(self.leaves_rho.value + self.level_rho.value * unused)

    @property
    def lloyd_share(self) -> Rho:
        return Rho(self.total.value * (1 - TREE_SHARE - LEAVES_SHARE))

    def lloyd_rho(self, rounds_left: int, final: bool) -> Rho:
        """One Lloyd round's budget: a share, or everything left for the final one.

        The Lloyd budget is ``max_lloyd_rounds - 1 + FINAL_WEIGHT`` shares: every round but the
        last takes one, the last takes ``FINAL_WEIGHT`` (plus the shares of rounds a stopping
        rule skipped). Earlier rounds only steer the centres; the final round's noisy means are
        the published model, so its noise is what the model's cost pays for."""
        share = self.lloyd_share.value / (self.max_lloyd_rounds - 1 + FINAL_WEIGHT)
        if final or rounds_left == 1:
            return Rho(share * (rounds_left - 1 + FINAL_WEIGHT))
        return Rho(share)

    @property
    def most(self) -> Rho:
        """The most a fit can cost a node (all levels and all Lloyd rounds)."""
        return Rho(
            self.level_rho.value * (self.max_depth + 1)
            + self.leaves_rho.value
            + self.lloyd_share.value
        )


def noise_sd(sensitivity: float, rho: Rho) -> float:
    """Central-equivalent Gaussian sd for a sensitivity at rho (rho = D^2 / (2 sigma^2))."""
    return sensitivity / math.sqrt(2.0 * float(rho))


def growth_rule(schedule: Schedule, dim: int, radius: float, customers: float) -> GrowthRule:
    """Keep a cell once its leaf mean would be accurate enough; never demand more than half a
    cluster's share of the (noisy) number of customers, so k clusters can always be told apart.

    ``customers`` is the root's noisy count; the leaf round's noise sd is per coordinate of a
    leaf's sum (its sensitivity is that of ``TreeLeaves``: sqrt(1 + R^2))."""
    sd = noise_sd(math.sqrt(1.0 + radius**2), schedule.leaves_rho)
    wanted = MIN_POINTS_NOISE_MULTIPLE * math.sqrt(dim) * sd
    min_points = max(1.0, customers / MAX_LEAVES, min(wanted, customers / (2 * schedule.k)))
    return GrowthRule(min_points, BRANCH_FACTOR * min_points, schedule.max_depth)
