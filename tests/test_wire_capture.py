"""Every byte that crosses the wire in a run, captured and searched for personal data.

Runs in plaintext through a recording TCP proxy (with TLS on the capture would show only
ciphertext), reassembles every gRPC message from the HTTP/2 frames, and checks that no customer
id, e-mail address, postcode, ticket, order or performance id of any node's data appears in the
raw bytes or in any string field of any decoded message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from coordinator.runner import RunSettings, run_plan
from protocols.errors import ErrorCode
from protocols.messages import ErrorInfo, Hello, HistogramAnswer, Task, TaskResult, Welcome
from protocols.plan import load_plan
from protocols.serde import decode_coordinator_message, decode_node_message, encode_node_message
from protocols.v1 import federation_pb2 as pb
from synthetic import Sector, SectorConfig, generate_sector
from tests.federation import coordinator, node_configs, start_node, stop_node
from tests.wire import data_by_stream, grpc_messages, recording_proxy

REPO = Path(__file__).resolve().parent.parent
IDENTIFYING = ("customer_id", "email", "postcode", "ticket_id", "order_id", "performance_id")


def _strings(msg: Any) -> list[str]:
    """Every string value anywhere in a protobuf message."""
    out: list[str] = []
    for field, value in msg.ListFields():
        values = value if field.is_repeated else [value]
        for v in values:
            if field.type == field.TYPE_STRING:
                out.append(v)
            elif field.type == field.TYPE_MESSAGE:
                out += _strings(v)
    return out


@pytest.fixture(scope="module")
def sector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sector, Path]:
    out = tmp_path_factory.mktemp("sector")
    sec = generate_sector(SectorConfig(n_institutions=3, seed=5, years=(2024, 2024), scale=0.05))
    sec.write(out)
    return sec, out


def test_no_personal_data_in_any_message(sector: tuple[Sector, Path], tmp_path: Path) -> None:
    sec, sector_dir = sector
    plan = load_plan(REPO / "deploy" / "plans" / "s1-open.toml")

    async def scenario() -> list[tuple[bytearray, bytearray]]:
        async with coordinator(None) as (server, port), recording_proxy(port) as (proxy, cap):
            configs = node_configs(sec, sector_dir, tmp_path / "nodes", proxy, None)
            nodes = [await start_node(cfg, nid) for nid, cfg in configs.items()]
            try:
                await asyncio.wait_for(
                    run_plan(plan, server.registry, RunSettings("c", 3, 60), lambda _: None), 120
                )
            finally:
                for n in nodes:
                    await stop_node(n)
            return cap.connections

    connections = asyncio.run(scenario())

    from_nodes: list[bytes] = []
    to_nodes: list[bytes] = []
    for up, down in connections:
        for body in data_by_stream(bytes(up), client_side=True).values():
            from_nodes += grpc_messages(body)
        for body in data_by_stream(bytes(down), client_side=False).values():
            to_nodes += grpc_messages(body)

    # Positive control: the capture saw the whole conversation, so its silence below means
    # something. Three nodes: three Hellos, Welcomes, Tasks and answers with 60 cells each.
    node_msgs = [decode_node_message(m) for m in from_nodes]
    coord_msgs = [decode_coordinator_message(m) for m in to_nodes]
    assert sorted(m.institution_id for m in node_msgs if isinstance(m, Hello)) == [
        i.institution_id for i in sec.institutions
    ]
    assert sum(isinstance(m, Welcome) for m in coord_msgs) == 3
    assert sum(isinstance(m, Task) for m in coord_msgs) == 3
    answers = [m.outcome for m in node_msgs if isinstance(m, TaskResult)]
    assert len(answers) == 3
    assert all(isinstance(a, HistogramAnswer) and len(a.values) == 60 for a in answers)

    raw = b"".join(bytes(a) + bytes(b) for a, b in connections)
    strings: list[str] = []
    for m in from_nodes:
        strings += _strings(pb.NodeMessage.FromString(m))
    for m in to_nodes:
        strings += _strings(pb.CoordinatorMessage.FromString(m))
    assert any("inst-" in s for s in strings)  # the string extraction works

    sensitive: set[str] = set()
    for inst in sec.institutions:
        frame = pl.read_csv(
            sector_dir / inst.institution_id / "ticket_line.csv", infer_schema=False
        )
        for col in IDENTIFYING:
            sensitive |= set(frame[col].drop_nulls().to_list())
    sensitive.discard("")
    # Identifiers of 6+ characters must not appear anywhere: inside any string field, or anywhere
    # in the raw bytes. Shorter ones (Belgian postcodes such as "2000") also occur inside public
    # strings like the key "2024Q1" or a run id's timestamp, so for those a string field must
    # not *be* one.
    assert sum(len(s) >= 6 for s in sensitive) > 1000 and any(len(s) < 6 for s in sensitive)
    assert leaks(sensitive, strings, raw) == []


def leaks(sensitive: set[str], strings: list[str], raw: bytes) -> list[str]:
    on_wire = "\x00".join(strings)  # one text: a substring of any field is a substring of this
    fields = set(strings)
    found = []
    for s in sensitive:
        if (len(s) >= 6 and (s in on_wire or s.encode() in raw)) or (len(s) < 6 and s in fields):
            found.append(s)
    return found


def test_the_search_would_see_a_leak() -> None:
    # The same search, on a message that does carry personal data, must flag it.
    bad = TaskResult("t", ErrorInfo(ErrorCode.INVALID_TASK, "row of j.devries@example.nl failed"))
    raw = encode_node_message(bad)
    strings = _strings(pb.NodeMessage.FromString(raw))
    assert leaks({"j.devries@example.nl"}, strings, raw) == ["j.devries@example.nl"]
    assert leaks({"2000"}, ["2000"], b"") == ["2000"]
    assert leaks({"2000"}, ["2024Q1"], b"") == []
