"""Adding up the nodes' noisy answers into one table with honest error bars.

The coordinator does not trust a node's description of its own noise: it recomputes the scale
every node must have used from the public query (same code path, ``privacy/``), excludes answers
that do not fit, and states the interval from that, not from what nodes claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from coordinator.rounds import NodeOutcome
from coordinator.secure import SecureRoundResult
from privacy.intervals import sum_half_width
from privacy.mechanisms import GaussianHistogram
from protocols.messages import HistogramAnswer
from protocols.plan import Analysis
from protocols.secagg import noise_share


class RoundFailed(Exception):
    """Too few usable answers: nothing of this analysis is released."""


@dataclass(frozen=True, slots=True)
class AggregatedTable:
    analysis: Analysis
    contributors: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...]
    sums: tuple[int, ...]
    per_node_scale: float
    sd_total: float
    half_width_95: float
    # Secure mode only: the round's public facts, for the release's provenance.
    secure_round: dict[str, object] | None = None


def _mechanism(analysis: Analysis) -> GaussianHistogram:
    q = analysis.query
    return GaussianHistogram(n_cells=q.n_cells, bound=q.bound, rho=q.rho)


def usable(analysis: Analysis, outcome: NodeOutcome, expected_scale: float) -> str | None:
    """Why this outcome cannot be added in, or None when it can."""
    if not isinstance(outcome.answer, HistogramAnswer):
        return outcome.reason or "no answer"
    a = outcome.answer
    q = analysis.query
    if len(a.values) != q.n_cells:
        return f"answer has {len(a.values)} cells, the table has {q.n_cells}"
    if a.rho != q.rho:
        return f"answer was charged at rho {a.rho}, the plan declares {q.rho}"
    if not math.isclose(a.noise_scale, expected_scale, rel_tol=1e-9):
        return (
            f"answer used noise scale {a.noise_scale:.6g}, the plan requires {expected_scale:.6g}"
        )
    return None


def aggregate_open(
    analysis: Analysis, outcomes: list[NodeOutcome], min_nodes: int
) -> AggregatedTable:
    """Open mode: each node added the full noise; the sum carries n times the variance."""
    scale = _mechanism(analysis).noise.scale
    contributors: list[str] = []
    excluded: list[tuple[str, str]] = []
    sums = [0] * analysis.query.n_cells
    for outcome in outcomes:
        reason = usable(analysis, outcome, scale)
        if reason is not None:
            excluded.append((outcome.institution_id, reason))
            continue
        assert isinstance(outcome.answer, HistogramAnswer)
        contributors.append(outcome.institution_id)
        sums = [s + v for s, v in zip(sums, outcome.answer.values, strict=True)]
    if len(contributors) < min_nodes:
        detail = "; ".join(f"{i}: {r}" for i, r in excluded) or "no participants"
        raise RoundFailed(
            f"{analysis.id}: only {len(contributors)} usable answer(s), the plan needs"
            f" {min_nodes}; nothing released ({detail})"
        )
    variances = [scale**2] * len(contributors)
    return AggregatedTable(
        analysis=analysis,
        contributors=tuple(contributors),
        excluded=tuple(excluded),
        sums=tuple(sums),
        per_node_scale=scale,
        sd_total=math.sqrt(math.fsum(variances)),
        half_width_95=sum_half_width(variances, 0.95),
    )


def aggregate_secure(analysis: Analysis, result: SecureRoundResult) -> AggregatedTable:
    """Secure mode: the unmasked sum already carries one noise share per surviving node.

    Every survivor must have used the share scale the setup implies (the same function the
    nodes use); a node that reports another one fails the analysis, since its input is already
    inside a sum that cannot be taken apart.
    """
    setup = result.setup
    noise = noise_share(setup)
    wrong = [
        f"{node} used noise share {scale:.6g}"
        for node, scale in result.noise_scales.items()
        if not math.isclose(scale, noise.share_scale, rel_tol=1e-9)
    ]
    if wrong:
        raise RoundFailed(
            f"{analysis.id}: the plan requires noise shares of {noise.share_scale:.6g} but "
            + "; ".join(wrong)
            + "; nothing released"
        )
    k = len(result.survivors)
    survivors = set(result.survivors)
    return AggregatedTable(
        analysis=analysis,
        contributors=result.survivors,
        # A survivor that failed a later stage (consistency, unmasking) is still in the sum:
        # the release lists as excluded only those whose input is not.
        excluded=tuple(sorted((n, r) for n, r in result.dropped.items() if n not in survivors)),
        sums=tuple(int(v) for v in result.total),
        per_node_scale=noise.share_scale,
        sd_total=noise.total_scale(k),
        half_width_95=noise.half_width(k),
        secure_round={
            "round_id": result.round_id,
            "n_min": setup.n_min,
            "degree": setup.degree,
            "threshold": setup.threshold,
            "rho_bound_at_survivors": noise.rho_bound(k),
            "max_bytes_sent_by_a_node": max(result.bytes_from_node.values(), default=0),
        },
    )


def table_record(t: AggregatedTable) -> dict[str, Any]:
    """What is saved of a finished analysis: enough to release it after a restart."""
    return {
        "contributors": list(t.contributors),
        "excluded": [list(e) for e in t.excluded],
        "sums": list(t.sums),
        "per_node_scale": t.per_node_scale,
        "sd_total": t.sd_total,
        "half_width_95": t.half_width_95,
        "secure_round": t.secure_round,
    }


def table_from_record(analysis: Analysis, record: dict[str, Any]) -> AggregatedTable:
    return AggregatedTable(
        analysis=analysis,
        contributors=tuple(record["contributors"]),
        excluded=tuple((str(a), str(b)) for a, b in record["excluded"]),
        sums=tuple(int(v) for v in record["sums"]),
        per_node_scale=float(record["per_node_scale"]),
        sd_total=float(record["sd_total"]),
        half_width_95=float(record["half_width_95"]),
        secure_round=record["secure_round"],
    )
