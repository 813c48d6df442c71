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
from privacy.clustering.space import Feature, FeatureSpace, InvalidSpace
from privacy.clustering.steps import InvalidStep, LloydStep, TreeLeaves, TreeLevel
from privacy.clustering.tree import InvalidTree, PartitionTree
from protocols.errors import ErrorCode, MalformedMessage
from protocols.kmeans import KMeansQuery, SegmentCounts
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
from protocols.reach import ReachQuery
from protocols.secagg import (
    EncryptedShare,
    EncryptedShares,
    MaskedVector,
    NodeSignature,
    RevealedShare,
    RevealedShares,
    SecAggConsistency,
    SecAggMaskedInput,
    SecAggRequest,
    SecAggResponse,
    SecAggSetup,
    SecAggShareKeys,
    SecAggUnmask,
    SecureQuery,
    SignedKeys,
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
        first_year=q.years[0],
        last_year=q.years[1],
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
        years=(msg.first_year, msg.last_year),
        mechanism=msg.mechanism,
    )


def _task_to_pb(t: Task) -> pb.Task:
    msg = pb.Task(
        task_id=t.task_id, run_id=t.run_id, analysis_id=t.analysis_id, timeout_ms=t.timeout_ms
    )
    if isinstance(t.spec, HistogramQuery):
        msg.histogram.CopyFrom(_query_to_pb(t.spec))
    else:
        msg.secagg.CopyFrom(_secagg_request_to_pb(t.spec))
    return msg


def _task_from_pb(msg: pb.Task) -> Task:
    kind = msg.WhichOneof("spec")
    spec: HistogramQuery | SecAggRequest
    if kind == "histogram":
        spec = _query_from_pb(msg.histogram)
    elif kind == "secagg":
        spec = _secagg_request_from_pb(msg.secagg)
    else:
        raise MalformedMessage(
            f"task {msg.task_id[:64]!r} has no specification this node understands",
            ErrorCode.UNSUPPORTED_TASK,
        )
    return Task(
        task_id=msg.task_id,
        run_id=msg.run_id,
        analysis_id=msg.analysis_id,
        timeout_ms=msg.timeout_ms,
        spec=spec,
    )


def query_digest(query: SecureQuery) -> str:
    """SHA-256 of a query, canonically serialised.

    A node stores it with each charge: the same task id arriving with another query is a
    coordinator trying to get a second, different answer for one charge.
    """
    msg: pb.HistogramQuery | pb.KMeansQuery | pb.ReachQuery
    if isinstance(query, HistogramQuery):
        msg, prefix = _query_to_pb(query), b""
    elif isinstance(query, ReachQuery):
        msg, prefix = _reach_to_pb(query), b"reach\x00"
    else:
        msg, prefix = _kmeans_to_pb(query), b"kmeans\x00"
    # Histogram digests are unchanged from before other kinds existed; the prefix keeps the
    # kinds apart should their bytes ever coincide.
    body = msg.SerializeToString(deterministic=True)
    return hashlib.sha256(prefix + body).hexdigest()


def task_digest(task: Task) -> str:
    """The digest of a histogram task's query (not its id or timeout)."""
    if not isinstance(task.spec, HistogramQuery):
        raise TypeError("only histogram tasks have a single query digest")
    return query_digest(task.spec)


# --- k-means (the shared segmentation) ---------------------------------------------------------


def _space_to_pb(space: FeatureSpace) -> pb.FeatureSpace:
    return pb.FeatureSpace(
        features=[
            pb.FeatureBound(name=f.name, low=f.low, high=f.high, transform=f.transform)
            for f in space.features
        ],
        origin=list(space.origin),
        radius=space.radius,
    )


def _space_from_pb(m: pb.FeatureSpace) -> FeatureSpace:
    return FeatureSpace(
        tuple(Feature(f.name, f.low, f.high, f.transform) for f in m.features),
        tuple(m.origin),
        m.radius,
    )


def _tree_to_pb(tree: PartitionTree) -> pb.PartitionTree:
    return pb.PartitionTree(
        levels=tree.levels,
        directions=[v for row in tree.directions for v in row],
        split_cells=[c for c, _ in tree.splits],
        split_offsets=[o for _, o in tree.splits],
    )


