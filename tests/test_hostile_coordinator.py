"""A hostile coordinator against a real node process (``publiek-node run``, mutual TLS).

The coordinator here is the test's own gRPC server with the sector's certificate: it speaks
the wire contract only as far as it wants to, and sends what an honest coordinator never would:
requests over budget, the same query again and again under new task ids, absurd bounds and
budgets, unknown task types, malformed and oversized messages. The node must refuse each with a
reason, stay up, and keep its data and budget: its ledger afterwards holds exactly the charges
for what it answered, and no answer ever carries more than the noisy table asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy.devcerts import DevPki, make_dev_pki
from node.ledger import BudgetCap, Ledger, Period
from privacy.budget import Rho
from protocols.messages import ErrorInfo, HistogramAnswer, TaskResult, Welcome
from protocols.serde import decode_node_message, encode_coordinator_message
from protocols.transport import CONNECT_METHOD, SERVER_OPTIONS
from protocols.v1 import federation_pb2 as pb
from protocols.version import PROTOCOL_VERSION
from tests.conftest import ticket_row, write_tickets
from tests.federation import start_node, stop_node, write_node_config

NODE = "inst-01"


def histogram(task_id: str, **changes: Any) -> bytes:
    """A coordinator message with an open-mode histogram task; ``changes`` edit its fields."""
    query = pb.HistogramQuery(
        statistic="S1",
        measure="tickets",
        dimensions=[pb.Dimension(name="discipline", keys=["toneel", "dans"])],
        bound=pb.ContributionBound(max_cells=2, max_per_cell=4),
        rho="0.3",
        mode=pb.RELEASE_MODE_OPEN,
        mechanism="discrete_gaussian",
        first_year=2024,
        last_year=2024,
    )
    for name, value in changes.items():
        if name == "bound":
            query.bound.CopyFrom(value)
        else:
            setattr(query, name, value)
    task = pb.Task(task_id=task_id, run_id="hostile", analysis_id=task_id, timeout_ms=30_000)
    task.histogram.CopyFrom(query)
    return pb.CoordinatorMessage(task=task).SerializeToString()


def unknown_task_type(task_id: str) -> bytes:
    task = pb.Task(task_id=task_id, run_id="hostile", analysis_id="x", timeout_ms=30_000)
    # Field 99 of Task: a task type from some future (or invented) contract.
    raw = task.SerializeToString() + bytes([0x9A, 0x06, 0x03]) + b"abc"
    return bytes([0x1A, len(raw)]) + raw  # CoordinatorMessage.task (field 3), length-delimited


@dataclass
class Hostile:
    """The coordinator side: welcomes the node, then sends what the test queues."""

    outbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    results: asyncio.Queue[TaskResult] = field(default_factory=asyncio.Queue)
    hellos: int = 0

    async def connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await context.read()  # Hello
        self.hellos += 1
        welcome = Welcome("s", "hostile-coordinator", "0", PROTOCOL_VERSION, 60_000)
        await context.write(encode_coordinator_message(welcome))

        async def reader() -> None:
            while (raw := await context.read()) is not grpc.aio.EOF:
                msg = decode_node_message(raw)
                if isinstance(msg, TaskResult):
                    await self.results.put(msg)

        reading = asyncio.create_task(reader())
        try:
            while not reading.done():
                send = asyncio.create_task(self.outbox.get())
                done, _ = await asyncio.wait({send, reading}, return_when=asyncio.FIRST_COMPLETED)
                if send in done:
                    await context.write(send.result())
                else:
                    send.cancel()
        finally:
            reading.cancel()

    async def ask(self, raw: bytes, timeout: float = 30) -> TaskResult:
        await self.outbox.put(raw)
        return await asyncio.wait_for(self.results.get(), timeout)


@contextlib.asynccontextmanager
async def hostile_server(pki: DevPki, hostile: Hostile) -> AsyncIterator[int]:
    server = grpc.aio.server(options=list(SERVER_OPTIONS))
    service, method = CONNECT_METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                service, {method: grpc.stream_stream_rpc_method_handler(hostile.connect)}
            ),
        )
    )
    credentials = grpc.ssl_server_credentials(
        [(pki.server.key.read_bytes(), pki.server.cert.read_bytes())],
        root_certificates=pki.ca.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


@pytest.fixture
def node_setup(tmp_path: Path) -> tuple[DevPki, Path]:
    pki = make_dev_pki(tmp_path / "pki", [NODE])
    rows = [
        ticket_row(ticket_id=f"T{i}", customer_id=f"C{i % 9}", discipline=("toneel", "dans")[i % 2])
        for i in range(60)
    ]
    tickets = write_tickets(tmp_path / "tickets.csv", rows)
    return pki, tickets


def error_of(result: TaskResult) -> ErrorInfo:
    assert isinstance(result.outcome, ErrorInfo), result
    return result.outcome


def test_the_node_refuses_each_hostile_request_and_keeps_its_budget(
    node_setup: tuple[DevPki, Path], tmp_path: Path
) -> None:
    pki, tickets = node_setup
    hostile = Hostile()

    async def scenario() -> dict[str, TaskResult]:
        seen: dict[str, TaskResult] = {}
        async with hostile_server(pki, hostile) as port:
            config = write_node_config(
                tmp_path / "node", NODE, "theatre", tickets, port, pki, cap="1.0",
                modes=("open", "secure"),
            )  # fmt: skip
            node = await start_node(config, NODE)
            try:
                # The same query, again and again under new ids: charged each time (fresh
                # noise) until the cap of 1.0 stops it at the fourth.
                for i in range(4):
                    seen[f"same-{i}"] = await hostile.ask(histogram(f"same-{i}"))
                seen["huge-rho"] = await hostile.ask(histogram("huge-rho", rho="999"))
                seen["tiny-rho"] = await hostile.ask(histogram("tiny-rho", rho="1e-300"))
                seen["negative-rho"] = await hostile.ask(histogram("negative-rho", rho="-1"))
                seen["absurd-bound"] = await hostile.ask(
                    histogram("absurd-bound", bound=pb.ContributionBound(max_cells=0,
                              max_per_cell=4_000_000_000))
                )  # fmt: skip
                seen["unknown-measure"] = await hostile.ask(
                    histogram("unknown-measure", measure="emails")
                )
                seen["unknown-type"] = await hostile.ask(unknown_task_type("unknown-type"))
                # Bytes that are no message at all carry no task id to answer; the node logs
                # them and carries on, as the next task shows.
                await hostile.outbox.put(b"\xff\xfe garbage \x00")
                seen["after-garbage"] = await hostile.ask(histogram("after-garbage", rho="0.05"))
                # Over the 16 MB message limit: gRPC ends the stream; the node reconnects.
                await hostile.outbox.put(histogram("oversized", statistic="S" * (17 << 20)))
                for _ in range(300):
                    if hostile.hellos >= 2:
                        break
                    await asyncio.sleep(0.1)
                assert hostile.hellos >= 2, node.output()
                seen["after-reconnect"] = await hostile.ask(
                    histogram("after-reconnect", rho="0.05")
                )
            finally:
                await stop_node(node)
            assert "Traceback" not in node.output()
        return seen

    seen = asyncio.run(scenario())
    for i in range(3):
        assert isinstance(seen[f"same-{i}"].outcome, HistogramAnswer)
    # Three different noisy answers, not one answer repeated: each was a fresh release.
    answers = {seen[f"same-{i}"].outcome.values for i in range(3)}  # type: ignore[union-attr]
    assert len(answers) == 3
    assert error_of(seen["same-3"]).code.value == "BUDGET_EXCEEDED"
    assert error_of(seen["huge-rho"]).code.value in {"POLICY_REFUSED", "INVALID_TASK"}
    for label in ("tiny-rho", "negative-rho", "absurd-bound", "unknown-measure"):
        assert error_of(seen[label]).code.value == "INVALID_TASK", label
    assert "sanity floor" in error_of(seen["tiny-rho"]).message
    assert error_of(seen["unknown-type"]).code.value == "UNSUPPORTED_TASK"
    # over budget now: 0.9 spent of 1.0, so 0.05 fits, twice
    assert isinstance(seen["after-garbage"].outcome, HistogramAnswer)
    assert isinstance(seen["after-reconnect"].outcome, HistogramAnswer)

    ledger = Ledger(tmp_path / "node" / "ledger.sqlite", BudgetCap(Rho.parse("1.0"), Period.YEAR))
    charged = sorted(e.task_id for e in ledger.entries())
    assert charged == ["after-garbage", "after-reconnect", "same-0", "same-1", "same-2"]
    assert ledger.spent() == Rho.parse("1.0")
    # Every refusal is in the institution's own record, with its reason, even of tasks it
    # could not read.
    refused = {r.task_id: r for r in ledger.refusals()}
    assert set(refused) == {
        "same-3", "huge-rho", "tiny-rho", "negative-rho", "absurd-bound", "unknown-measure",
        "unknown-type",
    }  # fmt: skip
    assert (
        refused["tiny-rho"].code == "INVALID_TASK" and "sanity floor" in refused["tiny-rho"].reason
    )


def test_a_node_never_speaks_to_a_coordinator_without_tls(
    node_setup: tuple[DevPki, Path], tmp_path: Path
) -> None:
    """A "downgraded" coordinator: plaintext where the node expects TLS. The node's first bytes
    are a TLS ClientHello, never its Hello (which names the institution) in the clear."""
    pki, tickets = node_setup
    received = bytearray()

    async def scenario() -> str:
        async def listen(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            received.extend(await r.read(4096))
            w.write(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an HTTP/2 server's first bytes
            await w.drain()
            w.close()

        server = await asyncio.start_server(listen, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = write_node_config(tmp_path / "node", NODE, "theatre", tickets, port, pki)
        node = await start_node(config, NODE, "--max-attempts", "2")
        try:
            code = await asyncio.wait_for(node.proc.wait(), 60)
        finally:
            server.close()
            await server.wait_closed()
        assert code == 4  # gave up, as told, after two attempts
        return node.output()

    output = asyncio.run(scenario())
    assert received[:1] == b"\x16"  # a TLS handshake record
    assert NODE.encode() not in received and b"PRI * HTTP/2.0" not in received
    assert "giving up" in output and "Traceback" not in output


def test_the_coordinator_refuses_old_tls_and_clients_without_a_certificate(
    node_setup: tuple[DevPki, Path],
) -> None:
    """The other direction: a client offering only TLS 1.1, or TLS 1.3 without a client
    certificate, gets no session from the coordinator's gRPC port."""
    from tests.federation import coordinator

    pki, _ = node_setup

    async def scenario() -> list[str]:
        outcomes = []
        async with coordinator(pki) as (server, port):
            for label, context in (
                ("tls1.1", _client_context(pki, maximum=_TLS_1_1)),
                ("no-cert", _client_context(pki, certificate=False)),
            ):
                try:
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", port, ssl=context, server_hostname="localhost"
                    )
                    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                    await writer.drain()
                    data = await asyncio.wait_for(reader.read(100), 5)
                    writer.close()
                    outcomes.append(f"{label}: {'closed' if not data else 'answered'}")
                except (ssl.SSLError, ConnectionError) as err:
                    outcomes.append(f"{label}: refused ({type(err).__name__})")
            assert server.registry.nodes() == []
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes[0].startswith("tls1.1: refused"), outcomes
    # TLS 1.3 finishes the handshake before the server checks the client certificate, so the
    # refusal can arrive as an alert on the first read instead: either way, no session.
    assert outcomes[1] in {"no-cert: closed"} or outcomes[1].startswith("no-cert: refused")


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    _TLS_1_1 = ssl.TLSVersion.TLSv1_1


def _client_context(
    pki: DevPki, *, maximum: ssl.TLSVersion | None = None, certificate: bool = True
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.set_alpn_protocols(["h2"])
    if maximum is not None:
        with warnings.catch_warnings():  # the point is to offer an obsolete protocol
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if certificate:
        pair = next(iter(pki.nodes.values()))
        context.load_cert_chain(pair.cert, pair.key)
    return context
