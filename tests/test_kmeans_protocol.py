"""The k-means query on the wire: every step round-trips inside a secure-aggregation setup,
hostile or malformed queries are refused with a reason, and the round's noise follows the
query's own sensitivity."""

from __future__ import annotations

import math

import pytest

from privacy.budget import Rho
from privacy.clustering import steps
from privacy.clustering.public_random import PublicRandom
from privacy.clustering.space import Feature, FeatureSpace
from privacy.clustering.steps import LloydStep, TreeLeaves, TreeLevel
from privacy.clustering.tree import PartitionTree
from protocols.dimensions import SEGMENT_KEYS
from protocols.errors import ErrorCode, MalformedMessage
from protocols.features import customer_space
from protocols.geography import REGION_CODES
from protocols.kmeans import KMeansQuery, SegmentCounts
from protocols.messages import Dimension, ReleaseMode, Task
from protocols.secagg import SecAggRequest, SecAggSetup, noise_share
from protocols.serde import decode_coordinator_message, encode_coordinator_message, query_digest
from protocols.v1 import federation_pb2 as pb
from protocols.vocabulary import DISCIPLINES

SPACE = customer_space()
SEED = bytes(32)


def _tree() -> PartitionTree:
    d = PublicRandom(SEED, "t").unit_vectors(3, SPACE.dim)
    return PartitionTree(tuple(map(tuple, d)), ((1, 0.125), (3, -0.5)))


CENTRES = tuple(tuple([0.5] * 9 + [1 / 15] * 15) for _ in range(3))
STEPS: list[TreeLevel | TreeLeaves | LloydStep | SegmentCounts] = [
    TreeLevel(_tree(), (2, 6, 7)),
    TreeLeaves(_tree(), (2, 6, 7)),
    LloydStep(CENTRES),
    SegmentCounts(CENTRES, Dimension("region", REGION_CODES)),
    SegmentCounts(CENTRES, Dimension("discipline", DISCIPLINES), max_cells=3),
]


def _setup(step: TreeLevel | TreeLeaves | LloydStep | SegmentCounts, **kw: object) -> SecAggSetup:
    query = KMeansQuery("S12", SPACE, step, Rho.parse("0.002"), as_of="2024-12-31", **kw)  # type: ignore[arg-type]
    return SecAggSetup(query, ("a", "b", "c"), 2, 2, 2)


def _task(setup: SecAggSetup) -> Task:
    return Task("run/s12/r00", "run", "s12/r00", 1000, SecAggRequest("round-1", setup))


@pytest.mark.parametrize("step", STEPS, ids=lambda s: type(s).__name__)
def test_every_step_round_trips_in_a_setup(
    step: TreeLevel | TreeLeaves | LloydStep | SegmentCounts,
) -> None:
    task = _task(_setup(step))
    back = decode_coordinator_message(encode_coordinator_message(task))
    assert back == task


def test_the_setup_carries_either_kind_of_query_in_one_oneof() -> None:
    msg = pb.SecAggSetup()
    msg.kmeans.statistic = "S12"
    assert msg.WhichOneof("query") == "kmeans"
    msg.histogram.statistic = "S1"
    assert msg.WhichOneof("query") == "histogram"  # one or the other, never both


def test_an_empty_setup_is_an_unsupported_task() -> None:
    wire = pb.CoordinatorMessage()
    wire.task.task_id = "t"
    wire.task.run_id = "r"
    wire.task.analysis_id = "a"
    wire.task.timeout_ms = 100
    wire.task.secagg.round_id = "r1"
    wire.task.secagg.setup.participants.extend(["a", "b"])
    with pytest.raises(MalformedMessage) as err:
        decode_coordinator_message(wire.SerializeToString())
    assert err.value.code is ErrorCode.UNSUPPORTED_TASK


def _wire(step: TreeLevel | TreeLeaves | LloydStep | SegmentCounts) -> pb.CoordinatorMessage:
    msg = pb.CoordinatorMessage()
    msg.ParseFromString(encode_coordinator_message(_task(_setup(step))))
    return msg


def _refused(msg: pb.CoordinatorMessage) -> str:
    with pytest.raises(MalformedMessage) as err:
        decode_coordinator_message(msg.SerializeToString())
    assert err.value.code is ErrorCode.INVALID_TASK
    return err.value.message