def _rows(values: Any, n: int, what: str) -> tuple[tuple[float, ...], ...]:
    flat = list(values)
    if n < 1 or len(flat) % n:
        raise MalformedMessage(f"{what}: {len(flat)} values do not make {n} rows")
    width = len(flat) // n
    return tuple(tuple(flat[i * width : (i + 1) * width]) for i in range(n))


def _tree_from_pb(m: pb.PartitionTree) -> PartitionTree:
    if len(m.split_cells) != len(m.split_offsets):
        raise MalformedMessage("partition tree: split cells and offsets differ in number")
    return PartitionTree(
        _rows(m.directions, m.levels, "partition tree directions"),
        tuple(zip(m.split_cells, m.split_offsets, strict=True)),
    )


def _centres_to_pb(centres: tuple[tuple[float, ...], ...]) -> pb.Centres:
    return pb.Centres(k=len(centres), values=[v for row in centres for v in row])


def _kmeans_to_pb(q: KMeansQuery) -> pb.KMeansQuery:
    msg = pb.KMeansQuery(
        statistic=q.statistic,
        space=_space_to_pb(q.space),
        rho=str(q.rho),
        mode=_MODE_TO_PB[q.mode],
        mechanism=q.mechanism,
        as_of=q.as_of,
    )
    st = q.step
    if isinstance(st, TreeLevel):
        msg.tree_level.CopyFrom(pb.TreeLevelStep(tree=_tree_to_pb(st.tree), cells=list(st.cells)))
    elif isinstance(st, TreeLeaves):
        msg.tree_leaves.CopyFrom(pb.TreeLeavesStep(tree=_tree_to_pb(st.tree), cells=list(st.cells)))
    elif isinstance(st, LloydStep):
        msg.lloyd.CopyFrom(pb.LloydStep(centres=_centres_to_pb(st.centres)))
    else:
        msg.segment_counts.CopyFrom(
            pb.SegmentCountsStep(
                centres=_centres_to_pb(st.centres),
                dimension=pb.Dimension(name=st.dimension.name, keys=list(st.dimension.keys)),
                max_cells=st.max_cells,
            )
        )
    return msg


def _kmeans_from_pb(m: pb.KMeansQuery) -> KMeansQuery:
    if m.mode not in _MODE_FROM_PB:
        raise MalformedMessage("k-means query has no valid release mode", ErrorCode.INVALID_TASK)
    kind = m.WhichOneof("step")
    try:
        rho = Rho.parse(m.rho)
        space = _space_from_pb(m.space)
        step: TreeLevel | TreeLeaves | LloydStep | SegmentCounts
        if kind == "tree_level":
            step = TreeLevel(_tree_from_pb(m.tree_level.tree), tuple(m.tree_level.cells))
        elif kind == "tree_leaves":
            step = TreeLeaves(_tree_from_pb(m.tree_leaves.tree), tuple(m.tree_leaves.cells))
        elif kind == "lloyd":
            c = m.lloyd.centres
            step = LloydStep(_rows(c.values, c.k, "centres"))
        elif kind == "segment_counts":
            sc = m.segment_counts
            step = SegmentCounts(
                _rows(sc.centres.values, sc.centres.k, "centres"),
                Dimension(sc.dimension.name, tuple(sc.dimension.keys)),
                sc.max_cells,
            )
        else:
            raise MalformedMessage("k-means query without a step", ErrorCode.INVALID_TASK)
    except (InvalidBudget, InvalidSpace, InvalidTree, InvalidStep) as err:
        raise MalformedMessage(f"k-means query: {err}", ErrorCode.INVALID_TASK) from err
    except MalformedMessage as err:
        raise MalformedMessage(err.message, ErrorCode.INVALID_TASK) from err
    return KMeansQuery(
        statistic=m.statistic,
        space=space,
        step=step,
        rho=rho,
        mode=_MODE_FROM_PB[m.mode],
        as_of=m.as_of,
        mechanism=m.mechanism,
    )


# --- reach sketches (S7-S10) --------------------------------------------------------------------


def _reach_to_pb(q: ReachQuery) -> pb.ReachQuery:
    return pb.ReachQuery(
        statistic=q.statistic,
        by=pb.Dimension(name=q.by.name, keys=list(q.by.keys)),
        buckets=q.buckets,
        max_cells=q.max_cells,
        first_year=q.years[0],
        last_year=q.years[1],
        rho=str(q.rho),
        mode=_MODE_TO_PB[q.mode],
        mechanism=q.mechanism,
        salt=q.salt,
        layout="" if q.layout == "sketch" else q.layout,
        copies=q.copies if q.copies > 1 else 0,  # one copy: the bytes (and digest) of before
    )


