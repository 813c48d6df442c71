"""What a plan's [[reach]] section would ask of this node: its rounds, what each sends, the cost,
the noise and the verdict of the node's own policy and budget (``publiek-node preview``).
Nothing is read or spent; the noise is computed as the round computes it (``noise_share``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from node.policy import Policy
from privacy.budget import Rho
from protocols.reach import MAX_BUCKETS, MIN_BUCKETS, ReachQuery
from protocols.reach_plan import AUTO, Reach
from protocols.secagg import SecAggSetup, noise_share

# What each round's sum gives the release (docs/reach.md).
GIVES = {
    "sector": "S7 people reached in the sector, S10 people by institutions visited",
    "region": "S7 people by home region, S8 people per 1,000 households",
    "discipline": "S7 people by discipline, S9 people visiting both of two disciplines",
    "institution_type": "S9 people visiting two institution types",
}


@dataclass(frozen=True, slots=True)
class ReachRound:
    query: ReachQuery
    auto_buckets: bool  # the sector sketch's buckets are chosen at run time
    released_scale: float  # noise sd per cell in a sum of n_min contributions


@dataclass(frozen=True, slots=True)
class ReachPreview:
    reach: Reach
    rounds: tuple[ReachRound, ...]
    epsilon: float  # of the whole section at the plan's delta
    refusals: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return not self.refusals


def preview_reach(
    reach: Reach,
    policy: Policy,
    n_min: int,
    participants: int,
    delta: float,
    charged_before: Rho,
    remaining: Rho,
    has_match_keys: bool,
) -> ReachPreview:
    rounds = []
    reasons: list[str] = []
    if not has_match_keys:
        reasons.append(
            "this node has no [matching] key_file (the sector's shared match-key secret): it"
            " would sit this section out"
        )
    ids = tuple(f"node-{i:03d}" for i in range(max(participants, n_min, 2)))
    charged = charged_before
    for by in reach.run_order:
        auto = by == "sector" and dict(reach.buckets).get("sector", AUTO) == AUTO
        q = reach.query(by, "preview")
        noise = noise_share(SecAggSetup(q, ids, n_min=n_min, degree=len(ids) - 1, threshold=1))
        rounds.append(ReachRound(q, auto, noise.total_scale(n_min)))
        reasons += policy.reasons(q, n_min=n_min, spent_in_run=charged)
        charged = charged + q.rho
    if not reasons and charged_before + reach.total_rho > remaining:
        left = remaining - charged_before if charged_before <= remaining else Rho.zero()
        reasons.append(
            f"the budget would run out: this section costs rho {reach.total_rho} and rho {left}"
            " would be left"
        )
    return ReachPreview(
        reach=reach,
        rounds=tuple(rounds),
        epsilon=reach.total_rho.to_approx_dp(delta).epsilon,
        refusals=tuple(dict.fromkeys(reasons)),
    )


def _sends(q: ReachQuery, auto: bool) -> str:
    if q.layout == "pairs":
        return (
            f"your people per pair of {q.by.name.replace('_', ' ')}s they visited with you (at"
            f" most {q.max_cells} each, most visited first) and your people in all:"
            f" {q.n_cells} counts; no hashing, no match key"
        )
    buckets = (
        f"{q.buckets:,} buckets (auto: chosen at run time between {MIN_BUCKETS} and"
        f" {MAX_BUCKETS:,} from the section's first count of people)"
        if auto
        else f"{q.buckets:,} buckets"
    )
    copies = f" in {q.copies} independent copies" if q.copies > 1 else ""
    return (
        f"how many of your people fall in each of {buckets} of a hash of their match key"
        f"{copies}, per {q.by.name.replace('_', ' ')} ({len(q.by.keys)} keys), and your"
        " customers without an e-mail address; the match keys themselves never leave"
    )


def render_reach(i: int, p: ReachPreview, min_nodes: int) -> list[str]:
    reach = p.reach
    lines = [
        f"[{i}] {reach.id}: {reach.title} (S7-S10, people de-duplicated across institutions)",
        f"    rounds     {len(p.rounds)} secure rounds, each a task charged on its own"
        f" ({', '.join(reach.run_order)})",
    ]
    for r in p.rounds:
        q = r.query
        lines += [
            f"    - {q.by.name:<16} sends {_sends(q, r.auto_buckets)}",
            f"      {'':<16} bound: one person adds 1 to at most {int(q.l1_sensitivity)} cell(s)"
            f" (L2 {math.sqrt(q.l1_sensitivity):.3g}); rho {q.rho.shown}; a sum of {min_nodes}"
            f" carries noise of sd {r.released_scale:.3g} per cell",
            f"      {'':<16} gives {GIVES[q.by.name]}",
        ]
    lines += [
        f"    release    only estimates from sums over at least {min_nodes} institutions, with"
        " 95% intervals; no institution's counts, no match key",
        f"    cost       rho {reach.total_rho} (epsilon {p.epsilon:.3g}) for the section",
    ]
    if p.accepted:
        lines.append("    policy     accepted")
    else:
        lines.append("    policy     REFUSED:")
        lines += [f"                 - {reason}" for reason in p.refusals]
    return lines
