"""Where the S9 overlap error comes from: the cross-institution model against person-level truth.

    python -m benchmarks.reach_overlap_floor [--seeds 11 12 13]

No noise and no hashing: every count the estimator would read from the secure sums is taken
exactly from the synthetic sector (scale 0.3, 50 institutions, year 2024, people by person id),
so what is left is the model. For each sector it prints the mean absolute error of the share
of a's audience also visiting b over ordered discipline pairs (the benchmark's
``overlap_abs_error``), for:

- ``random_mixing``: what the release does (within-institution counts plus the sector's
  cross-institution pairs spread over disciplines in proportion to their audiences);
- ``true_cross``: the within counts plus the *true* cross-institution overlaps (what a perfect
  cross model would leave: the within counts' own error);
- ``oracle_factor``: random mixing times the best factor per discipline, fitted to the truth
  (not usable: it needs the answer; it shows what a per-discipline model could reach);
- ``within_lift``: random mixing times, per pair, the lift measured within institutions
  (W_ab over its expectation under independence at each institution);
- ``s2_x0.85`` / ``s2_x1.15``: random mixing with S2 off by 15% either way.

The results go to benchmarks/results/reach_overlap_floor.json; docs/reach.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from benchmarks.common import write_result
from protocols.vocabulary import COUNTED_STATUSES, DISCIPLINES
from synthetic.config import SectorConfig
from synthetic.sector import generate_sector

YEAR = 2024
Matrix = npt.NDArray[np.float64]


def visits(seed: int) -> pl.DataFrame:
    """(person_id, institution_id, discipline index) with a counted ticket in YEAR."""
    sector = generate_sector(
        SectorConfig(n_institutions=50, seed=seed, years=(YEAR, YEAR), scale=0.3)
    )
    index = {d: i for i, d in enumerate(DISCIPLINES)}
    return (
        sector.truth.tickets.filter(
            pl.col("order_status").is_in(list(COUNTED_STATUSES))
            & pl.col("person_id").is_not_null()
            & (pl.col("performance_start").dt.year() == YEAR)
        )
        .select("person_id", "institution_id", "discipline")
        .unique()
        .with_columns(pl.col("discipline").replace_strict(index, return_dtype=pl.Int64))
    )


def errors(frame: pl.DataFrame) -> dict[str, float]:
    n = len(DISCIPLINES)
    # One row per unit (a person at one institution) with its disciplines as a 0/1 row.
    units = frame.group_by("person_id", "institution_id").agg(
        (pl.lit(2, dtype=pl.Int64) ** pl.col("discipline")).sum().alias("mask")
    )
    seen = ((units["mask"].to_numpy()[:, None] >> np.arange(n)[None, :]) & 1).astype(np.float64)
    k = units.group_by("person_id").len()["len"].to_numpy().astype(np.float64)
    s1, s2 = float(len(units)), float((k * (k - 1) / 2).sum())
    f1 = seen.sum(axis=0)
    within = seen.T @ seen
    np.fill_diagonal(within, 0.0)
    expected = np.zeros((n, n))
    institution = units["institution_id"].to_numpy()
    for inst in np.unique(institution):
        here = seen[institution == inst]
        counts = here.sum(axis=0)
        expected += np.outer(counts, counts) / len(here)
    np.fill_diagonal(expected, 0.0)

    # The truth: people per discipline, people per pair, and those who see a pair at one place.
    person = frame.select("person_id", "discipline").unique()
    _, row = np.unique(person["person_id"].to_numpy(), return_inverse=True)
    has = np.zeros((int(row.max()) + 1, n))
    has[row, person["discipline"].to_numpy()] = 1.0
    audience, both = has.sum(axis=0), has.T @ has
    same = (
        frame.join(frame, on=["person_id", "institution_id"], suffix="_b")
        .filter(pl.col("discipline") != pl.col("discipline_b"))
        .select("person_id", "discipline", "discipline_b")
        .unique()
        .group_by("discipline", "discipline_b")
        .len()
    )
    same_at_one = np.zeros((n, n))
    same_at_one[same["discipline"].to_numpy(), same["discipline_b"].to_numpy()] = same["len"]
    true_cross = both - same_at_one
    np.fill_diagonal(true_cross, 0.0)

    def mean_error(pairs: Matrix, people: Matrix) -> float:
        out = [
            abs(min(max(pairs[a, b] / people[a], 0.0), 1.0) - both[a, b] / audience[a])
            for a in range(n)
            for b in range(n)
            if a != b and audience[a] > 0 and audience[b] > 0
        ]
        return float(np.mean(out))

    share = f1 / s1
    mixing = 2.0 * s2 * np.outer(share, share)
    np.fill_diagonal(mixing, 0.0)
    people = f1 - s2 * share**2
    # The best factor per discipline (least squares on log ratios, weighted by size).
    pairs = [
        (a, b)
        for a in range(n)
        for b in range(a + 1, n)
        if mixing[a, b] > 1 and true_cross[a, b] > 0
    ]
    design = np.zeros((len(pairs), n))
    target, weight = np.zeros(len(pairs)), np.zeros(len(pairs))
    for i, (a, b) in enumerate(pairs):
        design[i, a] = design[i, b] = 1.0
        target[i] = np.log(true_cross[a, b] / mixing[a, b])
        weight[i] = np.sqrt(mixing[a, b])
    factor = np.linalg.lstsq(design * weight[:, None], target * weight, rcond=None)[0]
    lift = np.where(expected > 20, within / np.maximum(expected, 1e-9), 1.0)
    return {
        "random_mixing": mean_error(within + mixing, people),
        "true_cross": mean_error(within + true_cross, people),
        "oracle_factor": mean_error(within + mixing * np.exp(factor[:, None] + factor), people),
        "within_lift": mean_error(within + mixing * lift, people),
        "s2_x0.85": mean_error(within + 0.85 * mixing, f1 - 0.85 * s2 * share**2),
        "s2_x1.15": mean_error(within + 1.15 * mixing, f1 - 1.15 * s2 * share**2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reach_overlap_floor")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for seed in args.seeds:
        results[str(seed)] = {k: round(v, 4) for k, v in errors(visits(seed)).items()}
        print(seed, results[str(seed)], file=sys.stderr, flush=True)
    names = next(iter(results.values())).keys()
    results["mean"] = {k: round(float(np.mean([r[k] for r in results.values()])), 4) for k in names}
    write_result("reach_overlap_floor", {"seeds": args.seeds, "scale": 0.3, "year": YEAR}, results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