def _reach_from_pb(m: pb.ReachQuery) -> ReachQuery:
    if m.mode not in _MODE_FROM_PB:
        raise MalformedMessage("reach query has no valid release mode", ErrorCode.INVALID_TASK)
    try:
        rho = Rho.parse(m.rho)
    except InvalidBudget as err:
        raise MalformedMessage(f"reach query: {err}", ErrorCode.INVALID_TASK) from err
    return ReachQuery(
        statistic=m.statistic,
        by=Dimension(m.by.name, tuple(m.by.keys)),
        buckets=m.buckets,
        max_cells=m.max_cells,
        years=(m.first_year, m.last_year),
        rho=rho,
        salt=m.salt,
        mode=_MODE_FROM_PB[m.mode],
        mechanism=m.mechanism,
        layout=m.layout or "sketch",
        copies=m.copies or 1,
    )


# --- secure aggregation ------------------------------------------------------------------------


def _keys_to_pb(k: SignedKeys) -> pb.SignedKeys:
    return pb.SignedKeys(
        institution_id=k.institution_id,
        encryption_key=k.encryption_key,
        mask_key=k.mask_key,
        certificate=k.certificate,
        signature=k.signature,
        self_mask_commitment=k.self_mask_commitment,
    )


def _keys_from_pb(m: pb.SignedKeys) -> SignedKeys:
    return SignedKeys(
        m.institution_id,
        m.encryption_key,
        m.mask_key,
        m.certificate,
        m.signature,
        m.self_mask_commitment,
    )


def _shares_to_pb(shares: tuple[EncryptedShare, ...]) -> list[pb.EncryptedShare]:
    return [
        pb.EncryptedShare(sender=e.sender, recipient=e.recipient, ciphertext=e.ciphertext)
        for e in shares
    ]


def _shares_from_pb(shares: Any) -> tuple[EncryptedShare, ...]:
    return tuple(EncryptedShare(e.sender, e.recipient, e.ciphertext) for e in shares)


def _signature_to_pb(s: NodeSignature) -> pb.NodeSignature:
    return pb.NodeSignature(
        institution_id=s.institution_id, certificate=s.certificate, signature=s.signature
    )


def _signature_from_pb(m: pb.NodeSignature) -> NodeSignature:
    return NodeSignature(m.institution_id, m.certificate, m.signature)


def _secagg_request_to_pb(r: SecAggRequest) -> pb.SecAggRequest:
    msg = pb.SecAggRequest(round_id=r.round_id)
    st = r.stage
    if isinstance(st, SecAggSetup):
        setup = pb.SecAggSetup(
            participants=list(st.participants),
            n_min=st.n_min,
            degree=st.degree,
            threshold=st.threshold,
        )
        if isinstance(st.query, HistogramQuery):
            setup.histogram.CopyFrom(_query_to_pb(st.query))
        elif isinstance(st.query, ReachQuery):
            setup.reach.CopyFrom(_reach_to_pb(st.query))
        else:
            setup.kmeans.CopyFrom(_kmeans_to_pb(st.query))
        msg.setup.CopyFrom(setup)
    elif isinstance(st, SecAggShareKeys):
        msg.share_keys.CopyFrom(pb.SecAggShareKeys(keys=[_keys_to_pb(k) for k in st.keys]))
    elif isinstance(st, SecAggMaskedInput):
        msg.masked_input.CopyFrom(
            pb.SecAggMaskedInput(
                share_holders=list(st.share_holders), shares=_shares_to_pb(st.shares)
            )
        )
    elif isinstance(st, SecAggConsistency):
        msg.consistency.CopyFrom(pb.SecAggConsistency(survivors=list(st.survivors)))
    else:
        msg.unmask.CopyFrom(
            pb.SecAggUnmask(
                survivors=list(st.survivors),
                signatures=[_signature_to_pb(s) for s in st.signatures],
            )
        )
    return msg


