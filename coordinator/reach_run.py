"""A plan's ``[[reach]]``: one secure round per breakdown, then S7-S10 from the noisy sketches.

Every round is recorded in the run state as it finishes (``<reach id>_<by>``: the noisy sum and
its noise variance) and every secure stage as it completes, so a coordinator killed and
restarted continues where it stopped: finished rounds are not asked again, the round under way
goes on with the same round id and salt (the nodes still hold its state), and no node is charged
twice. The estimates are post-processing of those sums (``coordinator/reach_estimate.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from coordinator.checkpoints import StateCheckpoint
from coordinator.reach_estimate import (
    key_estimates,
    pair_counts,
    pair_overlaps,
    pair_people,
    type_overlaps,
)
from coordinator.secure import RoundTask, SecureParams, SecureRoundFailed, run_secure_round
from coordinator.state import RunStateStore
from coordinator.transport import Transport
from privacy.distributed import DistributedGaussian
from privacy.reach import Z95, ReachEstimate, frequency, interval, sector_buckets
from protocols.identity import PeerVerifier
from protocols.plan import Plan
from protocols.reach import MAX_BUCKETS, MIN_BUCKETS, ReachQuery
from protocols.reach_plan import AUTO, Reach, round_salt
from protocols.secagg import noise_share

Progress = Callable[[str], None]
# S10's last key: "5+" institutions.
TOP_INSTITUTIONS = 5

METHOD = (
    "each institution counts its people (keyed hashes of e-mail addresses, never sent) per bucket"
    " of a hash all institutions share, so a person lands in the same bucket everywhere; the"
    " counts are summed under secure aggregation with discrete Gaussian noise added in shares."
    " Distinct people by inclusion-exclusion: S1 - S2 from the first two moments of the noisy"
    " bucket counts, the tail (S3 - S4 ...) from a geometric model of how many institutions a"
    " person visits (privacy/reach.py); customers without an e-mail address by binomial"
    " thinning (each account holds an address independently). Intervals cover the noise and"
    " the hashing, not the model (docs/reach.md)."
)
# The same, in words for a reader who is not a statistician (shown first on the dashboard),
# with the size of each model's error as measured against the synthetic sector's person-level
# truth (docs/reach.md, "Accuracy, measured").
PLAIN_SKETCH = (
    "Each institution turned its customers' e-mail addresses into codes that only the"
    " institutions can make, so that a person who visits several institutions can be counted"
    " once; the institutions added up noisy counts of those codes, and the number of distinct"
    " people is estimated from them. Part of the estimate rests on models (for people who visit"
    " three or more institutions, and for customers without an e-mail address), which by"
    " themselves leave about 1% on the synthetic sector; the interval does not include that."
)
PLAIN_S8 = (
    "The distinct people of each region, estimated as in the table of people by region, per"
    " 1,000 of the region's households, from the public household count the note names."
)
PLAIN_S10 = (
    "How many institutions one person visits, from a model (a geometric distribution) fitted"
    " to the same noisy counts as the sector's reach: read its shape, not each cell."
)
PLAIN_PEOPLE_BY_DISCIPLINE = (
    "Each institution counted its own people per discipline. A person who saw a discipline at"
    " two institutions would be counted twice; how many did is estimated by a model that spreads"
    " the sector's people who visit several institutions over disciplines by size. The interval"
    " does not include that model's error."
)
PLAIN_OVERLAP_DISCIPLINE = (
    "People who saw both disciplines at one institution are counted there. People who saw them"
    " at different institutions cannot be counted privately at this budget; they are estimated"
    " by a model that spreads the sector's people who visit several institutions over"
    " disciplines by size. Measured on the synthetic sector, the shares are off by about 0.02"
    " on average; the interval does not include that."
)
PLAIN_OVERLAP_TYPE = (
    "Nobody sees two kinds of institution at one institution, so all of this overlap is"
    " estimated by a model that spreads the sector's people who visit several institutions over"
    " institution types by size. Measured on the synthetic sector, the shares are off by about"
    " 0.03 on average; the interval does not include that."
)

PAIRS_METHOD = (
    "each institution counts its own people (with or without an e-mail address) per pair of"
    " disciplines they visited there (at most the plan's max_disciplines per person), summed"
    " under secure aggregation with discrete Gaussian noise; people who see the two disciplines"
    " at different institutions are added under random mixing: the sector sketch's"
    " cross-institution pairs of the same person, spread over disciplines in proportion to their"
    " audiences (privacy/reach.py). Intervals cover the noise, not the mixing model"
    " (docs/reach.md)."
)


class ReachFailed(Exception):
    def __init__(self, message: str, charged: tuple[str, ...]) -> None:
        super().__init__(message)
        self.charged = charged


async def run_reach(
    plan: Plan,
    reach: Reach,
    run_id: str,
    participants: list[str],
    transport: Transport,
    *,
    verifier: PeerVerifier | None,
    state: RunStateStore | None,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Run (or restore) every round of the section; its release tables."""
    if "region" in reach.by and not reach.households.read:
        raise ReachFailed(
            f"the household table {reach.households.file!r} was not read: a plan that names one"
            " must be loaded from its file (the path is relative to the plan's folder)",
            (),
        )
    params = SecureParams.for_plan(len(participants), plan.min_nodes, plan.degree, plan.threshold)
    timeout_ms = int(plan.task_timeout_s * 1000)
    records = state.analyses(run_id) if state is not None else {}
    results: dict[str, tuple[ReachQuery, dict[str, Any]]] = {}
    for by in reach.run_order:
        analysis_id = reach.round_id(by)
        query = reach.query(
            by,
            round_salt(run_id, reach.id, by),
            sector_buckets=auto_sector_buckets(reach, results, len(participants), params.n_min),
        )
        record = records.get(analysis_id)
        if record is not None and record.status == "done" and record.result is not None:
            progress(f"reach {analysis_id} done before the restart")
            result = dict(record.result)
        else:
            progress(f"reach {analysis_id}: {query.describe()}")
            task = RoundTask(f"{run_id}/{analysis_id}", run_id, analysis_id, timeout_ms)
            try:
                done = await run_secure_round(
                    transport,
                    task,
                    query,
                    participants,
                    params,
                    verifier=verifier,
                    progress=progress,
                    checkpoint=(
                        StateCheckpoint(state, run_id, analysis_id, task.task_id)
                        if state is not None
                        else None
                    ),
                )
            except SecureRoundFailed as err:
                raise ReachFailed(f"round {analysis_id}: {err}", err.charged) from err
            noise = noise_share(done.setup)
            wrong = [
                n
                for n, s in done.noise_scales.items()
                if not math.isclose(s, noise.share_scale, rel_tol=1e-9)
            ]
            if wrong:
                raise ReachFailed(
                    f"round {analysis_id}: {', '.join(wrong)} reported another noise share than"
                    " the round requires; nothing released",
                    done.survivors,
                )
            k = len(done.survivors)
            result = {
                "sums": [int(v) for v in done.total],
                "noise_var": k * noise.share_scale**2,
                "share_scale": noise.share_scale,
                "contributors": list(done.survivors),
                "round_id": done.round_id,
                "n_min": done.setup.n_min,
                "rho_bound_at_survivors": noise.rho_bound(k),
                "buckets": query.buckets,
            }
            if state is not None:
                state.save_analysis(run_id, analysis_id, result)
        results[by] = (query, result)
    tables: list[dict[str, Any]] = []
    sector = _sector(results)
    for by in reach.by:
        query, result = results[by]
        tables += reach_tables(plan, reach, by, query, result, sector)
    return tables


