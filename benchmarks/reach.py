"""Sector reach and discipline overlap from DP sketches, against the synthetic sector's truth.

    python -m benchmarks.reach [--quick]

Every institution of a synthetic sector is read by the node's own loader (its tickets as a
Parquet export, e-mail addresses turned into match keys with a shared key file), builds its
reach sketches (``node/reach.py``) and adds its share of discrete Gaussian noise exactly as in a
secure round (``noise_share(setup).share.sample``, OpenDP). The secure sum is the sum of those
noisy vectors (the masks cancel exactly; ``tests/test_reach_federation.py`` shows it over
gRPC). The coordinator's estimator (``coordinator/reach_estimate.py``) then gives:

- ``reach_rel_error``: |estimated - true| / true distinct people in the sector (year 2024),
  the truth being the generator's person ids (``GroundTruth.reach``);
- ``overlap_abs_error``: mean over ordered pairs of disciplines (a, b), both with an audience,
  of |estimated - true| share of a's audience that also visits b;
- ``eps``: the (epsilon, delta = 1e-7) of the whole reach analysis per node (both rounds).

Besides (not a target of the issue, but S9 has it): ``type_overlap_abs_error``, the same mean
error for the share of one institution type's audience also visiting another, from a section
with a third round by institution type (``by = ["sector", "discipline", "institution_type"]``,
also at epsilon 1 per node in all, so its sector round has less budget than the main one's);
the full run only.

The analysis is the plan's: a ``[[reach]]`` section with the sector and discipline rounds at
epsilon 1 per node in all (``protocols/reach_plan.py``: its budget split, sector sketch copies
and "auto" buckets from the discipline round's count of people). Medians over repeats, each
with its own salts and noise draws (the sector stays the same; ``--seed`` picks another). The
full run is
50 institutions at scale 0.3; the quick run 50 institutions at scale 0.1 (about a minute:
generating and loading the sector is most of it).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.common import last_line, write_result
from coordinator.reach_estimate import (
    key_estimates,
    pair_counts,
    pair_overlaps,
    pair_people,
    type_overlaps,
)
from coordinator.reach_run import auto_sector_buckets
from node.data import load
from node.ingest.matchkey import MatchKeySecret
from node.ingest.pipeline import IngestSettings
from node.ingest.sources import ParquetFile
from node.reach import ReachData, reach_contribution
from privacy.reach import ReachEstimate
from protocols.messages import ReleaseMode
from protocols.reach import ReachQuery
from protocols.reach_plan import Reach, parse_reaches
from protocols.secagg import SecAggSetup, noise_share
from protocols.vocabulary import COUNTED_STATUSES, DISCIPLINES
from synthetic.config import SectorConfig
from synthetic.sector import generate_sector
from synthetic.truth import GroundTruth

YEAR = 2024
DELTA = 1e-7


def truth_overlaps(truth: GroundTruth) -> tuple[int, dict[tuple[str, str], float]]:
    """True sector reach and share of a's audience also visiting b, from person ids."""
    counted = truth.tickets.filter(
        pl.col("order_status").is_in(list(COUNTED_STATUSES))
        & pl.col("person_id").is_not_null()
        & (pl.col("performance_start").dt.year() == YEAR)
    )
    # Only people with a customer account count (walk-ins have no person id anyway).
    pairs = counted.select("person_id", "discipline").unique()
    audience = {
        d: set(pairs.filter(pl.col("discipline") == d)["person_id"].to_list()) for d in DISCIPLINES
    }
    shares = {}
    for a in DISCIPLINES:
        for b in DISCIPLINES:
            if a != b and audience[a] and audience[b]:
                shares[(a, b)] = len(audience[a] & audience[b]) / len(audience[a])
    return truth.reach(YEAR), shares


