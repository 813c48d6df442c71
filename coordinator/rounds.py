"""One round: send a task to every participant, collect answers, and say why anyone is missing.

Written against ``coordinator.transport.Transport`` only. A node that drops out mid-round gets
the same task again when it reconnects before the deadline: its ledger returns the stored
answer (or computes the first one, if none left it), so a retry never costs budget twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from coordinator.transport import NodeUnavailable, TaskTimedOut, Transport
from protocols.messages import ErrorInfo, HistogramAnswer, Task
from protocols.secagg import SecAggResponse


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    institution_id: str
    answer: HistogramAnswer | SecAggResponse | None
    reason: str | None = None  # why there is no (usable) answer


Progress = Callable[[str], None]
PROGRESS_EVERY_S = 1.0


async def _one(transport: Transport, node: str, task: Task, deadline: float) -> NodeOutcome:
    while True:
        try:
            result = await transport.submit(node, task)
        except TaskTimedOut as err:
            return NodeOutcome(node, None, str(err))
        except NodeUnavailable as err:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await transport.wait_for_node(node, remaining):
                return NodeOutcome(node, None, f"dropped out: {err}")
            continue  # reconnected in time: ask again (same task id, so no second charge)
        if isinstance(result.outcome, ErrorInfo):
            return NodeOutcome(
                node, None, f"refused: {result.outcome.code.value}: {result.outcome.message}"
            )
        return NodeOutcome(node, result.outcome)


async def collect(
    transport: Transport,
    tasks: Mapping[str, Task],
    progress: Progress | None = None,
    label: str | None = None,
) -> list[NodeOutcome]:
    """Send each node its task (all at once) and gather the outcomes, sorted by node."""
    if not tasks:
        return []
    timeout_ms = max(t.timeout_ms for t in tasks.values())
    deadline = time.monotonic() + timeout_ms / 1000.0
    pending = {
        asyncio.create_task(_one(transport, node, task, deadline)): node
        for node, task in tasks.items()
    }
    what = label or next(iter(tasks.values())).analysis_id
    outcomes: list[NodeOutcome] = []
    answered = 0
    started = last_report = time.monotonic()
    while pending:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for fut in done:
            pending.pop(fut)
            outcome = fut.result()
            outcomes.append(outcome)
            answered += outcome.answer is not None
            if progress and outcome.answer is None:  # a missing node is always worth a line
                progress(f"{what}: {outcome.institution_id} missing: {outcome.reason}")
        now = time.monotonic()
        # Between the first and the last answer, at most one line a second (500 nodes
        # answering must not mean 500 lines).
        if progress and pending and now - last_report >= PROGRESS_EVERY_S:
            progress(f"{what}: {answered}/{len(tasks)} answered so far")
            last_report = now
    if progress:
        progress(f"{what}: {answered}/{len(tasks)} answered in {time.monotonic() - started:.2f} s")
    return sorted(outcomes, key=lambda o: o.institution_id)