def auto_sector_buckets(
    reach: Reach,
    results: dict[str, tuple[ReachQuery, dict[str, Any]]],
    n_max: int,
    n_min: int,
) -> int | None:
    """The sector sketch's buckets when the plan says "auto": from the discipline round's noisy
    count of people (its last cell) and the sector round's noise, m = people / v."""
    if dict(reach.buckets).get("sector", AUTO) != AUTO or "discipline" not in results:
        return None
    _, done = results["discipline"]
    units = float(done["sums"][-1])
    probe = reach.query("sector", "probe", sector_buckets=MIN_BUCKETS)
    # The noise per bucket barely depends on the vector's length; the shortest gives it.
    dg = DistributedGaussian.for_budget(
        probe.l2_sensitivity, probe.l1_sensitivity, probe.n_cells, probe.rho, n_min, n_max
    )
    # A copy's noise is v; copies are averaged, so the balance is struck per copy.
    return sector_buckets(units, n_max * dg.share_scale**2, MIN_BUCKETS, MAX_BUCKETS)


def _sector(results: dict[str, tuple[ReachQuery, dict[str, Any]]]) -> ReachEstimate | None:
    if "sector" not in results:
        return None
    query, result = results["sector"]
    return key_estimates(query, result["sums"], float(result["noise_var"]))[0].reach


