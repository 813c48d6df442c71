"""Answering one task, independent of how it arrived (gRPC, in-process, Flower).

Open mode, in order, each step able to refuse: structural checks (done when decoding) -> local
policy -> ledger charge (or the stored answer of an earlier delivery) -> local computation ->
noise -> answer stored -> answer returned. Only the last step lets anything out, and only what
the ledger already holds.

Secure mode runs the same checks at the round's setup (policy, budget) and charges at the
masked-input stage, just before the node's (masked, noised) contribution leaves; the round's
cryptographic checks are in ``node/secure.py``.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, replace

import polars as pl

from node.data import TicketTable
from node.ledger import (
    ChargeRequest,
    Ledger,
    LedgerError,
    NewCharge,
    PendingCharge,
    StoredAnswer,
)
from node.policy import Policy
from node.queries import bounded_counts, mechanism_for
from node.reach import ReachData, reach_contribution
from node.reach import problems as reach_problems
from node.secure import Contribution, SecAggClient
from node.segments import SegmentData, kmeans_contribution
from node.segments import problems as segment_problems
from privacy.noise import IntVector
from protocols.errors import INTERNAL_MESSAGE, ErrorCode, PublicError
from protocols.identity import PeerVerifier, Signer
from protocols.kmeans import KMeansQuery
from protocols.messages import ErrorInfo, HistogramAnswer, HistogramQuery, Task, TaskResult
from protocols.reach import ReachQuery
from protocols.secagg import SecAggRequest, SecAggResponse, SecAggSetup, SecureQuery, noise_share
from protocols.serde import decode_node_message, encode_node_message, query_digest
from protocols.version import (
    CAP_KMEANS,
    CAP_MATCH_KEY,
    CAP_MODE_SECURE,
    CAP_REACH,
    CAP_SECAGG,
    NODE_CAPABILITIES,
)

log = logging.getLogger("publiek.node")

# What the coordinator is told when the ledger cannot be written (the path and the OS error
# stay in the node's own log).
LEDGER_DOWN = (
    "this node cannot record charges in its budget ledger right now, so it answers nothing;"
    " its operator can see why in the node's log"
)

# Refusals worth keeping in the institution's own record of what it was asked.
_RECORDED_REFUSALS = {
    ErrorCode.POLICY_REFUSED,
    ErrorCode.BUDGET_EXCEEDED,
    ErrorCode.TASK_ID_CONFLICT,
    ErrorCode.INVALID_TASK,
    ErrorCode.UNSUPPORTED_TASK,
    ErrorCode.SECAGG_REFUSED,
}


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    institution_id: str
    institution_type: str


def in_period(table: TicketTable, query: HistogramQuery) -> TicketTable:
    """Only the performances of the query's years count, whatever its dimensions."""
    first, last = query.years
    years = [str(y) for y in range(first, last + 1)]
    return replace(table, frame=table.frame.filter(pl.col("year").is_in(years)))


def describe(query: SecureQuery) -> str:
    if isinstance(query, KMeansQuery | ReachQuery):
        return query.describe()
    dims = " x ".join(d.name for d in query.dimensions)
    return f"{query.statistic}: {query.measure} by {dims} ({query.mode.value} mode)"


