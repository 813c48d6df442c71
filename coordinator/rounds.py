"""One round: send a task to every participant, collect answers, and say why anyone is missing.

Written against ``coordinator.transport.Transport`` only. A node that drops out mid-round gets
the same task again when it reconnects before the deadline: its ledger returns the stored
answer (or computes the first one, if none left it), so a retry never costs budget twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.transport import NodeUnavailable, TaskTimedOut, Transport
from protocols.messages import ErrorInfo, HistogramAnswer, Task


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    institution_id: str
    answer: HistogramAnswer | None
    reason: str | None = None  # why there is no (usable) answer


Progress = Callable[[str], None]


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
    task: Task,
    participants: list[str],
    progress: Progress | None = None,
) -> list[NodeOutcome]:
    deadline = time.monotonic() + task.timeout_ms / 1000.0
    pending = {
        asyncio.create_task(_one(transport, node, task, deadline)): node for node in participants
    }
    outcomes: list[NodeOutcome] = []
    answered = 0
    while pending:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for fut in done:
            pending.pop(fut)
            outcome = fut.result()
            outcomes.append(outcome)
            answered += outcome.answer is not None
            if progress:
                note = (
                    ""
                    if outcome.answer is not None
                    else f" ({outcome.institution_id}: {outcome.reason})"
                )
                progress(f"{task.analysis_id}: {answered}/{len(participants)} answered{note}")
    return sorted(outcomes, key=lambda o: o.institution_id)
