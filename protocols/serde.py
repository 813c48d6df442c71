"""The only bridge between typed messages and the generated protobuf classes.

Decoding validates: a protobuf message that parses but does not make sense (a missing oneof,
an unknown enum, a budget that is not a number) becomes ``MalformedMessage`` with a reason,
never a half-built value.
"""

from __future__ import annotations

import hashlib
from typing import Any

from google.protobuf.message import DecodeError

from privacy.bounding import ContributionBound, InvalidBound
from privacy.budget import InvalidBudget, Rho
from protocols.errors import ErrorCode, MalformedMessage
from protocols.messages import (
    CoordinatorMessage,
    Dimension,
    ErrorInfo,
    Heartbeat,
    Hello,
    HistogramAnswer,
    HistogramQuery,
    NodeMessage,
    Rejection,
    ReleaseMode,
    Task,
    TaskResult,
    Welcome,
)
from protocols.v1 import federation_pb2 as pb

_MODE_TO_PB = {
    ReleaseMode.OPEN: pb.RELEASE_MODE_OPEN,
    ReleaseMode.SECURE: pb.RELEASE_MODE_SECURE,
}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}
_CODE_TO_PB = {code: pb.ErrorCode.Value(code.value) for code in ErrorCode}
_CODE_FROM_PB = {v: k for k, v in _CODE_TO_PB.items()}


# --- errors ------------------------------------------------------------------------------------


def _error_to_pb(err: ErrorInfo) -> pb.Error:
    return pb.Error(code=_CODE_TO_PB[err.code], message=err.message)


def _error_from_pb(msg: pb.Error) -> ErrorInfo:
    # An unknown code from a newer peer is still an error; we keep its message.
    return ErrorInfo(code=_CODE_FROM_PB.get(msg.code, ErrorCode.INTERNAL), message=msg.message)


# --- tasks -------------------------------------------------------------------------------------


def _query_to_pb(q: HistogramQuery) -> pb.HistogramQuery:
    return pb.HistogramQuery(
        statistic=q.statistic,
        measure=q.measure,
        dimensions=[pb.Dimension(name=d.name, keys=list(d.keys)) for d in q.dimensions],
        bound=pb.ContributionBound(max_cells=q.bound.max_cells, max_per_cell=q.bound.max_per_cell),
        rho=str(q.rho),
        mode=_MODE_TO_PB[q.mode],
        mechanism=q.mechanism,
    )


def _query_from_pb(msg: pb.HistogramQuery) -> HistogramQuery:
    if msg.mode not in _MODE_FROM_PB:
        raise MalformedMessage("histogram query has no valid release mode", ErrorCode.INVALID_TASK)
    if not msg.HasField("bound"):
        raise MalformedMessage("histogram query has no contribution bound", ErrorCode.INVALID_TASK)
    try:
        bound = ContributionBound(msg.bound.max_cells, msg.bound.max_per_cell)
        rho = Rho.parse(msg.rho)
    except (InvalidBound, InvalidBudget) as err:
        raise MalformedMessage(str(err), ErrorCode.INVALID_TASK) from err
    return HistogramQuery(
        statistic=msg.statistic,
        measure=msg.measure,
        dimensions=tuple(Dimension(d.name, tuple(d.keys)) for d in msg.dimensions),
        bound=bound,
        rho=rho,
        mode=_MODE_FROM_PB[msg.mode],
        mechanism=msg.mechanism,
    )


def _task_to_pb(t: Task) -> pb.Task:
    return pb.Task(
        task_id=t.task_id,
        run_id=t.run_id,
        analysis_id=t.analysis_id,
        timeout_ms=t.timeout_ms,
        histogram=_query_to_pb(t.spec),
    )


def _task_from_pb(msg: pb.Task) -> Task:
    kind = msg.WhichOneof("spec")
    if kind != "histogram":
        raise MalformedMessage(
            f"task {msg.task_id[:64]!r} has no specification this node understands",
            ErrorCode.UNSUPPORTED_TASK,
        )
    return Task(
        task_id=msg.task_id,
        run_id=msg.run_id,
        analysis_id=msg.analysis_id,
        timeout_ms=msg.timeout_ms,
        spec=_query_from_pb(msg.histogram),
    )


def task_digest(task: Task) -> str:
    """SHA-256 of a task's specification (not its id or timeout), canonically serialised.

    A node stores it with each charge: the same task id arriving with another specification is
    a coordinator trying to get a second, different answer for one charge.
    """
    body = _query_to_pb(task.spec).SerializeToString(deterministic=True)
    return hashlib.sha256(body).hexdigest()


# --- results -----------------------------------------------------------------------------------


def _result_to_pb(r: TaskResult) -> pb.TaskResult:
    if isinstance(r.outcome, ErrorInfo):
        return pb.TaskResult(task_id=r.task_id, error=_error_to_pb(r.outcome))
    a = r.outcome
    return pb.TaskResult(
        task_id=r.task_id,
        histogram=pb.HistogramAnswer(
            values=list(a.values), noise_scale=a.noise_scale, rho=str(a.rho), replayed=a.replayed
        ),
    )


