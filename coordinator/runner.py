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
from coordinator.secure import SecureParams, SecureRoundFailed, run_secure_round
from coordinator.transport import NodeInfo, Transport
from protocols.identity import PeerVerifier
from protocols.messages import ReleaseMode, Task
from protocols.plan import Analysis, Plan
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
    """Run every analysis of the plan; returns the release document (not yet written)."""
    run_id = settings.run_id or new_run_id(plan)
    progress(f"run {run_id}: waiting for {settings.wait_for_nodes} node(s)")
    nodes = await transport.wait_for_nodes(settings.wait_for_nodes, settings.wait_timeout_s)
    participants, skipped = _eligible(nodes, plan)
    for node, why in skipped:
        progress(f"{node} cannot take part: {why}")
    progress(
        f"{len(participants)} node(s) taking part: "
        + ", ".join(n.institution_id for n in participants)
    )
    if len(participants) < plan.min_nodes:
        raise RunAborted(
            f"only {len(participants)} eligible node(s) connected within"
            f" {settings.wait_timeout_s:.0f} s; the plan needs at least {plan.min_nodes}"
        )
    ids = [n.institution_id for n in participants]
    tables: list[AggregatedTable] = []
    failed: list[FailedAnalysis] = []
    for i, analysis in enumerate(plan.analyses, start=1):
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
                tables.append(aggregate_open(analysis, outcomes, plan.min_nodes))
            else:
                tables.append(
                    await _secure(plan, analysis, task, ids, transport, settings, progress)
                )
        except RoundFailed as err:
            progress(f"analysis {analysis.id} failed: {err}")
            failed.append(FailedAnalysis(analysis.id, str(err)))
        except SecureRoundFailed as err:
            progress(f"analysis {analysis.id} failed: {err}")
            charged = ", ".join(err.charged) or "nobody"
            failed.append(
                FailedAnalysis(analysis.id, f"{err} (charged, as their ledgers show: {charged})")
            )
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


async def _secure(
    plan: Plan,
    analysis: Analysis,
    task: Task,
    ids: list[str],
    transport: Transport,
    settings: RunSettings,
    progress: Progress,
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
    )
    if result.dropped:
        progress(
            f"{analysis.id}: dropped: " + "; ".join(f"{k} ({v})" for k, v in result.dropped.items())
        )
    return aggregate_secure(analysis, result)
