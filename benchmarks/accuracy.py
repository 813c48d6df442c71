"""How accurate are the sector's S1-S6 releases, and what do consistency and federation cost?

    python -m benchmarks.accuracy --quick

Runs ``deploy/plans/sector-2024.toml`` (secure mode, its default budget) over a synthetic
sector with the real plan runner, node handlers, ledgers and secure-aggregation rounds (in
process), and compares with the truth that only a synthetic sector has. Measured side by side in
one run, printed as one JSON object on the last line:

- ``median_rel_error``: median |released - true| / true over every released cell whose true
  value is at least 100 (tickets, visits, orders or bookers; revenue cells of at least EUR 100),
  against the real, unbounded truth: the error a reader of the release meets, contribution
  bounding included.
- ``consistency_gain``: RMSE of the raw noisy tables divided by that of the released
  (consistent, non-negative) ones, both against the contribution-bounded truth they estimate.
  Target above 1.
- ``secure_over_central``: the same RMSE of the federated release divided by that of the same
  tables computed with central DP on the pooled, equally bounded data at the same rho (a trusted
  curator adding noise once, then the same post-processing; pooling happens inside this
  benchmark only). Target at most 1.1.

RMSEs are normalised per table (each table's error divided by its true total) before they are
pooled, so revenue in cents does not swamp counts of people.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import last_line, write_result
from coordinator.inprocess import InProcessTransport
from coordinator.postprocess import NoisyTable, post_process
from coordinator.runner import RunSettings, run_plan
from deploy.devcerts import make_dev_pki
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler, in_period
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.queries import bounded_counts
from privacy.bounding import ContributionBound
from privacy.budget import Rho
from privacy.noise import DiscreteGaussian
from protocols.identity import PeerVerifier, Signer
from protocols.messages import HistogramQuery, ReleaseMode
from protocols.plan import Plan, parse_plan
from synthetic import SectorConfig, generate_sector

REPO = Path(__file__).resolve().parent.parent
PLAN = REPO / "deploy" / "plans" / "sector-2024.toml"
UNBOUNDED = ContributionBound(10_000, 1_000_000)


def _federation(n: int, scale: float, work: Path) -> dict[str, TaskHandler]:
    sector = generate_sector(
        SectorConfig(n_institutions=n, seed=5, years=(2023, 2024), scale=scale)
    )
    sector.write(work / "sector")
    ids = [i.institution_id for i in sector.institutions]
    pki = make_dev_pki(work / "pki", ids)
    out = {}
    for inst in sector.institutions:
        nid = inst.institution_id
        out[nid] = TaskHandler(
            NodeIdentity(nid, inst.type),
            load_ticket_lines(work / "sector" / nid / "ticket_line.csv"),
            Ledger(work / "ledgers" / f"{nid}.sqlite", BudgetCap(Rho.parse("100"), Period.TOTAL)),
            Policy(max_rho_per_task=Rho.parse("1"), allowed_modes=frozenset(ReleaseMode)),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
        )
    return out


def _counts(handlers: dict[str, TaskHandler], query: HistogramQuery) -> np.ndarray:
    total = np.zeros(query.n_cells, dtype=np.float64)
    for h in handlers.values():
        table = in_period(h.table, query)
        total += bounded_counts(table, query, h.identity.institution_type)
    return total


def _rmse(errors: list[tuple[np.ndarray, float]]) -> float:
    # Each table's error relative to its true total, so tables of any unit pool fairly.
    pooled = np.concatenate([e / max(total, 1.0) for e, total in errors])
    return math.sqrt(float(np.mean(pooled**2)))


def run(n: int, scale: float, reps: int, work: Path) -> dict[str, float]:
    handlers = _federation(n, scale, work)
    text = PLAN.read_text().replace("min_nodes = 10", f"min_nodes = {max(2, n - 2)}")
    plan: Plan = parse_plan(text)
    transport = InProcessTransport(
        {nid: functools.partial(h.handle, requester="bench") for nid, h in handlers.items()}
    )
    queries = {a.id: a.query for a in plan.analyses}
    bounded = {aid: _counts(handlers, q) for aid, q in queries.items()}
    unbounded = {
        aid: _counts(handlers, dataclasses.replace(q, bound=UNBOUNDED))
        for aid, q in queries.items()
    }
    rel_errors: list[float] = []
    raw_err: list[tuple[np.ndarray, float]] = []
    fed_err: list[tuple[np.ndarray, float]] = []
    central_err: list[tuple[np.ndarray, float]] = []
    for r in range(reps):
        settings = RunSettings("bench", n, 5, run_id=f"bench-{r}")
        doc: dict[str, Any] = asyncio.run(run_plan(plan, transport, settings, lambda _: None))
        central_tables = []
        for table in doc["tables"]:
            aid = table["analysis_id"]
            truth, bound_truth = unbounded[aid], bounded[aid]
            released = np.array(
                [c["estimate"] if c["estimate"] is not None else 0 for c in table["cells"]],
                dtype=np.float64,
            )
            raw = np.array([c["noisy_sum"] for c in table["cells"]], dtype=np.float64)
            floor = 10_000 if queries[aid].measure == "revenue_cents" else 100
            big = truth >= floor
            rel_errors += list(np.abs(released[big] - truth[big]) / truth[big])
            total = float(bound_truth.sum())
            raw_err.append((raw - bound_truth, total))
            fed_err.append((released - bound_truth, total))
            # The same table from a trusted curator: pooled bounded counts, noise once.
            q = queries[aid]
            central = DiscreteGaussian.for_budget(q.bound.l2_sensitivity, q.rho)
            noisy = central.sample(bound_truth.astype(np.int64)).astype(np.float64)
            central_tables.append(
                NoisyTable(aid, q.measure, q.dimensions, noisy, central.scale**2, q.years)
            )
        for aid, est in post_process(central_tables).items():
            total = float(bounded[aid].sum())
            central_err.append((est.values - bounded[aid], total))
    return {
        "median_rel_error": statistics.median(rel_errors),
        "consistency_gain": _rmse(raw_err) / _rmse(fed_err),
        "secure_over_central": _rmse(fed_err) / _rmse(central_err),
        "cells_at_least_100": float(len(rel_errors) / reps),
        "tables": float(len(queries)),
        "nodes": float(n),
        "reps": float(reps),
        "rho_per_node": float(plan.rho_per_node),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="under a minute")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            result = run(n=12, scale=0.3, reps=3, work=Path(tmp))
        else:
            result = run(n=12, scale=1.0, reps=10, work=Path(tmp))
    for key, value in result.items():
        print(f"{key:>24}: {value:,.4f}")
    write_result("accuracy", {"quick": args.quick, "plan": str(PLAN.relative_to(REPO))}, result)
    print(last_line(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