def _result_from_pb(msg: pb.TaskResult) -> TaskResult:
    kind = msg.WhichOneof("outcome")
    if kind == "error":
        return TaskResult(task_id=msg.task_id, outcome=_error_from_pb(msg.error))
    if kind == "histogram":
        h = msg.histogram
        try:
            rho = Rho.parse(h.rho)
        except InvalidBudget as err:
            raise MalformedMessage(f"answer carries an invalid rho: {err}") from err
        return TaskResult(
            task_id=msg.task_id,
            outcome=HistogramAnswer(
                values=tuple(h.values), noise_scale=h.noise_scale, rho=rho, replayed=h.replayed
            ),
        )
    raise MalformedMessage("task result has neither an answer nor an error")


# --- envelopes ---------------------------------------------------------------------------------


def node_message_to_pb(m: NodeMessage) -> pb.NodeMessage:
    if isinstance(m, Hello):
        return pb.NodeMessage(
            hello=pb.Hello(
                institution_id=m.institution_id,
                software_version=m.software_version,
                protocol_version=m.protocol_version,
                capabilities=list(m.capabilities),
            )
        )
    if isinstance(m, TaskResult):
        return pb.NodeMessage(result=_result_to_pb(m))
    return pb.NodeMessage(heartbeat=pb.Heartbeat(sequence=m.sequence))


def node_message_from_pb(msg: pb.NodeMessage) -> NodeMessage:
    kind = msg.WhichOneof("body")
    if kind == "hello":
        h = msg.hello
        return Hello(
            institution_id=h.institution_id,
            software_version=h.software_version,
            protocol_version=h.protocol_version,
            capabilities=tuple(h.capabilities),
        )
    if kind == "result":
        return _result_from_pb(msg.result)
    if kind == "heartbeat":
        return Heartbeat(sequence=msg.heartbeat.sequence)
    raise MalformedMessage("empty node message")


def coordinator_message_to_pb(m: CoordinatorMessage) -> pb.CoordinatorMessage:
    if isinstance(m, Welcome):
        return pb.CoordinatorMessage(
            welcome=pb.Welcome(
                session_id=m.session_id,
                coordinator_id=m.coordinator_id,
                software_version=m.software_version,
                protocol_version=m.protocol_version,
                heartbeat_interval_ms=m.heartbeat_interval_ms,
            )
        )
    if isinstance(m, Rejection):
        return pb.CoordinatorMessage(rejection=pb.Rejection(error=_error_to_pb(m.error)))
    if isinstance(m, Task):
        return pb.CoordinatorMessage(task=_task_to_pb(m))
    return pb.CoordinatorMessage(heartbeat=pb.Heartbeat(sequence=m.sequence))


def coordinator_message_from_pb(msg: pb.CoordinatorMessage) -> CoordinatorMessage:
    kind = msg.WhichOneof("body")
    if kind == "welcome":
        w = msg.welcome
        return Welcome(
            session_id=w.session_id,
            coordinator_id=w.coordinator_id,
            software_version=w.software_version,
            protocol_version=w.protocol_version,
            heartbeat_interval_ms=w.heartbeat_interval_ms,
        )
    if kind == "rejection":
        return Rejection(error=_error_from_pb(msg.rejection.error))
    if kind == "task":
        return _task_from_pb(msg.task)
    if kind == "heartbeat":
        return Heartbeat(sequence=msg.heartbeat.sequence)
    raise MalformedMessage("empty coordinator message")


# --- bytes (for transports that do not go through grpc's own serialisers) ---------------------


def _parse(cls: Any, data: bytes) -> Any:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as err:
        raise MalformedMessage(f"undecodable {cls.__name__} ({len(data)} bytes)") from err
    return msg


def encode_node_message(m: NodeMessage) -> bytes:
    return node_message_to_pb(m).SerializeToString()


def decode_node_message(data: bytes) -> NodeMessage:
    return node_message_from_pb(_parse(pb.NodeMessage, data))


def encode_coordinator_message(m: CoordinatorMessage) -> bytes:
    return coordinator_message_to_pb(m).SerializeToString()


def decode_coordinator_message(data: bytes) -> CoordinatorMessage:
    return coordinator_message_from_pb(_parse(pb.CoordinatorMessage, data))


def task_id_of_coordinator_message(data: bytes) -> str:
    """The task id of a task message that failed validation, so the refusal can name it."""
    try:
        msg = _parse(pb.CoordinatorMessage, data)
    except MalformedMessage:
        return ""
    if msg.WhichOneof("body") != "task":
        return ""
    task_id: str = msg.task.task_id
    return task_id if 0 < len(task_id) <= 128 and task_id.isprintable() else ""
