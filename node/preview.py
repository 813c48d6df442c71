"""``publiek-node preview PLAN``: what this node would release for a plan, at what cost, and
whether its own policy and budget accept it, before it joins a run.

Nothing here talks to anyone or spends anything: the plan is read, the ledger is only looked at
(not created when it does not exist yet), and the data is read only for ``--show-values``. The
noise figures are computed the way a real task computes them (``mechanism_for`` in open mode,
``protocols.secagg.noise_share`` in secure mode), so the preview cannot drift from what happens.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from node.config import NodeConfig
from node.data import TicketTable
from node.ledger import Ledger
from node.policy import Policy
from node.queries import bounded_counts, effective_bound, mechanism_for, unsupported
from node.reach_preview import ReachPreview, preview_reach, render_reach
from node.segment_preview import SegmentationPreview, preview_segmentation, render_segmentation
from privacy.budget import Rho
from privacy.noise import IntVector
from protocols.messages import MEASURES, HistogramQuery, ReleaseMode
from protocols.plan import Analysis, Plan
from protocols.secagg import SecAggSetup, noise_share


@dataclass(frozen=True, slots=True)
class Budget:
    cap: str  # e.g. "rho 1 per year"
    period: str  # the current period's key, e.g. "2026"
    spent: Rho
    remaining: Rho


@dataclass(frozen=True, slots=True)
class Noise:
    """The noise this node adds to each cell, and what the released cell carries."""

    own_scale: float  # the discrete Gaussian scale this node adds (open: all of it)
    released_scale: float  # the scale in what the coordinator sees (secure: the sum at n_min)
    half_width_95: float  # of the released cell


@dataclass(frozen=True, slots=True)
class AnalysisPreview:
    analysis: Analysis
    epsilon: float
    noise: Noise
    refusals: tuple[str, ...]
    values: IntVector | None = None

    @property
    def accepted(self) -> bool:
        return not self.refusals


@dataclass(frozen=True, slots=True)
class PlanPreview:
    plan: Plan
    institution: str
    participants: int
    budget: Budget
    analyses: tuple[AnalysisPreview, ...]
    charged: Rho  # what the accepted analyses would cost this node
    segmentations: tuple[SegmentationPreview, ...] = ()
    reaches: tuple[ReachPreview, ...] = ()

    @property
    def accepted(self) -> bool:
        return (
            all(a.accepted for a in self.analyses)
            and all(s.accepted for s in self.segmentations)
            and all(r.accepted for r in self.reaches)
        )


def read_budget(config: NodeConfig) -> Budget:
    """What the ledger says is left this period, without creating a ledger that is not there."""
    period = config.cap.period.key(datetime.now(UTC))
    if not config.ledger_path.exists():
        return Budget(str(config.cap), period, Rho.zero(), config.cap.rho)
    ledger = Ledger(config.ledger_path, config.cap)
    try:
        return Budget(str(config.cap), period, ledger.spent(), ledger.remaining())
    finally:
        ledger.close()


def _noise(plan: Plan, query: HistogramQuery, participants: int) -> Noise:
    if query.mode is ReleaseMode.OPEN:
        full = mechanism_for(query).noise
        return Noise(full.scale, full.scale, full.half_width(0.95))
    ids = tuple(f"node-{i:06d}" for i in range(participants))
    setup = SecAggSetup(query, ids, plan.min_nodes, degree=participants - 1, threshold=1)
    shares = noise_share(setup)
    return Noise(
        shares.share_scale,
        shares.total_scale(plan.min_nodes),
        shares.half_width(plan.min_nodes),
    )


def preview_plan(
    plan: Plan,
    config: NodeConfig,
    participants: int,
    budget: Budget,
    table: TicketTable | None = None,
) -> PlanPreview:
    """Every analysis with its cost, noise and verdict; ``table`` adds this node's own values."""
    policy: Policy = config.policy
    previews = []
    # A preview is a fresh run: what the plan's earlier accepted analyses charge counts against
    # the run cap and the budget, exactly as the ledger would count it; a refusal charges nothing.
    charged = Rho.zero()
    for analysis in plan.analyses:
        q = analysis.query
        reasons = [f"this node cannot compute {what}" for what in unsupported(q)]
        n_min = plan.min_nodes if q.mode is ReleaseMode.SECURE else None
        reasons += policy.reasons(q, n_min=n_min, spent_in_run=charged)
        if not reasons and charged + q.rho > budget.remaining:
            reasons.append(
                f"the budget would run out: rho {_left(budget.remaining, charged)} would be left"
                f" this period after the analyses before it, and this one costs rho {q.rho}"
            )
        if not reasons:
            charged = charged + q.rho
        values = (
            bounded_counts(table, q, config.institution_type, config.institution_region)
            if table is not None
            else None
        )
        previews.append(
            AnalysisPreview(
                analysis=analysis,
                epsilon=q.rho.to_approx_dp(plan.delta).epsilon,
                noise=_noise(plan, q, participants),
                refusals=tuple(reasons),
                values=values,
            )
        )
    segmentations = []
    for seg in plan.segmentations:
        sp = preview_segmentation(
            seg, policy, plan.min_nodes, plan.delta, charged, budget.remaining
        )
        if sp.accepted:
            charged = charged + seg.total_rho
        segmentations.append(sp)
    reaches = []
    for reach in plan.reaches:
        rp = preview_reach(
            reach,
            policy,
            plan.min_nodes,
            participants,
            plan.delta,
            charged,
            budget.remaining,
            has_match_keys=config.match_key_file is not None,
        )
        if rp.accepted:
            charged = charged + reach.total_rho
        reaches.append(rp)
    return PlanPreview(
        plan,
        config.institution_id,
        participants,
        budget,
        tuple(previews),
        charged,
        tuple(segmentations),
        tuple(reaches),
    )