def truth_type_overlaps(truth: GroundTruth, types: dict[str, str]) -> dict[tuple[str, str], float]:
    """True share of type a's audience (people) that also visits an institution of type b."""
    counted = truth.tickets.filter(
        pl.col("order_status").is_in(list(COUNTED_STATUSES))
        & pl.col("person_id").is_not_null()
        & (pl.col("performance_start").dt.year() == YEAR)
    )
    pairs = (
        counted.select("person_id", "institution_id")
        .unique()
        .with_columns(pl.col("institution_id").replace_strict(types).alias("type"))
        .select("person_id", "type")
        .unique()
    )
    audience = {
        t: set(pairs.filter(pl.col("type") == t)["person_id"].to_list())
        for t in set(types.values())
    }
    return {
        (a, b): len(audience[a] & audience[b]) / len(audience[a])
        for a in audience
        for b in audience
        if a != b and audience[a] and audience[b]
    }


@dataclass(frozen=True)
class SectorRounds:
    """The discipline (pairs) round and the sector sketch round after it, as a plan runs them:
    the sector's buckets chosen from the pairs round's noisy count of people."""

    pairs_q: ReachQuery
    pairs_total: np.ndarray
    pairs_var: float
    sector_q: ReachQuery
    sector: ReachEstimate


def sector_rounds(reach: Reach, nodes: list[ReachData], salt: str, tag: str = "") -> SectorRounds:
    """Salts ``<salt>-<tag>d`` and ``<salt>-<tag>s``."""
    ids = len(nodes)
    pairs_q = reach.query("discipline", f"{salt}-{tag}d")
    total, var = secure_sum(pairs_q, nodes)
    done = {"discipline": (pairs_q, {"sums": [int(v) for v in total]})}
    m = auto_sector_buckets(reach, done, ids, ids)
    sector_q = reach.query("sector", f"{salt}-{tag}s", sector_buckets=m)
    s_total, s_var = secure_sum(sector_q, nodes)
    sector = key_estimates(sector_q, s_total, s_var)[0].reach
    return SectorRounds(pairs_q, total, var, sector_q, sector)


def type_overlap_error(
    nodes: list[ReachData], truth: dict[tuple[str, str], float], seed: int, r: int
) -> float:
    """One repeat of the institution-type overlap (S9 by type), as the runner estimates it."""
    reach = plan_section(1.0, ["sector", "discipline", "institution_type"])
    sector = sector_rounds(reach, nodes, f"bench-{seed}-{r}", "t").sector
    type_q = reach.query("institution_type", f"bench-{seed}-{r}-tt")
    t_total, t_var = secure_sum(type_q, nodes)
    per_key = key_estimates(type_q, t_total, t_var)
    people = {k.key: k.reach.reach for k in per_key}
    overlaps = type_overlaps(per_key, sector)
    errors = []
    for (a, b), share in truth.items():
        est = overlaps[(a, b)].both / people[a] if people[a] > 0 else 0.0
        errors.append(abs(min(max(est, 0.0), 1.0) - share))
    return float(np.mean(errors))


def build_nodes(sector: Any, folder: Path, secret: MatchKeySecret) -> list[ReachData]:
    nodes = []
    for inst in sector.institutions:
        path = folder / f"{inst.institution_id}.parquet"
        sector.tickets(inst.institution_id).write_parquet(path)
        loaded = load(ParquetFile(path), IngestSettings(match_key=secret))
        nodes.append(ReachData.build(loaded.table, loaded.match_keys, inst.type))
    return nodes


