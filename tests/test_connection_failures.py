"""Nodes meeting the wrong coordinator, no coordinator, or a hostile client: clear words, no
tracebacks, nothing charged."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest

from deploy.devcerts import make_dev_pki
from node.agent import AgentSettings, ExitCode, NodeAgent
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.tls import TlsFiles
from privacy.budget import Rho
from protocols.errors import ErrorCode
from protocols.messages import Hello, Rejection
from protocols.serde import decode_coordinator_message, encode_node_message
from protocols.transport import CONNECT_METHOD
from tests.conftest import ticket_row, write_tickets
from tests.federation import coordinator, start_node, write_node_config
from tests.ports import unused_port


@pytest.fixture
def tickets(tmp_path: Path) -> Path:
    return write_tickets(tmp_path / "t.csv", [ticket_row(ticket_id=f"T{i}") for i in range(20)])


def _no_ledger_entries(folder: Path) -> None:
    path = folder / "ledger.sqlite"
    if path.exists():
        ledger = Ledger(path, BudgetCap(Rho.parse("1"), Period.YEAR))
        assert ledger.entries() == []
        ledger.close()


def test_node_against_coordinator_of_another_protocol_version(
    tmp_path: Path, tickets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01"])

    async def scenario() -> tuple[int, str]:
        async with coordinator(pki, protocol_version=2) as (_, port):
            cfg = write_node_config(tmp_path / "n", "inst-01", "theatre", tickets, port, pki)
            node = await start_node(cfg, "inst-01", "--max-attempts", "3")
            code = await asyncio.wait_for(node.proc.wait(), 60)
            return code, node.output()

    with caplog.at_level(logging.WARNING, logger="publiek.coordinator"):
        code, out = asyncio.run(scenario())
    assert code == ExitCode.INCOMPATIBLE
    assert "this coordinator speaks protocol v2; node inst-01 speaks v1" in out
    assert "Traceback" not in out
    assert out.count("connected to coordinator") == 0  # no retry loop against an incompatible peer
    # ...and the coordinator's operator sees the same thing in their log.
    assert "rejected inst-01: PROTOCOL_VERSION_MISMATCH" in caplog.text
    _no_ledger_entries(tmp_path / "n")


def test_newer_node_against_older_coordinator(
    tmp_path: Path, tickets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
    handler = TaskHandler(
        NodeIdentity("inst-01", "theatre"), load_ticket_lines(tickets), ledger, Policy()
    )

    async def scenario() -> ExitCode:
        async with coordinator(None) as (_, port):
            agent = NodeAgent(
                AgentSettings(f"127.0.0.1:{port}", tls=None, max_attempts=2),
                handler,
                protocol_version=2,
            )
            return await asyncio.wait_for(agent.run(), 30)

    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) is ExitCode.INCOMPATIBLE
    assert "this coordinator speaks protocol v1; node inst-01 speaks v2" in caplog.text
    assert ledger.entries() == []


def test_node_with_no_coordinator_retries_then_gives_up(tmp_path: Path, tickets: Path) -> None:
    port = unused_port()  # nothing listens here

    async def scenario() -> tuple[int, str]:
        cfg = write_node_config(tmp_path / "n", "inst-01", "theatre", tickets, port, None)
        node = await start_node(cfg, "inst-01", "--max-attempts", "3")
        code = await asyncio.wait_for(node.proc.wait(), 60)
        return code, node.output()

    code, out = asyncio.run(scenario())
    assert code == ExitCode.GAVE_UP
    assert out.count("unreachable") == 3
    assert out.count("retrying in") == 2
    assert "giving up: no session with the coordinator" in out
    assert "TLS IS OFF" in out  # the insecure demo mode is loud
    assert "Traceback" not in out


def test_node_configured_with_another_institutions_certificate_stops_at_once(
    tmp_path: Path, tickets: Path
) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01", "inst-02"])

    async def scenario() -> tuple[int, str]:
        async with coordinator(pki) as (_, port):
            cfg = write_node_config(
                tmp_path / "n", "inst-02", "theatre", tickets, port, pki, cert_of="inst-01"
            )
            node = await start_node(cfg, "inst-02", "--max-attempts", "2")
            code = await asyncio.wait_for(node.proc.wait(), 60)
            return code, node.output()

    code, out = asyncio.run(scenario())
    assert code == 2  # a configuration problem, found before dialling out
    assert "is for 'inst-01', not 'inst-02'" in out
    assert "Traceback" not in out


def test_coordinator_refuses_a_hello_that_does_not_match_the_certificate(
    tmp_path: Path, tickets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A node that claims inst-02 over a TLS session authenticated as inst-01.
    pki = make_dev_pki(tmp_path / "pki", ["inst-01", "inst-02"])
    ledger = Ledger(tmp_path / "l.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
    handler = TaskHandler(
        NodeIdentity("inst-02", "theatre"), load_ticket_lines(tickets), ledger, Policy()
    )
    tls = TlsFiles(pki.ca, pki.nodes["inst-01"].cert, pki.nodes["inst-01"].key)

    async def scenario() -> ExitCode:
        async with coordinator(pki) as (server, port):
            agent = NodeAgent(
                AgentSettings(f"127.0.0.1:{port}", tls, server_name="localhost", max_attempts=2),
                handler,
            )
            code = await asyncio.wait_for(agent.run(), 30)
            assert server.registry.nodes() == []
            return code

    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) is ExitCode.INCOMPATIBLE
    assert "IDENTITY_MISMATCH" in caplog.text
    assert "the TLS certificate is for 'inst-01'" in caplog.text


def test_service_that_is_not_a_coordinator(tmp_path: Path, tickets: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
    handler = TaskHandler(
        NodeIdentity("inst-01", "theatre"), load_ticket_lines(tickets), ledger, Policy()
    )

    async def scenario() -> ExitCode:
        server = grpc.aio.server()  # a gRPC server without the Federation service
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            agent = NodeAgent(AgentSettings(f"127.0.0.1:{port}", None, max_attempts=2), handler)
            return await asyncio.wait_for(agent.run(), 30)
        finally:
            await server.stop(0)

    assert asyncio.run(scenario()) is ExitCode.INCOMPATIBLE


@pytest.mark.parametrize(
    ("first_message", "reason"),
    [
        (b"\xff\xff\xff\x0f garbage", "undecodable NodeMessage"),
        (b"", "empty node message"),
        (
            encode_node_message(Hello("inst-01", "x", 1, ())).replace(b"inst-01", b"inst\x0001"),
            "unprintable",
        ),
    ],
    ids=["garbage", "empty", "unprintable-id"],
)
def test_hostile_first_messages_get_a_rejection(first_message: bytes, reason: str) -> None:
    async def scenario() -> tuple[Rejection, grpc.StatusCode]:
        async with coordinator(None) as (server, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.stream_stream(CONNECT_METHOD)()
                await call.write(first_message)
                reply = decode_coordinator_message(await call.read())
                assert isinstance(reply, Rejection)
                code = await call.code()
            assert server.registry.nodes() == []  # nobody was registered
            return reply, code

    reply, code = asyncio.run(scenario())
    assert reply.error.code is ErrorCode.PROTOCOL_VIOLATION
    assert reason in reply.error.message
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_health_service_reports_serving() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async def scenario() -> list[int]:
        async with (
            coordinator(None) as (_, port),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = health_pb2_grpc.HealthStub(channel)
            statuses = []
            for service in ("", "publiek.v1.Federation"):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                statuses.append(reply.status)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            return statuses

    assert asyncio.run(scenario()) == [health_pb2.HealthCheckResponse.SERVING] * 2


def test_node_reconnects_after_the_coordinator_restarts(tmp_path: Path, tickets: Path) -> None:
    from coordinator.registry import NodeRegistry
    from coordinator.server import CoordinatorServer

    ledger = Ledger(tmp_path / "l.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
    handler = TaskHandler(
        NodeIdentity("inst-01", "theatre"), load_ticket_lines(tickets), ledger, Policy()
    )
    port = unused_port()

    async def serve_until_connected() -> CoordinatorServer:
        server = CoordinatorServer(NodeRegistry(), "c", tls=None)
        await server.start(f"127.0.0.1:{port}")
        await server.registry.wait_for_nodes(1, 20)
        assert [n.institution_id for n in server.registry.nodes()] == ["inst-01"]
        return server

    async def scenario() -> int:
        agent = NodeAgent(
            AgentSettings(f"127.0.0.1:{port}", None, backoff_initial_s=0.1, backoff_max_s=0.5),
            handler,
        )
        running = asyncio.create_task(agent.run())
        first = await serve_until_connected()
        await first.stop(0)  # the coordinator goes away...
        await asyncio.sleep(0.5)
        second = await serve_until_connected()  # ...and comes back on the same address
        agent.stop()
        code = await asyncio.wait_for(running, 10)
        await second.stop(0)
        assert code is ExitCode.STOPPED
        return agent.sessions_opened

    assert asyncio.run(scenario()) == 2
