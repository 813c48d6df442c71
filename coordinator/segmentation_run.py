"""A plan's ``[[segmentation]]``: the fit, the published model and its card, the S12 tables.

Every round is recorded in the run state as it finishes (``<segmentation id>/<round>``) and
every secure stage as it completes, so a coordinator that is killed and restarted continues the
fit where it stopped: finished rounds are not asked again, the round under way goes on with
the same round id (the nodes still hold its state), and no node is charged twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from coordinator.aggregate import (
    AggregatedTable,
    aggregate_secure,
    table_from_record,
    table_record,
)
from coordinator.checkpoints import StateCheckpoint
from coordinator.secure import (
    RoundTask,
    SecureParams,
    SecureRoundFailed,
    StageCheckpoint,
    run_secure_round,
)
from coordinator.segment_descriptions import describe
from coordinator.segmentation import (
    FitResult,
    FitSettings,
    SecureRounds,
    SegmentationFailed,
    fit,
    fit_seed,
)
from coordinator.state import RunStateStore
from coordinator.transport import Transport
from privacy.budget import compose, epsilon_of
from protocols.features import CUSTOMER_FEATURE_SET
from protocols.identity import PeerVerifier
from protocols.plan import Analysis, Plan
from protocols.segment_model import Segment, SegmentModel, model_from_json
from protocols.segmentation_plan import Segmentation, SegmentTable

Progress = Callable[[str], None]

METHOD = {
    "algorithm": "federated k-means with differential privacy under secure aggregation",
    "initialisation": (
        "a private coreset: a random-projection tree grown on noisy counts, one round per"
        " level, split through each cell's noisy centre, then one round of noisy counts and"
        " means of its leaves (after Chang, Ghazi, Kumar & Manurangsi 2021, Google's practical"
        " DP clustering); weighted k-means++ with 50 restarts on the coreset (post-processing)"
    ),
    "refinement": (
        "Lloyd rounds: per nearest centre, noisy counts, feature sums and squared-distance"
        " sums; they stop once even the upper 95% bound of the noisy cost's improvement is"
        " below 0.5%; the last round, whose noisy means are the model, takes three rounds'"
        " share plus the budget of any rounds the stopping rule saved"
    ),
    "noise": "discrete Gaussian (OpenDP), added in shares by the nodes; the coordinator sees sums",
    "code": "privacy/clustering, coordinator/segmentation.py, docs/segmentation.md",
}


@dataclass
class SegmentationOutcome:
    model: SegmentModel
    tables: list[AggregatedTable]


class _StateRounds:
    """Finished rounds in the run state (status done), under ``<segmentation>/<round>``."""

    def __init__(self, state: RunStateStore, run_id: str) -> None:
        self.state = state
        self.run_id = run_id

    def load(self, analysis_id: str) -> dict[str, Any] | None:
        record = self.state.analyses(self.run_id).get(analysis_id)
        if record is None or record.status != "done" or record.result is None:
            return None
        return dict(record.result)

    def save(self, analysis_id: str, record: dict[str, Any]) -> None:
        self.state.save_analysis(self.run_id, analysis_id, record)


async def run_segmentation(
    plan: Plan,
    seg: Segmentation,
    run_id: str,
    participants: list[str],
    transport: Transport,
    *,
    verifier: PeerVerifier | None,
    state: RunStateStore | None,
    progress: Progress,
) -> SegmentationOutcome:
    """Fit the model (or take the one the plan gives), then count S12's tables with it;
    raises SegmentationFailed."""
    params = SecureParams.for_plan(len(participants), plan.min_nodes, plan.degree, plan.threshold)
    timeout_ms = int(plan.task_timeout_s * 1000)

    def checkpoint(analysis_id: str, task_id: str) -> StageCheckpoint:
        assert state is not None
        return StateCheckpoint(state, run_id, analysis_id, task_id)

    rounds = SecureRounds(
        transport,
        participants,
        params,
        run_id=run_id,
        fit_id=seg.id,
        timeout_ms=timeout_ms,
        verifier=verifier,
        progress=progress,
        store=_StateRounds(state, run_id) if state is not None else None,
        checkpoints=checkpoint if state is not None else None,
    )
    records = state.analyses(run_id) if state is not None else {}

    async def count(table: SegmentTable, centres: tuple[tuple[float, ...], ...]) -> AggregatedTable:
        """One S12 table counted with the centres in a secure round (or restored, if done)."""
        analysis_id = f"{seg.id}/{table.id}"
        record = records.get(analysis_id)
        if record is not None and record.status == "done" and record.result is not None:
            return table_from_record(_table_analysis(seg, table), record.result)
        query = seg.table_query(table, centres)
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
                checkpoint=checkpoint(analysis_id, task.task_id) if state is not None else None,
            )
        except SecureRoundFailed as err:
            raise SegmentationFailed(f"table {table.id}: {err}", err.charged) from err
        aggregated = aggregate_secure(_table_analysis(seg, table), done)
        if state is not None:
            state.save_analysis(run_id, analysis_id, table_record(aggregated))
        return aggregated

    if seg.model_file:
        # A model made before: no fit, only the tables with its centres.
        model = applied_model(plan, seg, run_id)
        if state is not None:
            _same_model_as_before(state, run_id, seg, records)
        centres = tuple(s.centre for s in model.segments)
        tables = [await count(t, centres) for t in seg.tables]
        return SegmentationOutcome(with_shares_of(model, tables), tables)
    settings = FitSettings(
        k=seg.k,
        rho=seg.rho,
        space=seg.space,
        as_of=seg.as_of,
        max_depth=seg.max_depth,
        max_lloyd_rounds=seg.max_lloyd_rounds,
    )
    result = await fit(settings, rounds, fit_seed(run_id, seg.id), progress)
    centres = tuple(tuple(float(v) for v in c) for c in result.centres)
    tables = [await count(t, centres) for t in seg.tables]
    model = build_model(plan, seg, run_id, participants, result, rounds.dropped)
    return SegmentationOutcome(model, tables)


def _table_analysis(seg: Segmentation, table: SegmentTable) -> Analysis:
    return Analysis(
        table.id,
        f"{seg.title}: customers by segment and {table.by.replace('_', ' ')}",
        seg.table_histogram(table),
    )


def _same_model_as_before(
    state: RunStateStore, run_id: str, seg: Segmentation, records: dict[str, Any]
) -> None:
    """A resumed run must apply the model file it began with: the plan's hash covers the plan's
    text, not the file it names, and tables counted with other centres cannot be mixed."""
    key = f"{seg.id}/model"
    record = records.get(key)
    before = record.result.get("file_sha256") if record is not None and record.result else None
    if before is None:
        state.save_analysis(run_id, key, {"file": seg.model_file, "file_sha256": seg.model_sha256})
    elif before != seg.model_sha256:
        raise SegmentationFailed(
            f"the model file {seg.model_file} changed since this run began (sha256"
            f" {before[:12]} then, {seg.model_sha256[:12]} now); put the original back to resume"
            " the run, or start a new run"
        )


def with_shares_of(model: SegmentModel, tables: list[AggregatedTable]) -> SegmentModel:
    """The model with the sector's segment shares of this run, from the first S12 table's noisy
    counts summed over its other dimension (post-processing); the model's own shares stay in
    its card. Without a table the shares are unknown."""
    shares: list[float | None] = [None] * model.k
    if tables and tables[0].sums:
        per_segment = np.asarray(tables[0].sums, dtype=np.float64).reshape(model.k, -1).sum(axis=1)
        clipped = np.maximum(per_segment, 0.0)
        if clipped.sum() > 0:
            shares = [float(v) for v in clipped / clipped.sum()]
    segments = tuple(
        Segment(x.key, x.label, x.description, x.centre, share)
        for x, share in zip(model.segments, shares, strict=True)
    )
    card = dict(model.card)
    card["applied"] = {
        **card.get("applied", {}),
        "model_shares": [x.share for x in model.segments],
        "shares": (
            f"this run's, from the noisy counts of {tables[0].analysis.id} summed per segment"
            if tables
            else "unknown: the segmentation has no S12 table"
        ),
    }
    return SegmentModel(model.model_id, model.title, model.space, segments, card)


def applied_model(plan: Plan, seg: Segmentation, run_id: str) -> SegmentModel:
    """The model a plan applies, as it was given (same id, centres and card), with a note in
    its card of the run that applied it and the file's SHA-256."""
    if seg.model is None:
        raise SegmentationFailed(
            f"the model file {seg.model_file!r} was not read: a plan that applies a model must"
            " be loaded from its file (the path is relative to the plan's folder)"
        )
    applied = {
        "run_id": run_id,
        "plan_id": plan.id,
        "plan_sha256": plan.sha256,
        "file": seg.model_file,
        "file_sha256": seg.model_sha256,
        "note": (
            "applied without fitting: this run counted the S12 tables with these centres and"
            " spent nothing on a fit; the segments' shares are this run's, the rest of the card"
            " (privacy, quality, provenance) is the model's own, from when it was made"
        ),
    }
    m = seg.model
    return SegmentModel(m.model_id, m.title, m.space, m.segments, {**m.card, "applied": applied})