class TaskHandler:
    def __init__(
        self,
        identity: NodeIdentity,
        table: TicketTable,
        ledger: Ledger,
        policy: Policy,
        *,
        signer: Signer | None = None,
        verifier: PeerVerifier | None = None,
        segments: SegmentData | None = None,
        reach: ReachData | None = None,
    ) -> None:
        self.identity = identity
        self.table = table
        self.ledger = ledger
        self.policy = policy
        # The customers as the sector's segmentation sees them (None: it cannot take part).
        self.segments = segments
        # Its people as match keys, for sector reach (None: it cannot take part).
        self.reach = reach
        # Secure aggregation needs an identity to sign with and the sector CA to check peers.
        self.secagg = (
            SecAggClient(signer, verifier, self._contribute)
            if signer is not None and verifier is not None
            else None
        )
        self._rounds: dict[str, tuple[Task, str]] = {}  # round id -> (task, requester)
        self._lock = threading.Lock()

    @property
    def capabilities(self) -> tuple[str, ...]:
        if self.secagg is None:
            return NODE_CAPABILITIES
        kmeans = (CAP_KMEANS,) if self.segments is not None else ()
        reach: tuple[str, ...] = ()
        if self.reach is not None and self.reach.people:
            reach = (CAP_REACH,)
            if self.reach.key_fingerprint:
                reach += (f"{CAP_MATCH_KEY}{self.reach.key_fingerprint}",)
        return (*NODE_CAPABILITIES, CAP_SECAGG, CAP_MODE_SECURE, *kmeans, *reach)

    def handle(self, task: Task, requester: str) -> TaskResult:
        """Answer a task or say why not. Never raises; never puts internal detail on the wire."""
        try:
            if isinstance(task.spec, SecAggRequest):
                return self._secagg(task, task.spec, requester)
            return self._histogram(task, task.spec, requester)
        except PublicError as err:
            log.warning("refused task %s: %s", task.task_id, err)
            if err.code in _RECORDED_REFUSALS:
                self.ledger.record_refusal(
                    task.task_id, requester, self._describe(task), err.code.value, err.message
                )
            return TaskResult(task.task_id, ErrorInfo(err.code, err.message))
        except LedgerError as err:
            # Not a bug: the operator's disk or permissions. Without a charge nothing leaves.
            log.error("task %s not answered: %s", task.task_id, err)
            return TaskResult(task.task_id, ErrorInfo(ErrorCode.DATA_UNAVAILABLE, LEDGER_DOWN))
        except Exception:
            # Our bug, not the coordinator's: full detail stays in the local log.
            log.exception("internal error while answering task %s", task.task_id)
            return TaskResult(task.task_id, ErrorInfo(ErrorCode.INTERNAL, INTERNAL_MESSAGE))

    def _describe(self, task: Task) -> str:
        spec = task.spec
        if isinstance(spec, SecAggRequest):
            state = self._rounds.get(spec.round_id)
            if state is not None and isinstance(state[0].spec, SecAggRequest):
                setup = state[0].spec.stage
                if isinstance(setup, SecAggSetup):
                    return describe(setup.query)
            return f"secure round {spec.round_id}"
        return describe(spec)

    # --- open mode ---------------------------------------------------------------------------

    def _histogram(self, task: Task, query: HistogramQuery, requester: str) -> TaskResult:
        self.policy.check(
            query, spent_in_run=self.ledger.spent_in_run(task.run_id, excluding=task.task_id)
        )
        mechanism = mechanism_for(query)
        outcome = self.ledger.begin(
            self._charge_request(task, query, requester), self.policy.max_rho_per_run
        )
        if isinstance(outcome, StoredAnswer):
            log.info("task %s was answered before; sending the stored answer", task.task_id)
            return _replayed(outcome.answer)
        try:
            counts = bounded_counts(
                in_period(self.table, query), query, self.identity.institution_type
            )
            noisy = mechanism.release(counts)
        except BaseException as err:
            self.ledger.record_failure(task.task_id, _failure_text(err))
            raise
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

    def _charge_request(self, task: Task, query: SecureQuery, requester: str) -> ChargeRequest:
        return ChargeRequest(
            task_id=task.task_id,
            spec_digest=query_digest(query),
            run_id=task.run_id,
            analysis_id=task.analysis_id,
            requester=requester,
            description=describe(query),
            mode=query.mode.value,
            rho=query.rho,
        )

    # --- secure mode -------------------------------------------------------------------------

    def _secagg(self, task: Task, request: SecAggRequest, requester: str) -> TaskResult:
        if self.secagg is None:
            raise PublicError(
                ErrorCode.POLICY_REFUSED,
                "this node has no identity certificate configured, which secure aggregation"
                " needs (to sign its keys and check its peers')",
            )
        stage = request.stage
        if isinstance(stage, SecAggSetup):
            self._admit(task, stage, requester)
            with self._lock:
                self._rounds[request.round_id] = (task, requester)
        elif request.round_id in self._rounds:
            known_task, _ = self._rounds[request.round_id]
            if known_task.task_id != task.task_id:
                raise PublicError(
                    ErrorCode.SECAGG_REFUSED,
                    f"round {request.round_id} belongs to task {known_task.task_id}",
                )
        reply = self.secagg.handle(request)
        return TaskResult(task.task_id, SecAggResponse(request.round_id, reply))

    def _admit(self, task: Task, setup: SecAggSetup, requester: str) -> None:
        """Refuse at setup what would be refused later: policy, budget, an earlier contribution."""
        query = setup.query
        self.policy.check(
            query,
            n_min=setup.n_min,
            spent_in_run=self.ledger.spent_in_run(task.run_id, excluding=task.task_id),
        )
        if isinstance(query, KMeansQuery):
            reasons = segment_problems(query, self.segments)
            if reasons:
                raise PublicError(ErrorCode.DATA_UNAVAILABLE, "; ".join(reasons))
        if isinstance(query, ReachQuery):
            reasons = reach_problems(query, self.reach)
            if reasons:
                raise PublicError(ErrorCode.DATA_UNAVAILABLE, "; ".join(reasons))
        problem = self.ledger.preflight(self._charge_request(task, query, requester))
        if problem is not None:
            raise problem

    def _contribute(self, round_id: str, setup: SecAggSetup) -> Contribution:
        task, requester = self._rounds[round_id]
        query = setup.query
        outcome = self.ledger.begin(
            self._charge_request(task, query, requester), self.policy.max_rho_per_run
        )
        if isinstance(outcome, StoredAnswer):
            # Re-sending the same noisy vector in a new round with other participants would let
            # the coordinator difference it out; a new contribution needs a new task (and charge).
            raise PublicError(
                ErrorCode.TASK_ID_CONFLICT,
                f"this node's contribution to task {task.task_id} already left in an earlier"
                " round; a new round needs a new task id (and is charged anew)",
            )
        assert isinstance(outcome, NewCharge | PendingCharge)
        try:
            counts = self._bounded(query)
            noise = noise_share(setup)
            noisy = noise.share.sample(counts)
        except BaseException as err:
            self.ledger.record_failure(task.task_id, _failure_text(err))
            raise
        record = json.dumps(
            {
                "secure_round": round_id,
                "participants": len(setup.participants),
                "n_min": setup.n_min,
                "noise_share_scale": noise.share_scale,
            }
        ).encode()
        self.ledger.record_answer(task.task_id, record)
        log.info(
            "contributed to secure round %s (%s) at rho %s; rho %s left this period",
            round_id,
            describe(query),
            query.rho,
            self.ledger.remaining(),
        )
        return Contribution(noisy, noise.share_scale, query.rho)

    def _bounded(self, query: SecureQuery) -> IntVector:
        """The node's noiseless, contribution-bounded vector for a secure round (never sent)."""
        if isinstance(query, KMeansQuery):
            return kmeans_contribution(query, self.segments)
        if isinstance(query, ReachQuery):
            return reach_contribution(query, self.reach)
        return bounded_counts(in_period(self.table, query), query, self.identity.institution_type)


def _failure_text(err: BaseException) -> str:
    return err.message if isinstance(err, PublicError) else "internal error (see node log)"


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
