"""What a plan's segmentation would ask of this node: its rounds, cost, noise and the verdict of
the node's own policy and budget (``publiek-node preview``). Nothing is read or spent."""

from __future__ import annotations

from dataclasses import dataclass

from node.policy import Policy
from privacy.budget import Rho
from privacy.clustering.budget import MAX_LEAVES, Schedule
from privacy.clustering.steps import TreeLeaves
from privacy.clustering.tree import PartitionTree
from protocols.kmeans import KMeansQuery
from protocols.segmentation_plan import STATISTIC, Segmentation


@dataclass(frozen=True, slots=True)
class SegmentationPreview:
    segmentation: Segmentation
    rounds_at_most: int
    largest_round: Rho  # the most any one round (a task) can cost
    epsilon: float  # of the whole segmentation (fit and tables), at the plan's delta
    refusals: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return not self.refusals


def preview_segmentation(
    seg: Segmentation,
    policy: Policy,
    n_min: int,
    delta: float,
    charged_before: Rho,
    remaining: Rho,
) -> SegmentationPreview:
    if seg.model is not None:
        # A given model: no fit, only the table rounds with its centres.
        rounds = len(seg.tables)
        largest = max((t.rho for t in seg.tables), default=Rho.zero())
        centres = tuple(x.centre for x in seg.model.segments)
        queries = [seg.table_query(t, centres) for t in seg.tables]
    else:
        s = Schedule(seg.rho, seg.k, seg.max_depth, seg.max_lloyd_rounds)
        # The tree may stop after its root (the leaves then take every level's share), and
        # the Lloyd rounds may stop after one (the final round then takes the rest).
        largest = max(
            [s.leaves_rho_after(1), s.lloyd_rho(seg.max_lloyd_rounds - 1, final=True)]
            + [t.rho for t in seg.tables]
        )
        rounds = seg.max_depth + 1 + 1 + seg.max_lloyd_rounds + len(seg.tables)
        # The largest vector a fit can ask for: the leaf round at its most leaves.
        tree = PartitionTree(((1.0,) + (0.0,) * (seg.space.dim - 1),))
        leaves = TreeLeaves(tree, tuple(range(2, 2 + MAX_LEAVES)))
        biggest = KMeansQuery(STATISTIC, seg.space, leaves, largest, as_of=seg.as_of)
        # The tables come after the fit with its centres; any centres show their size.
        centres = tuple((0.0,) * seg.space.dim for _ in range(seg.k))
        queries = [biggest, *(seg.table_query(t, centres) for t in seg.tables)]
    # Every round the node would be asked, each against the policy (cells, rho, mode, ...).
    reasons = [
        reason
        for q in queries
        for reason in policy.reasons(q, n_min=n_min, spent_in_run=charged_before)
    ]
    # The run cap counts every round: check the whole segmentation against it too.
    if (
        policy.max_rho_per_run is not None
        and charged_before + seg.total_rho > policy.max_rho_per_run
    ):
        reasons.append(
            f"one run may cost at most rho {policy.max_rho_per_run}; with this segmentation's"
            f" rho {seg.total_rho} it could cost rho {charged_before + seg.total_rho}"
        )
    if not reasons and charged_before + seg.total_rho > remaining:
        reasons.append(
            f"the budget could run out: this segmentation may cost rho {seg.total_rho} and rho"
            f" {remaining - charged_before if charged_before <= remaining else Rho.zero()}"
            " would be left"
        )
    return SegmentationPreview(
        segmentation=seg,
        rounds_at_most=rounds,
        largest_round=largest,
        epsilon=seg.total_rho.to_approx_dp(delta).epsilon,
        refusals=tuple(dict.fromkeys(reasons)),
    )


def render_segmentation(i: int, p: SegmentationPreview, min_nodes: int) -> list[str]:
    seg = p.segmentation
    tables = ", ".join(f"by {t.by} (rho {t.rho})" for t in seg.tables) or "none"
    made = (
        f"the given model {seg.model.model_id} ({seg.model_file}), applied without fitting"
        if seg.model is not None
        else f"federated k-means over {seg.space.dim} customer features (protocols/features.py)"
    )
    what = "tables" if seg.model is not None else "tree levels, leaves, Lloyd, tables"
    spent = "no fit" if seg.model is not None else f"the fit up to rho {seg.rho}"
    lines = [
        f"[{i}] {seg.id}: {seg.title} (S12, the sector's shared segmentation)",
        f"    model      {seg.k} segments by {made}, customers with an account",
        f"    rounds     at most {p.rounds_at_most} secure round(s) ({what}); each is a task"
        " charged on its own",
        f"    per round  one customer adds a vector of bounded norm to one cell: a count of 1 and"
        f" its scaled features (norm at most {seg.space.radius:.3g})",
        f"    release    only sums over at least {min_nodes} institutions; the centres, the"
        " sector's segment shares and S12 tables are published",
        f"    cost       at most rho {seg.total_rho} (epsilon {p.epsilon:.3g}): {spent},"
        f" the tables: {tables}; the largest single round rho {p.largest_round}",
    ]
    if p.accepted:
        lines.append("    policy     accepted")
    else:
        lines.append("    policy     REFUSED:")
        lines += [f"                 - {reason}" for reason in p.refusals]
    return lines
