"""Answering one task, independent of how it arrived (gRPC, in-process, Flower).

Order of operations, each step able to refuse: structural checks (done when decoding) -> local
policy -> ledger charge (or the stored answer of an earlier delivery) -> local computation ->
noise -> answer stored -> answer returned. Only the last step lets anything out, and only what
the ledger already holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from node.data import TicketTable
from node.ledger import ChargeRequest, Ledger, NewCharge, PendingCharge, StoredAnswer
from node.policy import Policy
from node.queries import bounded_counts, mechanism_for
from protocols.errors import INTERNAL_MESSAGE, ErrorCode, PublicError
from protocols.messages import ErrorInfo, HistogramAnswer, HistogramQuery, Task, TaskResult
from protocols.serde import (
    decode_node_message,
    encode_node_message,
    task_digest,
)

log = logging.getLogger("publiek.node")

# Refusals worth keeping in the institution's own record of what it was asked.
_RECORDED_REFUSALS = {
    ErrorCode.POLICY_REFUSED,
    ErrorCode.BUDGET_EXCEEDED,
    ErrorCode.TASK_ID_CONFLICT,
    ErrorCode.INVALID_TASK,
    ErrorCode.UNSUPPORTED_TASK,
}


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    institution_id: str
    institution_type: str


def describe(query: HistogramQuery) -> str:
    dims = " x ".join(d.name for d in query.dimensions)
    return f"{query.statistic}: {query.measure} by {dims} ({query.mode.value} mode)"


class TaskHandler:
    def __init__(
        self, identity: NodeIdentity, table: TicketTable, ledger: Ledger, policy: Policy
    ) -> None:
        self.identity = identity
        self.table = table
        self.ledger = ledger
        self.policy = policy

    def handle(self, task: Task, requester: str) -> TaskResult:
        """Answer a task or say why not. Never raises; never puts internal detail on the wire."""
        query = task.spec
        charged = False
        try:
            self.policy.check(query)
            mechanism = mechanism_for(query)
            outcome = self.ledger.begin(
                ChargeRequest(
                    task_id=task.task_id,
                    spec_digest=task_digest(task),
                    run_id=task.run_id,
                    analysis_id=task.analysis_id,
                    requester=requester,
                    description=describe(query),
                    mode=query.mode.value,
                    rho=query.rho,
                )
            )
            if isinstance(outcome, StoredAnswer):
                log.info("task %s was answered before; sending the stored answer", task.task_id)
                return _replayed(outcome.answer)
            charged = isinstance(outcome, NewCharge | PendingCharge)
            counts = bounded_counts(self.table, query, self.identity.institution_type)
            noisy = mechanism.release(counts)
            result = TaskResult(
                task_id=task.task_id,
                outcome=HistogramAnswer(
                    values=tuple(int(v) for v in noisy),
                    noise_scale=mechanism.noise.scale,
                    rho=query.rho,
                ),
            )
            stored = self.ledger.record_answer(task.task_id, encode_node_message(result))
            log.info(
                "answered task %s (%s) at rho %s; rho %s left this period",
                task.task_id,
                describe(query),
                query.rho,
                self.ledger.remaining(),
            )
            return _decode_result(stored)
        except PublicError as err:
            log.warning("refused task %s: %s", task.task_id, err)
            if err.code in _RECORDED_REFUSALS:
                self.ledger.record_refusal(
                    task.task_id, requester, describe(query), err.code.value, err.message
                )
            if charged:
                self.ledger.record_failure(task.task_id, err.message)
            return TaskResult(task.task_id, ErrorInfo(err.code, err.message))
        except Exception:
            # Our bug, not the coordinator's: full detail stays in the local log.
            log.exception("internal error while answering task %s", task.task_id)
            if charged:
                self.ledger.record_failure(task.task_id, "internal error (see node log)")
            return TaskResult(task.task_id, ErrorInfo(ErrorCode.INTERNAL, INTERNAL_MESSAGE))


def _decode_result(blob: bytes) -> TaskResult:
    msg = decode_node_message(blob)
    if not isinstance(msg, TaskResult):
        raise TypeError("the ledger holds something other than a task result")
    return msg


def _replayed(blob: bytes) -> TaskResult:
    result = _decode_result(blob)
    if isinstance(result.outcome, HistogramAnswer):
        return replace(result, outcome=replace(result.outcome, replayed=True))
    return result