def build_model(
    plan: Plan,
    seg: Segmentation,
    run_id: str,
    participants: list[str],
    result: FitResult,
    dropped: dict[str, str],
) -> SegmentModel:
    space = seg.space
    sizes = np.maximum(result.sizes, 0.0)
    shares = sizes / sizes.sum() if sizes.sum() > 0 else np.full(seg.k, 1.0 / seg.k)
    texts = describe(space, result.centres, sizes)
    segments = tuple(
        Segment(
            key=key,
            label=text.label,
            description=text.description,
            centre=tuple(float(v) for v in centre),
            share=float(share),
        )
        for key, text, centre, share in zip(
            seg.segment_keys, texts, result.centres, shares, strict=True
        )
    )
    spent_tables = compose([t.rho for t in seg.tables])
    card: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "feature_set": CUSTOMER_FEATURE_SET,
        "k": seg.k,
        "method": {**METHOD, "stopped": result.stopped},
        "privacy": {
            "unit": "one customer account at one institution",
            "mode": "secure aggregation (SecAgg+) with distributed discrete Gaussian noise",
            "n_min": plan.min_nodes,
            "rho_declared": str(seg.rho),
            "epsilon_declared": seg.epsilon,
            "rho_spent": str(result.spent),
            "epsilon_spent": epsilon_of(result.spent, plan.delta),
            "delta": plan.delta,
            "rho_tables": str(spent_tables),
            "epsilon_with_tables": epsilon_of(result.spent + spent_tables, plan.delta),
            "conversion": (
                "rho-zCDP to (epsilon, delta)-DP by OpenDP (make_zCDP_to_approxDP) at the"
                " plan's delta; an epsilon in the plan is turned into the largest rho that"
                " converts to at most that epsilon (privacy.budget.rho_for_epsilon)"
            ),
        },
        "quality": {
            "customers_noisy": round(result.customers),
            "leaves": result.leaves,
            "cost_per_customer_noisy": float(result.costs.sum() / max(sizes.sum(), 1.0)),
            "cost_noise_sd": result.cost_sd,
            "what": (
                "mean squared distance of a customer to the nearest centre, in the scaled space,"
                " of the centres the last round started from (the final centres' cost is at most"
                " this, up to noise); on synthetic sectors the federated model's cost is compared"
                " with non-private pooled k-means in benchmarks/segmentation.py"
            ),
            "segment_sizes_noisy": [round(float(v)) for v in result.sizes],
        },
        "rounds": [
            {
                "key": r.key,
                "step": r.step,
                "rho": str(r.rho),
                "values": r.values,
                "contributors": r.contributors,
                "noise_sd": r.noise_sd,
                "note": r.note,
            }
            for r in result.rounds
        ],
        "provenance": {
            "plan_id": plan.id,
            "plan_sha256": plan.sha256,
            "run_id": run_id,
            "participants": participants,
            "dropped": dropped,
        },
    }
    body = json.dumps([s.centre for s in segments]).encode()
    model_id = f"seg-{hashlib.sha256(run_id.encode() + body).hexdigest()[:16]}"
    return SegmentModel(model_id, seg.title, space, segments, card)


def segmentation_record(outcome: SegmentationOutcome) -> dict[str, Any]:
    """What is saved of a finished segmentation: enough to release it after a restart."""
    return {
        "model": outcome.model.to_json(),
        "tables": {t.analysis.id: table_record(t) for t in outcome.tables},
    }


def segmentation_from_record(seg: Segmentation, record: dict[str, Any]) -> SegmentationOutcome:
    model = model_from_json(record["model"], f"saved model of {seg.id}")
    tables = [
        table_from_record(_table_analysis(seg, t), record["tables"][t.id])
        for t in seg.tables
        if t.id in record["tables"]
    ]
    return SegmentationOutcome(model, tables)
