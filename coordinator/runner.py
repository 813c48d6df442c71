"""Running a plan: wait for nodes, run one round per analysis, assemble the release."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coordinator.aggregate import (
    AggregatedTable,
    RoundFailed,
    aggregate_open,
    aggregate_secure,
    table_from_record,
    table_record,
)
from coordinator.checkpoints import StateCheckpoint
from coordinator.reach_run import ReachFailed, run_reach
from coordinator.release import FailedAnalysis, build_release
from coordinator.rounds import collect
from coordinator.secure import (
    SecureParams,
    SecureRoundFailed,
    StageCheckpoint,
    run_secure_round,
)
from coordinator.segmentation import SegmentationFailed
from coordinator.segmentation_run import (
    SegmentationOutcome,
    run_segmentation,
    segmentation_from_record,
    segmentation_record,
)
from coordinator.state import RunStateStore
from coordinator.transport import NodeInfo, Transport
from protocols.identity import PeerVerifier
from protocols.messages import ReleaseMode, Task
from protocols.plan import Analysis, Plan
from protocols.reach_plan import Reach
from protocols.segmentation_plan import Segmentation
from protocols.version import (
    CAP_HISTOGRAM,
    CAP_KMEANS,
    CAP_MODE_OPEN,
    CAP_MODE_SECURE,
    CAP_REACH,
    CAP_SECAGG,
    match_key_fingerprint,
)

log = logging.getLogger("publiek.coordinator")

Progress = Callable[[str], None]


class RunAborted(Exception):
    """The run could not start (too few nodes) or released nothing."""


@dataclass(frozen=True, slots=True)
class RunSettings:
    coordinator_id: str
    wait_for_nodes: int
    wait_timeout_s: float
    run_id: str | None = None
    # The sector CA, to check nodes' signed keys in secure rounds (None without TLS: the nodes
    # still check each other).
    verifier: PeerVerifier | None = None
    # Where the run is recorded as it goes, and resumed from after a restart.
    state: RunStateStore | None = None


def new_run_id(plan: Plan) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{plan.id}-{stamp}-{uuid.uuid4().hex[:6]}"


def _eligible(nodes: list[NodeInfo], plan: Plan) -> tuple[list[NodeInfo], list[tuple[str, str]]]:
    if plan.mode is ReleaseMode.OPEN:
        needed = {CAP_HISTOGRAM, CAP_MODE_OPEN}
    else:
        needed = {CAP_HISTOGRAM, CAP_MODE_SECURE, CAP_SECAGG}
    ok, skipped = [], []
    for n in nodes:
        missing = needed - set(n.capabilities)
        if missing:
            skipped.append((n.institution_id, f"lacks capability {', '.join(sorted(missing))}"))
        else:
            ok.append(n)
    return ok, skipped


async def run_plan(
    plan: Plan, transport: Transport, settings: RunSettings, progress: Progress
) -> dict[str, Any]:
    """Run every analysis of the plan; returns the release document (not yet written).

    With ``settings.state`` the run is recorded as it goes (participants, each analysis's
    result, each secure stage), and an unfinished run of the same plan is resumed: finished
    analyses are not asked again, and the analysis that was under way continues with the same
    task id (open mode: nodes send their stored answers) or the same secure round (nodes still
    hold its state). No node is charged twice for a task.
    """
    state = settings.state
    run_id = settings.run_id
    if run_id is None and state is not None:
        run_id = state.unfinished_run(plan.sha256)
        if run_id is not None:
            progress(f"resuming run {run_id}")
    run_id = run_id or new_run_id(plan)
    if state is not None:
        state.begin_run(run_id, plan.id, plan.sha256, plan.source_text)
    known = state.participants(run_id) if state is not None else None
    wanted = len(known) if known else settings.wait_for_nodes
    progress(f"run {run_id}: waiting for {wanted} node(s)")
    nodes = await transport.wait_for_nodes(wanted, settings.wait_timeout_s)
    eligible, skipped = _eligible(nodes, plan)
    for node, why in skipped:
        progress(f"{node} cannot take part: {why}")
    if known:
        # A resumed run keeps its participants: task ids and secure rounds name them.
        by_id = {n.institution_id: n for n in eligible}
        participants = [by_id.get(i) or _absent(i) for i in known]
        missing = [i for i in known if i not in by_id]
        if missing:
            progress(f"not (yet) connected: {', '.join(missing)}")
    else:
        participants = eligible
        if len(participants) < plan.min_nodes:
            raise RunAborted(
                f"only {len(participants)} eligible node(s) connected within"
                f" {settings.wait_timeout_s:.0f} s; the plan needs at least {plan.min_nodes}"
            )
        if state is not None:
            state.set_participants(run_id, [n.institution_id for n in participants])
    progress(
        f"{len(participants)} node(s) taking part: "
        + ", ".join(n.institution_id for n in participants)
    )
    ids = [n.institution_id for n in participants]
    records = state.analyses(run_id) if state is not None else {}
    tables: list[AggregatedTable] = []
    failed: list[FailedAnalysis] = []
    for i, analysis in enumerate(plan.analyses, start=1):
        record = records.get(analysis.id)
        if record is not None and record.status == "done" and record.result is not None:
            progress(f"analysis {i}/{len(plan.analyses)}: {analysis.id} done before the restart")
            tables.append(table_from_record(analysis, record.result))
            continue
        if record is not None and record.status == "failed":
            progress(f"analysis {i}/{len(plan.analyses)}: {analysis.id} failed before the restart")
            failed.append(FailedAnalysis(analysis.id, record.reason or "failed"))
            continue
        progress(f"analysis {i}/{len(plan.analyses)}: {analysis.id} ({analysis.title})")
        task = Task(
            task_id=f"{run_id}/{analysis.id}",
            run_id=run_id,
            analysis_id=analysis.id,
            timeout_ms=int(plan.task_timeout_s * 1000),
            spec=analysis.query,
        )
        try:
            if plan.mode is ReleaseMode.OPEN:
                outcomes = await collect(transport, dict.fromkeys(ids, task), progress)
                table = aggregate_open(analysis, outcomes, plan.min_nodes)
            else:
                checkpoint = (
                    StateCheckpoint(state, run_id, analysis.id, task.task_id)
                    if state is not None
                    else None
                )
                table = await _secure(
                    plan, analysis, task, ids, transport, settings, progress, checkpoint
                )
        except RoundFailed as err:
            progress(f"analysis {analysis.id} failed: {err}")
            failed.append(FailedAnalysis(analysis.id, str(err)))
            if state is not None:
                state.fail_analysis(run_id, analysis.id, str(err), [])
            continue
        except SecureRoundFailed as err:
            progress(f"analysis {analysis.id} failed: {err}")
            charged = ", ".join(err.charged) or "nobody"
            reason = f"{err} (charged, as their ledgers show: {charged})"
            failed.append(FailedAnalysis(analysis.id, reason))
            if state is not None:
                state.fail_analysis(run_id, analysis.id, reason, list(err.charged))
            continue
        tables.append(table)
        if state is not None:
            state.save_analysis(run_id, analysis.id, table_record(table))
    models = []
    for seg in plan.segmentations:
        outcome = await _segmentation(
            plan, seg, run_id, participants, transport, settings, progress
        )
        if isinstance(outcome, FailedAnalysis):
            failed.append(outcome)
            continue
        tables += outcome.tables
        models.append(outcome.model.to_json())
    reach_tables: list[dict[str, Any]] = []
    for reach in plan.reaches:
        done = await _reach(plan, reach, run_id, participants, transport, settings, progress)
        if isinstance(done, FailedAnalysis):
            failed.append(done)
        else:
            reach_tables += done
    if not tables and not models and not reach_tables:
        raise RunAborted("no analysis could be released: " + "; ".join(f.reason for f in failed))
    return build_release(
        plan=plan,
        run_id=run_id,
        coordinator_id=settings.coordinator_id,
        participants=participants,
        tables=tables,
        failed=failed,
        segmentations=models,
        reach_tables=reach_tables,
    )


async def _reach(
    plan: Plan,
    reach: Reach,
    run_id: str,
    participants: list[NodeInfo],
    transport: Transport,
    settings: RunSettings,
    progress: Progress,
) -> list[dict[str, Any]] | FailedAnalysis:
    """Run (or restore) one [[reach]] section; its S7-S10 tables, or why it failed."""
    state = settings.state
    record = state.analyses(run_id).get(reach.id) if state is not None else None
    if record is not None and record.status == "failed":
        progress(f"reach {reach.id} failed before the restart")
        return FailedAnalysis(reach.id, record.reason or "failed")
    # Only nodes holding match keys can answer; the others sit this one out.
    able = [
        n.institution_id for n in participants if CAP_REACH in n.capabilities or not n.session_id
    ]
    for n in participants:
        if n.institution_id not in able:
            progress(f"{n.institution_id} takes no part in {reach.id}: lacks {CAP_REACH}")
    progress(f"reach {reach.id} ({reach.title}): rho {reach.total_rho} per node")
    try:
        mixed = mixed_match_keys([n for n in participants if n.institution_id in able])
        if mixed:
            raise ReachFailed(mixed, ())
        if len(able) < plan.min_nodes:
            raise ReachFailed(
                f"only {len(able)} node(s) hold match keys; the plan needs {plan.min_nodes}", ()
            )
        return await run_reach(
            plan,
            reach,
            run_id,
            able,
            transport,
            verifier=settings.verifier,
            state=state,
            progress=progress,
        )
    except ReachFailed as err:
        charged = ", ".join(err.charged) or "nobody"
        reason = f"{err} (charged for that round, as their ledgers show: {charged})"
        progress(f"reach {reach.id} failed: {reason}")
        if state is not None:
            state.fail_analysis(run_id, reach.id, reason, list(err.charged))
        return FailedAnalysis(reach.id, reason)


async def _segmentation(
    plan: Plan,
    seg: Segmentation,
    run_id: str,
    participants: list[NodeInfo],
    transport: Transport,
    settings: RunSettings,
    progress: Progress,
) -> SegmentationOutcome | FailedAnalysis:
    """Fit (or restore) one segmentation; its model and S12 tables, or why it failed."""
    state = settings.state
    record = state.analyses(run_id).get(seg.id) if state is not None else None
    if record is not None and record.status == "done" and record.result is not None:
        progress(f"segmentation {seg.id} done before the restart")
        return segmentation_from_record(seg, record.result)
    if record is not None and record.status == "failed":
        progress(f"segmentation {seg.id} failed before the restart")
        return FailedAnalysis(seg.id, record.reason or "failed")
    # Only nodes that hold customer features can answer; the others sit this one out.
    able = [
        n.institution_id for n in participants if CAP_KMEANS in n.capabilities or not n.session_id
    ]
    for n in participants:
        if n.institution_id not in able:
            progress(f"{n.institution_id} takes no part in {seg.id}: lacks capability {CAP_KMEANS}")
    if seg.model_file:
        progress(
            f"segmentation {seg.id} ({seg.title}): applies model {seg.model_file}"
            f" ({seg.k} segments), no fit"
        )
    else:
        progress(f"segmentation {seg.id} ({seg.title}): k = {seg.k}, rho up to {seg.rho} per node")
    try:
        if len(able) < plan.min_nodes:
            raise SegmentationFailed(
                f"only {len(able)} node(s) can answer k-means rounds; the plan needs"
                f" {plan.min_nodes}"
            )
        outcome = await run_segmentation(
            plan,
            seg,
            run_id,
            able,
            transport,
            verifier=settings.verifier,
            state=state,
            progress=progress,
        )
    except SegmentationFailed as err:
        charged = ", ".join(err.charged) or "nobody"
        reason = f"{err} (charged for that round, as their ledgers show: {charged})"
        progress(f"segmentation {seg.id} failed: {reason}")
        if state is not None:
            state.fail_analysis(run_id, seg.id, reason, list(err.charged))
        return FailedAnalysis(seg.id, reason)
    if state is not None:
        state.save_analysis(run_id, seg.id, segmentation_record(outcome))
    labels = "; ".join(f"{s.key}: {s.label}" for s in outcome.model.segments)
    progress(f"segmentation {seg.id}: {labels}")
    return outcome


def _absent(institution_id: str) -> NodeInfo:
    return NodeInfo(institution_id, "not connected at release time", 0, (), "", 0.0)


async def _secure(
    plan: Plan,
    analysis: Analysis,
    task: Task,
    ids: list[str],
    transport: Transport,
    settings: RunSettings,
    progress: Progress,
    checkpoint: StageCheckpoint | None,
) -> AggregatedTable:
    params = SecureParams.for_plan(len(ids), plan.min_nodes, plan.degree, plan.threshold)
    result = await run_secure_round(
        transport,
        task,
        analysis.query,
        ids,
        params,
        verifier=settings.verifier,
        progress=progress,
        checkpoint=checkpoint,
    )
    if result.dropped:
        progress(
            f"{analysis.id}: dropped: " + "; ".join(f"{k} ({v})" for k, v in result.dropped.items())
        )
    return aggregate_secure(analysis, result)


def mixed_match_keys(nodes: list[NodeInfo]) -> str:
    """Why these nodes cannot share a reach sketch ("" if they can): different match-key
    secrets (by their announced fingerprints) put one person in different buckets, silently."""
    by_key: dict[str, list[str]] = {}
    for n in nodes:
        fingerprint = match_key_fingerprint(n.capabilities)
        if fingerprint is not None:
            by_key.setdefault(fingerprint, []).append(n.institution_id)
    if len(by_key) < 2:
        return ""
    groups = "; ".join(
        f"fingerprint {fp}: {', '.join(sorted(ids))}" for fp, ids in sorted(by_key.items())
    )
    return (
        f"the nodes hold different match-key secrets ({groups}); their sketches would not"
        " match the same person, so no reach round was started and nobody was charged."
        " Give every node the sector's key file (publiek-node check prints its fingerprint)"
    )