def _secagg_request_from_pb(m: pb.SecAggRequest) -> SecAggRequest:
    kind = m.WhichOneof("stage")
    stage: Any
    if kind == "setup":
        which = m.setup.WhichOneof("query")
        query: SecureQuery
        if which == "histogram":
            query = _query_from_pb(m.setup.histogram)
        elif which == "kmeans":
            query = _kmeans_from_pb(m.setup.kmeans)
        elif which == "reach":
            query = _reach_from_pb(m.setup.reach)
        else:
            raise MalformedMessage(
                "secure-aggregation setup without a query this node understands",
                ErrorCode.UNSUPPORTED_TASK,
            )
        stage = SecAggSetup(
            query=query,
            participants=tuple(m.setup.participants),
            n_min=m.setup.n_min,
            degree=m.setup.degree,
            threshold=m.setup.threshold,
        )
    elif kind == "share_keys":
        stage = SecAggShareKeys(tuple(_keys_from_pb(k) for k in m.share_keys.keys))
    elif kind == "masked_input":
        stage = SecAggMaskedInput(
            tuple(m.masked_input.share_holders), _shares_from_pb(m.masked_input.shares)
        )
    elif kind == "consistency":
        stage = SecAggConsistency(tuple(m.consistency.survivors))
    elif kind == "unmask":
        stage = SecAggUnmask(
            tuple(m.unmask.survivors),
            tuple(_signature_from_pb(s) for s in m.unmask.signatures),
        )
    else:
        raise MalformedMessage("secure-aggregation request without a stage", ErrorCode.INVALID_TASK)
    return SecAggRequest(m.round_id, stage)


def _secagg_response_to_pb(r: SecAggResponse) -> pb.SecAggResponse:
    msg = pb.SecAggResponse(round_id=r.round_id)
    st = r.stage
    if isinstance(st, SignedKeys):
        msg.keys.CopyFrom(_keys_to_pb(st))
    elif isinstance(st, EncryptedShares):
        msg.shares.CopyFrom(pb.EncryptedShares(shares=_shares_to_pb(st.shares)))
    elif isinstance(st, MaskedVector):
        msg.masked.CopyFrom(
            pb.MaskedVector(
                values=st.values,
                length=st.length,
                masked_with=list(st.masked_with),
                noise_scale=st.noise_scale,
                rho=str(st.rho),
            )
        )
    elif isinstance(st, NodeSignature):
        msg.consistency.CopyFrom(_signature_to_pb(st))
    else:
        msg.reveal.CopyFrom(
            pb.RevealedShares(
                shares=[
                    pb.RevealedShare(
                        owner=x.owner, self_mask=x.self_mask, point=x.point, value=x.value
                    )
                    for x in st.shares
                ]
            )
        )
    return msg


def _secagg_response_from_pb(m: pb.SecAggResponse) -> SecAggResponse:
    kind = m.WhichOneof("stage")
    stage: Any
    if kind == "keys":
        stage = _keys_from_pb(m.keys)
    elif kind == "shares":
        stage = EncryptedShares(_shares_from_pb(m.shares.shares))
    elif kind == "masked":
        try:
            rho = Rho.parse(m.masked.rho)
        except InvalidBudget as err:
            raise MalformedMessage(f"masked vector carries an invalid rho: {err}") from err
        stage = MaskedVector(
            m.masked.values, m.masked.length, tuple(m.masked.masked_with), m.masked.noise_scale, rho
        )
    elif kind == "consistency":
        stage = _signature_from_pb(m.consistency)
    elif kind == "reveal":
        stage = RevealedShares(
            tuple(RevealedShare(x.owner, x.self_mask, x.point, x.value) for x in m.reveal.shares)
        )
    else:
        raise MalformedMessage("secure-aggregation response without a stage")
    return SecAggResponse(m.round_id, stage)


# --- results -----------------------------------------------------------------------------------


def _result_to_pb(r: TaskResult) -> pb.TaskResult:
    if isinstance(r.outcome, ErrorInfo):
        return pb.TaskResult(task_id=r.task_id, error=_error_to_pb(r.outcome))
    if isinstance(r.outcome, SecAggResponse):
        return pb.TaskResult(task_id=r.task_id, secagg=_secagg_response_to_pb(r.outcome))
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
    if kind == "secagg":
        return TaskResult(task_id=msg.task_id, outcome=_secagg_response_from_pb(msg.secagg))
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


def secagg_request_bytes(request: SecAggRequest) -> bytes:
    """Canonical bytes of a secure-aggregation request (to tell a retry from a replay)."""
    return _secagg_request_to_pb(request).SerializeToString(deterministic=True)