def _left(remaining: Rho, spent: Rho) -> Rho:
    return remaining - spent if spent <= remaining else Rho.zero()


# --- rendering ---------------------------------------------------------------------------------


def _unit(measure: str) -> str:
    return "cents" if measure == "revenue_cents" else measure


def _amount(value: float, measure: str, digits: int = 0) -> str:
    """``value`` in the measure's unit; cents also in euros (a plan's bound is in cents).

    Small noise scales get one more digit: a booker table's share is often below 1.
    """
    digits = digits + 1 if digits and value < 10 else digits
    text = f"{value:,.{digits}f}"
    if measure == "revenue_cents":
        return f"{text} cents (€{value / 100:,.{max(digits, 2) if value < 100 else 0}f})"
    unit = measure if value != 1 else measure.removesuffix("s")
    return f"{text} {unit}"


def _measure_text(measure: str) -> str:
    description = MEASURES.get(measure, "").removeprefix(f"{measure}: ")
    return f"{measure}: {description}" if description and description != measure else measure


def _mode_text(plan: Plan, short: bool = False) -> str:
    if plan.mode is ReleaseMode.SECURE:
        if short:
            return "secure: only ever seen summed with other institutions"
        return (
            f"secure: your answers are only ever seen summed with other institutions' (nothing"
            f" is released unless at least {plan.min_nodes} contributions are in the sum)"
        )
    return "open: the coordinator sees your own noisy table"


def render(preview: PlanPreview, plan_path: Path | None = None) -> str:
    plan, budget = preview.plan, preview.budget
    total = plan.rho_per_node
    lines = [
        f"Plan {plan.id}: {plan.title}",
        *([f"  file {plan_path} (sha256 {plan.sha256[:16]}...)"] if plan_path else []),
        f"  for {preview.institution}; mode {_mode_text(plan)}",
    ]
    if plan.mode is ReleaseMode.SECURE:
        lines.append(
            f"  noise shares computed for {preview.participants} participating institutions"
            " (--participants)"
        )
    lines += [
        "",
        f"Budget: rho {budget.remaining} is left of your cap ({budget.cap}; period"
        f" {budget.period}, rho {budget.spent} spent so far).",
        f"  The plan costs rho {total} ({total.to_approx_dp(plan.delta)}) if every analysis is"
        " answered.",
    ]
    if preview.charged != total:
        lines.append(
            f"  What this node would answer costs rho {preview.charged}"
            f" ({preview.charged.to_approx_dp(plan.delta)})."
        )
    lines.append(f"  Left after this plan: rho {_left(budget.remaining, preview.charged)}.")
    for i, a in enumerate(preview.analyses, start=1):
        lines += ["", *_render_analysis(i, a, plan)]
    for i, s in enumerate(preview.segmentations, start=len(preview.analyses) + 1):
        lines += ["", *render_segmentation(i, s, plan.min_nodes)]
    refused = [a.analysis.id for a in preview.analyses if not a.accepted]
    start = len(preview.analyses) + len(preview.segmentations) + 1
    for i, r in enumerate(preview.reaches, start=start):
        lines += ["", *render_reach(i, r, plan.min_nodes)]
    refused += [s.segmentation.id for s in preview.segmentations if not s.accepted]
    refused += [r.reach.id for r in preview.reaches if not r.accepted]
    count = len(preview.analyses) + len(preview.segmentations) + len(preview.reaches)
    lines.append("")
    if refused:
        lines.append(
            f"{len(refused)} of {count} analyses would be refused by this node:"
            f" {', '.join(refused)}."
        )
    else:
        lines.append(f"Your policy and budget accept all {count} analyses of this plan.")
    return "\n".join(lines)