def test_hostile_queries_are_refused_with_a_reason() -> None:
    m = _wire(STEPS[0])
    m.task.secagg.setup.kmeans.space.radius = 1e9  # a radius that bounds nothing
    assert "radius" in _refused(m)

    m = _wire(STEPS[0])
    m.task.secagg.setup.kmeans.tree_level.tree.split_cells[1] = 5  # a split without its parent
    assert "parent" in _refused(m)

    m = _wire(STEPS[2])
    m.task.secagg.setup.kmeans.lloyd.centres.values[0] = 7.0  # a centre outside the box
    assert "box" in _refused(m)

    m = _wire(STEPS[2])
    m.task.secagg.setup.kmeans.lloyd.centres.k = 5  # values do not make 5 rows
    assert "rows" in _refused(m)

    m = _wire(STEPS[3])
    m.task.secagg.setup.kmeans.segment_counts.dimension.keys.append("e-mail@example.org")
    assert "public vocabulary" in _refused(m)

    m = _wire(STEPS[3])
    m.task.secagg.setup.kmeans.segment_counts.dimension.name = "customer_id"
    assert "unknown dimension" in _refused(m)

    m = _wire(STEPS[0])
    m.task.secagg.setup.kmeans.mode = pb.RELEASE_MODE_OPEN
    assert "secure mode only" in _refused(m)

    m = _wire(STEPS[0])
    m.task.secagg.setup.kmeans.rho = "-1"
    assert "rho" in _refused(m)

    m = _wire(STEPS[0])
    m.task.secagg.setup.kmeans.as_of = "yesterday"
    assert "as_of" in _refused(m)

    m = _wire(STEPS[0])
    m.task.secagg.setup.kmeans.space.features.pop()  # 23 features, 24-dimensional directions
    assert "features" in _refused(m)


def test_an_oversized_round_is_refused() -> None:
    cells = tuple(range(2, 2 + 5000))  # 5,000 leaves x 25 values: more than 100,000
    tree = PartitionTree(((1.0,) + (0.0,) * 23,))
    with pytest.raises(MalformedMessage, match="at most"):
        KMeansQuery("S12", SPACE, TreeLeaves(tree, cells), Rho.parse("0.01"))


def test_the_noise_follows_the_steps_own_sensitivity() -> None:
    for step in STEPS:
        setup = _setup(step)
        q = setup.query
        noise = noise_share(setup)
        assert noise.dim == q.n_cells
        if isinstance(step, SegmentCounts):
            assert noise.l2_sensitivity == pytest.approx(math.sqrt(step.max_cells))
        else:
            assert noise.l2_sensitivity == steps.l2_sensitivity(step, SPACE.radius)
        # with every share in the sum, the noise is that of one central Gaussian at rho
        central = noise.l2_sensitivity / math.sqrt(2 * float(q.rho))
        assert noise.total_scale(2) >= central / 1.0001
        assert noise.rho_bound(2) <= float(q.rho) * (1 + 1e-9)


def test_the_ledger_digest_tells_queries_apart() -> None:
    a = _setup(STEPS[2]).query
    b = _setup(LloydStep(CENTRES[:2])).query
    assert isinstance(a, KMeansQuery)
    assert query_digest(a) != query_digest(b)
    assert query_digest(a) == query_digest(_setup(STEPS[2]).query)


def test_segments_are_counted_only_by_public_per_customer_dimensions() -> None:
    with pytest.raises(MalformedMessage, match="segments can be counted by"):
        SegmentCounts(CENTRES, Dimension("quarter", ("2024Q1",)))
    with pytest.raises(MalformedMessage, match="max_cells"):
        SegmentCounts(CENTRES, Dimension("region", REGION_CODES[:2]), max_cells=3)
    assert len(SEGMENT_KEYS) == 64


def test_a_library_space_round_trips() -> None:
    space = FeatureSpace.box((Feature("x", -1, 1), Feature("y", 0, 100, "log")))
    q = KMeansQuery("S12", space, LloydStep(((0.5, 0.5), (0.1, 0.9))), Rho.parse("0.5"))
    task = _task(SecAggSetup(q, ("a", "b"), 2, 1, 1))
    assert decode_coordinator_message(encode_coordinator_message(task)) == task
    assert q.mode is ReleaseMode.SECURE