def _cell(keys: dict[str, str], value: float, sd: float, digits: int = 0) -> dict[str, Any]:
    low, high = interval(value, sd)
    shown = max(value, 0.0)
    return {
        **keys,
        "estimate": round(shown, digits) if digits else round(shown),
        "ci95_low": round(low, digits) if digits else round(low),
        "ci95_high": round(high, digits) if digits else round(high),
        # No sum is published as such: the estimator's own output before it is held at zero.
        "noisy_sum": round(value, digits) if digits else round(value),
        "suppressed": False,
    }


def _table(
    plan: Plan,
    reach: Reach,
    query: ReachQuery,
    result: dict[str, Any],
    *,
    analysis_id: str,
    title: str,
    statistic: str,
    measure: str,
    dimensions: list[tuple[str, tuple[str, ...]]],
    cells: list[dict[str, Any]],
    note: str,
    method: str = METHOD,
    plain: str = PLAIN_SKETCH,
) -> dict[str, Any]:
    half_widths = [(c["ci95_high"] - c["ci95_low"]) / 2 for c in cells]
    rho = query.rho
    return {
        "analysis_id": analysis_id,
        "title": title,
        "statistic": statistic,
        "measure": measure,
        "dimensions": [{"name": n, "keys": list(k)} for n, k in dimensions],
        "contributors": list(result["contributors"]),
        "excluded": [],
        "noise": {
            "mechanism": query.mechanism,
            "mode": query.mode.value,
            "scale_per_node": result["share_scale"],
            "nodes_added": len(result["contributors"]),
            "sd_total": math.sqrt(result["noise_var"]),
            "l2_sensitivity": query.l2_sensitivity,
            "bound": {
                "max_cells": query.max_cells,
                "max_per_cell": 1,
                "l1": query.l1_sensitivity,
            },
            "rho_per_node": str(rho),
            "epsilon_per_node": rho.to_approx_dp(plan.delta).epsilon,
        },
        "secure_aggregation": {
            "round_id": result["round_id"],
            "n_min": result["n_min"],
            "rho_bound_at_survivors": result["rho_bound_at_survivors"],
        },
        "interval": {
            "confidence": 0.95,
            "half_width_raw": float(np.median(half_widths)) if half_widths else 0.0,
            "covers": "the noise and the hashing; not the model of how often people cross-visit",
        },
        "post_processing": {
            "consistent_with": [],
            "non_negative": True,
            "intervals": "each cell's own (delta method)",
            "suppressed_below_half_widths": 0.0,
            "suppressed_cells": 0,
        },
        "reach": {
            "section": reach.id,
            "sketch": {
                "by": query.by.name,
                "layout": query.layout,
                "buckets": query.buckets,
                "copies": query.copies,
                "salt": query.salt,
            },
            "method": method,
            "plain": plain,
            "note": note,
        },
        "cells": cells,
    }


def _overlap_table(
    common: dict[str, Any],
    by: str,
    keys: tuple[str, ...],
    people: dict[str, tuple[float, float]],
    overlaps: dict[tuple[str, str], Any],
    years: str,
    note: str,
    plain: str,
) -> dict[str, Any]:
    cells = []
    for a in keys:
        for b in keys:
            if a == b:
                cell = _cell({by: a, f"{by}_also": b}, *people[a])
                cell["share_of_first"] = 1.0
            else:
                ov = overlaps[(a, b)]
                cell = _cell({by: a, f"{by}_also": b}, ov.both, ov.sd)
                audience = people[a][0]
                cell["share_of_first"] = (
                    round(min(max(ov.both / audience, 0.0), 1.0), 4) if audience > 0 else None
                )
            cells.append(cell)
    reach: Reach = common["reach"]
    return _table(
        **common,
        analysis_id=f"{reach.id}_overlap_{by}",
        title=f"People visiting both, by {by.replace('_', ' ')} pair, {years}",
        statistic="S9",
        measure="people_in_both",
        dimensions=[(by, keys), (f"{by}_also", keys)],
        cells=cells,
        note=note,
        plain=plain,
    )


