"""Running a plan: wait for nodes, run one round per analysis, assemble the release."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coordinator.aggregate import AggregatedTable, RoundFailed, aggregate_open, aggregate_secure
from coordinator.release import FailedAnalysis, build_release
from coordinator.rounds import collect
from coordinator.secure import (
    SecureParams,
    SecureRoundFailed,
    StageCheckpoint,
    run_secure_round,
)
from coordinator.state import RunStateStore
from coordinator.transport import NodeInfo, Transport
from protocols.identity import PeerVerifier
from protocols.messages import ReleaseMode, Task, TaskResult
from protocols.plan import Analysis, Plan
from protocols.secagg import SecAggReply, SecAggResponse
from protocols.serde import decode_node_message, encode_node_message
from protocols.version import CAP_HISTOGRAM, CAP_MODE_OPEN, CAP_MODE_SECURE, CAP_SECAGG

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
                    _StateCheckpoint(state, run_id, analysis.id, task.task_id)
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
    if not tables:
        raise RunAborted("no analysis could be released: " + "; ".join(f.reason for f in failed))
    return build_release(
        plan=plan,
        run_id=run_id,
        coordinator_id=settings.coordinator_id,
        participants=participants,
        tables=tables,
        failed=failed,
    )


def _absent(institution_id: str) -> NodeInfo:
    return NodeInfo(institution_id, "not connected at release time", 0, (), "", 0.0)


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


class _StateCheckpoint:
    """Secure stages saved in the run state, each node's reply in its wire encoding."""

    def __init__(self, state: RunStateStore, run_id: str, analysis_id: str, task_id: str) -> None:
        self.state = state
        self.run_id = run_id
        self.analysis_id = analysis_id
        self.task_id = task_id

    def load(self) -> tuple[str, dict[str, dict[str, SecAggReply]]] | None:
        saved = self.state.stages(self.run_id, self.analysis_id)
        if saved is None:
            return None
        stages: dict[str, dict[str, SecAggReply]] = {}
        for stage, replies in saved.stages.items():
            stages[stage] = {}
            for node, blob in replies.items():
                msg = decode_node_message(blob)
                if isinstance(msg, TaskResult) and isinstance(msg.outcome, SecAggResponse):
                    stages[stage][node] = msg.outcome.stage
        return saved.round_id, stages

    def save(self, round_id: str, stage: str, replies: dict[str, SecAggReply]) -> None:
        self.state.save_stage(
            self.run_id,
            self.analysis_id,
            round_id,
            stage,
            {
                node: encode_node_message(TaskResult(self.task_id, SecAggResponse(round_id, reply)))
                for node, reply in replies.items()
            },
        )


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
    params = SecureParams.default(len(ids), n_min=plan.min_nodes)
    if plan.degree is not None or plan.threshold is not None:
        degree = min(plan.degree or params.degree, len(ids) - 1)
        params = SecureParams(
            n_min=plan.min_nodes,
            degree=degree,
            threshold=min(plan.threshold or degree // 2 + 1, degree),
        )
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