def _render_analysis(i: int, a: AnalysisPreview, plan: Plan) -> list[str]:
    q = a.analysis.query
    bound = effective_bound(q)
    dims = " x ".join(f"{d.name} ({len(d.keys)})" for d in q.dimensions)
    first, last = q.years
    period = str(first) if first == last else f"{first}-{last}"
    bound_note = (
        f" (the plan says {q.bound.max_per_cell}; a booker counts once)"
        if bound.max_per_cell != q.bound.max_per_cell
        else ""
    )
    cells = "cell" if bound.max_cells == 1 else "cells"
    lines = [
        f"[{i}] {a.analysis.id}: {a.analysis.title}",
        f"    statistic  {q.statistic}",
        f"    measure    {_measure_text(q.measure)}, performances of {period}",
        f"    table      {dims} = {q.n_cells} cells",
        f"    bound      one customer adds at most {_amount(bound.max_per_cell, q.measure)} to a"
        f" cell{bound_note}, in at most {bound.max_cells} {cells}"
        f" ({_amount(bound.l1_sensitivity, q.measure)} in all)",
        f"    release    {_mode_text(plan, short=True)}",
        f"    cost       rho {q.rho} (epsilon {a.epsilon:.3g} at delta {plan.delta:.0e})",
    ]
    noise = a.noise
    if q.mode is ReleaseMode.SECURE:
        lines.append(
            f"    noise      you add a discrete Gaussian share of scale"
            f" {_amount(noise.own_scale, q.measure, 1)} to each cell; a sum of {plan.min_nodes}"
            f" carries scale {_amount(noise.released_scale, q.measure, 1)} (95% of cells within"
            f" ±{_amount(noise.half_width_95, q.measure)})"
        )
    else:
        lines.append(
            f"    noise      you add a discrete Gaussian of scale"
            f" {_amount(noise.own_scale, q.measure, 1)} to each cell (95% of cells within"
            f" ±{_amount(noise.half_width_95, q.measure)})"
        )
    if a.accepted:
        lines.append("    policy     accepted")
    else:
        lines.append("    policy     REFUSED:")
        lines += [f"                 - {reason}" for reason in a.refusals]
    if a.values is not None:
        lines += _render_values(q, a.values)
    return lines


def _render_values(q: HistogramQuery, values: IntVector) -> list[str]:
    """This node's own noiseless table: the cells that are not zero."""
    unit = _unit(q.measure)
    cells = list(itertools.product(*(d.keys for d in q.dimensions)))
    shown = [(" x ".join(keys), int(v)) for keys, v in zip(cells, values.tolist(), strict=True)]
    nonzero = [(k, v) for k, v in shown if v]
    out = [
        f"    your values ({unit}; exact, contribution-bounded, before noise: this table never"
        " leaves this node):"
    ]
    width = max((len(k) for k, _ in nonzero), default=0)
    out += [f"      {k:<{width}}  {v:>12,}" for k, v in nonzero]
    out.append(
        f"      total {sum(v for _, v in nonzero):,} {unit};"
        f" {len(shown) - len(nonzero)} of {len(shown)} cells are 0"
    )
    return out