def reach_tables(
    plan: Plan,
    reach: Reach,
    by: str,
    query: ReachQuery,
    result: dict[str, Any],
    sector: ReachEstimate | None,
) -> list[dict[str, Any]]:
    """The release tables one round's noisy sum gives (``sector``: the sector round's estimate,
    which the overlap tables need for cross-institution visiting)."""
    sums = np.asarray(result["sums"], dtype=np.float64)
    var = float(result["noise_var"])
    years = f"{reach.years[0]}" + (f"-{reach.years[1]}" if reach.years[1] != reach.years[0] else "")
    common: dict[str, Any] = {"plan": plan, "reach": reach, "query": query, "result": result}
    if by == "discipline":
        if sector is None:
            raise ValueError("the discipline overlap needs the sector round")
        pairs = pair_counts(query, sums, var)
        people = pair_people(pairs, sector)
        keys = query.by.keys
        return [
            _table(
                **common,
                analysis_id=f"{reach.id}_people_by_discipline",
                title=f"Distinct people reached by discipline, {years}",
                statistic="S7",
                measure="people",
                dimensions=[("discipline", keys)],
                cells=[_cell({"discipline": k}, *people[k]) for k in keys],
                note=(
                    "people per discipline counted once per institution, less those seeing it at"
                    " two institutions under random mixing; people without e-mail included"
                ),
                method=PAIRS_METHOD,
                plain=PLAIN_PEOPLE_BY_DISCIPLINE,
            ),
            _overlap_table(
                {**common, "method": PAIRS_METHOD},
                by,
                keys,
                people,
                pair_overlaps(pairs, sector),
                years,
                "within one institution counted, across institutions modelled (random mixing);"
                " the diagonal is each discipline's own people; share_of_first: of the first"
                " discipline's people. See docs/reach.md for the measured accuracy",
                PLAIN_OVERLAP_DISCIPLINE,
            ),
        ]
    per_key = key_estimates(query, sums, var)
    dim = "sector" if by == "sector" else by
    tables = []
    if by != "institution_type":
        tables.append(
            _table(
                **common,
                analysis_id=f"{reach.id}_people_by_{by}",
                title=f"Distinct people reached by {by.replace('_', ' ')}, {years}",
                statistic="S7",
                measure="people",
                dimensions=[(dim, query.by.keys)],
                cells=[_cell({dim: k.key}, k.reach.reach, k.reach.reach_sd) for k in per_key],
                note="de-duplicated across institutions; people without e-mail included",
            )
        )
    if by == "sector":
        est = per_key[0].reach
        freq = frequency(est, TOP_INSTITUTIONS)
        keys = (*(str(k) for k in range(1, TOP_INSTITUTIONS)), f"{TOP_INSTITUTIONS}+")
        tables.append(
            _table(
                **common,
                analysis_id=f"{reach.id}_institutions_per_person",
                title=f"People by number of institutions visited, {years}",
                statistic="S10",
                measure="people",
                dimensions=[("institutions_visited", keys)],
                cells=[
                    _cell({"institutions_visited": k}, v, sd)
                    for k, (v, sd) in zip(keys, freq, strict=True)
                ],
                note=(
                    f"fitted geometric distribution (p = {est.p:.4f} +/- {Z95 * est.p_sd:.4f});"
                    f" mean {est.mean_institutions:.3f} institutions per person"
                ),
                plain=PLAIN_S10,
            )
        )
    if by == "region":
        cells = []
        for k in per_key:
            households = reach.households.get(k.key)
            if households is None:
                continue
            cells.append(
                _cell(
                    {"region": k.key},
                    1000.0 * k.reach.reach / households,
                    1000.0 * k.reach.reach_sd / households,
                    digits=2,
                )
            )
        tables.append(
            _table(
                **common,
                analysis_id=f"{reach.id}_participation_per_1000_households",
                title=f"People reached per 1,000 households by home region, {years}",
                statistic="S8",
                measure="people_per_1000_households",
                dimensions=[("region", tuple(c["region"] for c in cells))],
                cells=cells,
                note=reach.households.note,
                plain=PLAIN_S8,
            )
        )
    if by == "institution_type":
        if sector is None:
            raise ValueError("the institution-type overlap needs the sector round")
        people = {k.key: (k.reach.reach, k.reach.reach_sd) for k in per_key}
        tables.append(
            _overlap_table(
                common,
                by,
                query.by.keys,
                people,
                type_overlaps(per_key, sector),
                years,
                "nobody sees two institution types at one institution: all of it is"
                " cross-institution visiting under random mixing of the sector's cross-visits;"
                " the diagonal is each type's own reach (its sketch)",
                PLAIN_OVERLAP_TYPE,
            )
        )
    return tables
