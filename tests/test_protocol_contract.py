"""The wire contract: generated code is current, messages round-trip, bad bytes are refused."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.bounding import ContributionBound
from privacy.budget import Rho
from protocols import generate
from protocols.errors import ErrorCode, MalformedMessage
from protocols.geography import REGION_CODES
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
from protocols.serde import (
    decode_coordinator_message,
    decode_node_message,
    encode_coordinator_message,
    encode_node_message,
    task_digest,
)
from protocols.transport import CONNECT_METHOD
from protocols.v1 import federation_pb2 as pb
from protocols.vocabulary import DISCIPLINES, quarters


def s1_query(**kw: object) -> HistogramQuery:
    args: dict[str, object] = {
        "statistic": "S1",
        "measure": "tickets",
        "dimensions": (
            Dimension("discipline", DISCIPLINES),
            Dimension("quarter", quarters(2024, 2024)),
        ),
        "bound": ContributionBound(4, 8),
        "rho": Rho.parse("0.1"),
        "mode": ReleaseMode.OPEN,
        "years": (2024, 2024),
    }
    args.update(kw)
    return HistogramQuery(**args)  # type: ignore[arg-type]


def test_generated_code_is_current() -> None:
    assert generate.stale_files() == [], "run: python -m protocols.generate"


def test_stale_check_notices_an_edited_proto(tmp_path: Path) -> None:
    # Copy the contract, change the .proto but not the generated files: the check must see it.
    shutil.copytree(generate.PROTO_DIR, tmp_path / "protocols" / "v1")
    proto = tmp_path / "protocols" / "v1" / "federation.proto"
    proto.write_text(
        proto.read_text().replace("bool replayed = 4;", "bool replayed = 4;\n  bool extra = 5;")
    )
    stale = generate.stale_files(tmp_path)
    assert "federation_pb2.py" in stale


def test_method_path_comes_from_the_proto() -> None:
    assert CONNECT_METHOD == "/publiek.v1.Federation/Connect"


NODE_MESSAGES: list[NodeMessage] = [
    Hello("inst-01", "0.1.0", 1, ("histogram/1", "mode/open")),
    Heartbeat(7),
    TaskResult("run/a", HistogramAnswer((1, -2, 3), 35.7, Rho.parse("0.1"))),
    TaskResult("run/a", ErrorInfo(ErrorCode.BUDGET_EXCEEDED, "no budget left")),
]
COORDINATOR_MESSAGES: list[CoordinatorMessage] = [
    Welcome("s1", "coord", "0.1.0", 1, 10_000),
    Rejection(ErrorInfo(ErrorCode.PROTOCOL_VERSION_MISMATCH, "v2 vs v1")),
    Heartbeat(1),
    Task("run/a", "run", "a", 60_000, s1_query()),
]


@pytest.mark.parametrize("msg", NODE_MESSAGES, ids=lambda m: type(m).__name__)
def test_node_messages_round_trip(msg: NodeMessage) -> None:
    assert decode_node_message(encode_node_message(msg)) == msg


@pytest.mark.parametrize("msg", COORDINATOR_MESSAGES, ids=lambda m: type(m).__name__)
def test_coordinator_messages_round_trip(msg: CoordinatorMessage) -> None:
    assert decode_coordinator_message(encode_coordinator_message(msg)) == msg


def test_truncated_message_is_a_clear_error() -> None:
    data = encode_coordinator_message(COORDINATOR_MESSAGES[-1])
    with pytest.raises(MalformedMessage, match="undecodable CoordinatorMessage"):
        decode_coordinator_message(data[: len(data) // 2])


def test_empty_envelope_is_refused() -> None:
    with pytest.raises(MalformedMessage, match="empty node message"):
        decode_node_message(b"")


def _task_pb(**query: object) -> bytes:
    good = pb.CoordinatorMessage()
    good.ParseFromString(encode_coordinator_message(COORDINATOR_MESSAGES[-1]))
    for k, v in query.items():
        if k == "keys":
            del good.task.histogram.dimensions[0].keys[:]
            good.task.histogram.dimensions[0].keys.extend(v)  # type: ignore[arg-type]
        elif k == "max_cells":
            good.task.histogram.bound.max_cells = v  # type: ignore[assignment]
        else:
            setattr(good.task.histogram, k, v)
    return good.SerializeToString()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"rho": "lots"}, "not a number"),
        ({"rho": "-0.5"}, "non-negative"),
        ({"rho": "0"}, "rho must be positive"),
        ({"rho": "nan"}, "not a number"),
        ({"mode": pb.RELEASE_MODE_UNSPECIFIED}, "release mode"),
        ({"measure": "email_addresses"}, "unknown measure"),
        ({"max_cells": 0}, "max_cells"),
        ({"keys": ["someone@example.nl"]}, "outside its public vocabulary"),
        ({"keys": ["toneel", "toneel"]}, "repeats keys"),
    ],
)
def test_hostile_task_fields_are_refused_with_a_reason(
    change: dict[str, object], reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason) as err:
        decode_coordinator_message(_task_pb(**change))
    assert err.value.code is ErrorCode.INVALID_TASK


def test_oversized_table_is_refused() -> None:
    years = quarters(1990, 2099)  # 440 quarters x 15 disciplines x 21 regions > 100k cells
    with pytest.raises(MalformedMessage, match="cells"):
        s1_query(
            dimensions=(
                Dimension("discipline", DISCIPLINES),
                Dimension("quarter", years),
                Dimension("region", REGION_CODES),
            ),
            years=(1990, 2099),
        )


def test_a_query_covers_an_explicit_period() -> None:
    with pytest.raises(MalformedMessage, match="period"):
        s1_query(years=(2025, 2024))
    with pytest.raises(MalformedMessage, match=r"outside the period 2023\.\.2023"):
        s1_query(years=(2023, 2023))  # its quarter keys are 2024Q1..Q4


def test_task_digest_ignores_id_but_not_spec() -> None:
    a = Task("x/1", "x", "a", 1000, s1_query())
    b = Task("x/2", "x", "a", 5000, s1_query())
    c = Task("x/1", "x", "a", 1000, s1_query(rho=Rho.parse("0.2")))
    assert task_digest(a) == task_digest(b)
    assert task_digest(a) != task_digest(c)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_decoders(data: bytes) -> None:
    # Anything a hostile peer sends either decodes into a valid value or is a MalformedMessage.
    for decode in (decode_node_message, decode_coordinator_message):
        with contextlib.suppress(MalformedMessage):
            decode(data)