def secure_sum(query: ReachQuery, nodes: list[ReachData]) -> tuple[np.ndarray, float]:
    """The sum a secure round would release, and the noise variance per cell in it."""
    ids = tuple(f"inst-{i:03d}" for i in range(len(nodes)))
    setup = SecAggSetup(query, ids, n_min=len(ids), degree=len(ids) - 1, threshold=len(ids) // 2)
    noise = noise_share(setup)
    total = np.zeros(query.n_cells, dtype=np.int64)
    for data in nodes:
        total += noise.share.sample(reach_contribution(query, data))
    return total, len(nodes) * noise.share_scale**2


def plan_section(epsilon: float, by: list[str] | None = None) -> Reach:
    """The benchmark's [[reach]]: the sector and discipline rounds, as a plan would run them."""
    problems: list[str] = []
    section = {"id": "bench", "years": [YEAR, YEAR], "epsilon": epsilon}
    section["by"] = by or ["sector", "discipline"]
    [reach] = parse_reaches([section], ReleaseMode.SECURE, DELTA, problems, set())
    assert not problems, problems
    return reach


def run(quick: bool, seed: int = 11) -> dict[str, Any]:
    n_institutions, scale = (50, 0.1) if quick else (50, 0.3)
    repeats = 3 if quick else 7
    started = time.monotonic()
    sector = generate_sector(
        SectorConfig(n_institutions=n_institutions, seed=seed, years=(YEAR, YEAR), scale=scale)
    )
    true_reach, true_shares = truth_overlaps(sector.truth)
    types = {inst.institution_id: inst.type for inst in sector.institutions}
    true_type_shares = truth_type_overlaps(sector.truth, types)
    secret = MatchKeySecret(key=secrets.token_bytes(32), source=Path("benchmark"))
    with tempfile.TemporaryDirectory() as tmp:
        nodes = build_nodes(sector, Path(tmp), secret)
    prepared = time.monotonic() - started
    reach = plan_section(1.0)
    reach_errors, overlap_errors, covered, buckets = [], [], [], []
    clean_errors: list[float] = []
    type_errors: list[float] = []
    for r in range(repeats):
        # A new salt per repeat, as every run has: the hashing's luck is part of the error.
        rounds = sector_rounds(reach, nodes, f"bench-{seed}-{r}")
        sector_q, est = rounds.sector_q, rounds.sector
        buckets.append(sector_q.buckets)
        reach_errors.append(abs(est.reach - true_reach) / true_reach)
        covered.append(abs(est.reach - true_reach) <= est.half_width())
        if r == 0:
            exact = np.sum(np.stack([reach_contribution(sector_q, d) for d in nodes]), axis=0)
            clean = key_estimates(sector_q, exact, 0.0)[0].reach
            clean_errors.append((clean.reach - true_reach) / true_reach)
        pairs = pair_counts(rounds.pairs_q, rounds.pairs_total, rounds.pairs_var)
        people = pair_people(pairs, est)
        overlaps = pair_overlaps(pairs, est)
        errors = []
        for (a, b), truth in true_shares.items():
            audience = people[a][0]
            share = min(max(overlaps[(a, b)].both / audience, 0.0), 1.0) if audience > 0 else 0.0
            errors.append(abs(share - truth))
        overlap_errors.append(float(np.mean(errors)))
        if not quick:  # a third sketch round per repeat: the full run only, to keep --quick short
            type_errors.append(type_overlap_error(nodes, true_type_shares, seed, r))
    epsilon = reach.total_rho.to_approx_dp(DELTA).epsilon
    return {
        "reach_rel_error": statistics.median(reach_errors),
        "overlap_abs_error": statistics.median(overlap_errors),
        "eps": round(epsilon, 6),
        "seed": seed,
        "true_reach": true_reach,
        "reach_errors": [round(e, 5) for e in reach_errors],
        "reach_noise_free_error": round(clean_errors[0], 5),
        "overlap_errors": [round(e, 5) for e in overlap_errors],
        "type_overlap_abs_error": statistics.median(type_errors) if type_errors else None,
        "type_overlap_errors": [round(e, 5) for e in type_errors],
        "type_pairs": len(true_type_shares),
        "reach_interval_covered": sum(covered),
        "repeats": repeats,
        "institutions": n_institutions,
        "scale": scale,
        "sector_buckets": sorted(set(buckets)),
        "sector_copies": reach.sector_copies,
        "rho_split": {b: str(reach.round_rho(b)) for b in reach.by},
        "prepare_seconds": round(prepared, 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reach")
    parser.add_argument("--quick", action="store_true", help="a smaller sector, fewer repeats")
    parser.add_argument("--seed", type=int, default=11, help="the synthetic sector's seed")
    args = parser.parse_args(argv)
    result = run(args.quick, args.seed)
    config = {"quick": args.quick, "year": YEAR, "delta": DELTA, "seed": args.seed}
    path = write_result("reach", config, result)
    print(f"result written to {path}", file=sys.stderr)
    print(last_line(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
