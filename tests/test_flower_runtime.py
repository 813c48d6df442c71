"""publiek on Flower's runtime (flwr 1.41 Message API): the same node handlers and the same
coordinator rounds, with Flower as the transport, compared with gRPC.

The Flower side runs in this process through ``deploy.flower_inprocess`` (Flower's Grid
interface, its ClientApp calling convention and per-node Context, its wire serialization of
every message both ways); the gRPC side over real mutual TLS on loopback.

Why the comparisons are real checks although the noise is fresh OpenDP randomness (never
seeded, never replaced):

- *Same release, open mode.* Both transports run the plan under one run id, so every node sees
  the same task ids. A node's ledger answers a task id it has answered before with the answer it
  stored, but only if the task's query digest is identical (else it refuses with
  TASK_ID_CONFLICT); so the second run reproduces the first byte for byte exactly when the
  Flower transport delivered every node an identical query, brought every answer back to the
  right node's slot and the same round logic aggregated them. A task lost, altered, duplicated
  or answered under another node's name changes a sum, drops a node from ``contributors`` or is
  refused, and the documents differ. Nodes are counted too: every answer over Flower must be a
  replay (nothing new was charged).
- *Same sum, secure mode.* A secure round is continued over Flower from its setup, as a
  coordinator resumes a round after a restart: same round id, the four later stages sent again.
  A node answers a repeated stage with its stored reply only if the request is identical to the
  first (else it refuses a "replayed stage"), and each stage's requests are built from all
  nodes' replies to the one before, so the sum can only come out identical if every stage
  reached every node unchanged and every reply came back to the right place; one node's reply
  routed to another is refused by the neighbour checks and the keys' signatures.
- *Fresh secure run in Flower's process-per-message model.* No replay: every node's handler is
  rebuilt from its node.toml before every message (as Flower's Deployment Engine starts a
  ClientApp process per message), so the round's state must travel in Flower's Context. The
  release is checked against the nodes' own exact bounded tables: each cell within 6 standard
  deviations of the noise the release states (false-positive rate below 1e-7 for the whole
  test), while a node missing from the sum or counted twice moves cells by thousands of sd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower runtime needs the flower extra")

from flwr.app.user_config import UserConfig
from flwr.supercore.run import Run

import node.flower as node_flower
from coordinator.flower import FlowerRunConfig, FlowerTransport, server_app
from coordinator.runner import RunSettings, run_plan
from coordinator.secure import SecureParams, run_secure_round
from deploy.devcerts import DevPki, make_dev_pki
from deploy.flower_inprocess import InProcessGrid, contexts_for, run_server_app, server_identity
from node.agent import AgentSettings, NodeAgent
from node.config import load_config
from node.flower import client_app, handler_from_node_config
from node.handler import in_period
from node.ledger import BudgetCap, Ledger, Period
from node.queries import bounded_counts
from node.round_state import CARRIED_FIELDS
from node.secure import _Round
from node.service import NodeService, open_node
from node.tls import TlsFiles
from privacy.budget import Rho
from protocols.identity import PeerVerifier
from protocols.messages import HistogramAnswer, ReleaseMode, Task, TaskResult
from protocols.plan import Plan, parse_plan
from synthetic import SectorConfig, generate_sector
from tests.federation import coordinator, write_node_config

COORDINATOR_ID = "test-coordinator"
PLAN = """
[plan]
id = "flower-parity"
mode = "{mode}"
min_nodes = 4
task_timeout_s = 60

[[analysis]]
id = "by-discipline"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
years = [2024, 2024]
max_cells = 8
max_per_cell = 32
rho = "0.1"

[[analysis]]
id = "by-quarter"
statistic = "S1"
measure = "tickets"
dimensions = ["quarter"]
years = [2024, 2024]
max_cells = 4
max_per_cell = 32
rho = "0.1"
"""

# One analysis with little noise (rho 0.4, at most 8 tickets a customer and cell), so that a
# node's whole contribution is far larger than the noise on the sum.
FRESH_PLAN = """
[plan]
id = "flower-fresh"
mode = "secure"
min_nodes = 4
task_timeout_s = 60

[[analysis]]
id = "by-discipline"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
years = [2024, 2024]
max_cells = 8
max_per_cell = 8
rho = "0.4"
"""


class Federation:
    def __init__(self, root: Path) -> None:
        sector = generate_sector(
            SectorConfig(n_institutions=5, seed=21, years=(2024, 2024), scale=0.03)
        )
        sector.write(root / "sector")
        self.ids = [i.institution_id for i in sector.institutions]
        self.pki: DevPki = make_dev_pki(root / "pki", self.ids)
        self.configs = {
            inst.institution_id: write_node_config(
                root / "nodes" / inst.institution_id,
                inst.institution_id,
                inst.type,
                root / "sector" / inst.institution_id / "ticket_line.csv",
                1,  # the gRPC leg dials the test's own port; Flower needs none
                self.pki,
                country=inst.country,
                modes=("open", "secure"),
            )
            for inst in sector.institutions
        }
        self.services: dict[str, NodeService] = {
            nid: open_node(load_config(path), path) for nid, path in self.configs.items()
        }

    def close(self) -> None:
        for service in self.services.values():
            service.close()

    def tls(self, nid: str) -> TlsFiles:
        return TlsFiles(self.pki.ca, self.pki.nodes[nid].cert, self.pki.nodes[nid].key)

    def verifier(self) -> PeerVerifier:
        return PeerVerifier.from_file(self.pki.ca)

    def settings(self, run_id: str) -> RunSettings:
        return RunSettings(COORDINATOR_ID, 5, 30.0, run_id=run_id, verifier=self.verifier())


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    fed = Federation(tmp_path_factory.mktemp("flower"))
    yield fed
    fed.close()


def _plan(mode: str) -> Plan:
    return parse_plan(PLAN.format(mode=mode), "flower-parity.toml")


async def _over_grpc(fed: Federation, job: Callable[[Any], Any]) -> Any:
    """Run ``job(transport)`` with the federation's nodes connected over mutual-TLS gRPC."""
    async with coordinator(fed.pki, coordinator_id=COORDINATOR_ID) as (server, port):
        agents = [
            NodeAgent(
                AgentSettings(f"127.0.0.1:{port}", fed.tls(nid), server_name="localhost"),
                fed.services[nid].handler,
            )
            for nid in fed.ids
        ]
        running = [asyncio.create_task(a.run()) for a in agents]
        try:
            await server.registry.wait_for_nodes(len(fed.ids), 30)
            return await job(server.registry)
        finally:
            for agent in agents:
                agent.stop()
            await asyncio.gather(*running)


def _over_flower(fed: Federation, job: Callable[[Any], Any]) -> tuple[Any, InProcessGrid]:
    """Run ``job(transport)`` with the same nodes behind Flower ClientApps, in process."""
    app = client_app(lambda context: fed.services[str(context.node_config["node"])].handler)
    contexts = contexts_for([{"node": nid} for nid in fed.ids], run_id=7)
    grid = InProcessGrid(app, contexts)
    grid.set_run(Run.create_empty(run_id=7))

    async def main() -> Any:
        async with FlowerTransport(grid, COORDINATOR_ID, poll_interval_s=0.005) as transport:
            await transport.wait_for_nodes(len(fed.ids), 30)
            return await job(transport)

    try:
        with server_identity(7):
            return asyncio.run(main()), grid
    finally:
        grid.close()


def _without_time(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("created_at", "release_id")}


def test_a_plan_over_flower_gives_the_release_it_gave_over_grpc(federation: Federation) -> None:
    plan = _plan("open")
    run_id = "flower-parity-open-run"
    answers: list[HistogramAnswer] = []

    async def job(transport: Any) -> dict[str, Any]:
        return await run_plan(plan, transport, federation.settings(run_id), lambda _m: None)

    over_grpc = asyncio.run(_over_grpc(federation, job))

    async def watched(transport: FlowerTransport) -> dict[str, Any]:
        submit = transport.submit

        async def spy(node: str, task: Task) -> TaskResult:
            result = await submit(node, task)
            if isinstance(result.outcome, HistogramAnswer):
                answers.append(result.outcome)
            return result

        transport.submit = spy  # type: ignore[method-assign, assignment]
        return await job(transport)

    over_flower, grid = _over_flower(federation, watched)
    assert [t["analysis_id"] for t in over_grpc["tables"]] == ["by-discipline", "by-quarter"]
    assert all(t["contributors"] == federation.ids for t in over_grpc["tables"])
    assert _without_time(over_flower) == _without_time(over_grpc)
    # Every one of the 10 answers went through Flower (5 Hellos too), and all were replays.
    assert grid.delivered == 5 + 10
    assert len(answers) == 10 and all(a.replayed for a in answers)
    for nid in federation.ids:  # charged once per analysis, whichever transport asked
        entries = federation.services[nid].ledger.entries()
        assert sorted(e.analysis_id for e in entries if e.run_id == run_id) == [
            "by-discipline",
            "by-quarter",
        ]


class _Pin:
    """A secure-round checkpoint (``StageCheckpoint``) that keeps the round id and the setup
    stage's replies: continuing from it re-sends every later stage, as a coordinator resuming
    a round does (a node refuses a second setup once its input left, rightly)."""

    def __init__(self) -> None:
        self.round_id: str | None = None
        self.setup: dict[str, Any] = {}

    def load(self) -> tuple[str, dict[str, dict[str, Any]]] | None:
        if self.round_id is None:
            return None
        return self.round_id, {"setup": self.setup}

    def save(self, round_id: str, stage: str, replies: dict[str, Any]) -> None:
        self.round_id = round_id
        if stage == "setup":
            self.setup = dict(replies)


def test_a_secure_round_replayed_over_flower_gives_the_same_sum(federation: Federation) -> None:
    query = _plan("secure").analyses[0].query
    task = Task(
        "flower-parity-secure/round", "flower-parity-secure", "by-discipline", 60_000, query
    )
    params = SecureParams.default(len(federation.ids), n_min=4)
    pin = _Pin()

    async def job(transport: Any) -> Any:
        return await run_secure_round(
            transport, task, query, federation.ids, params,
            verifier=federation.verifier(), checkpoint=pin,
        )  # fmt: skip

    first = asyncio.run(_over_grpc(federation, job))
    assert first.dropped == {} and first.survivors == tuple(federation.ids)
    assert pin.round_id == first.round_id
    again, grid = _over_flower(federation, job)
    assert again.round_id == first.round_id
    assert again.dropped == {}
    assert np.array_equal(again.total, first.total)
    assert grid.delivered == 5 + 4 * 5  # Hellos, then four stages to five nodes
    # Sanity: the sum is not trivially equal (the table has counts in it).
    assert int(np.abs(first.total).sum()) > 0


def _exact_tables(fed: Federation, plan: Plan) -> dict[str, Any]:
    """Each node's exact, contribution-bounded table for the plan's analysis (never sent)."""
    query = plan.analyses[0].query
    out = {}
    for nid in fed.ids:
        handler = fed.services[nid].handler
        kind = handler.identity.institution_type
        out[nid] = np.asarray(bounded_counts(in_period(handler.table, query), query, kind))
    return out


def _run_fresh(federation: Federation, tmp_path: Path) -> int:
    """Run FRESH_PLAN through the ServerApp, every node rebuilt from its node.toml before every
    message (Flower's process per message); returns how often a node was rebuilt."""
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(FRESH_PLAN)
    node_configs: list[UserConfig] = [
        {"publiek-config": str(federation.configs[nid])} for nid in federation.ids
    ]
    rebuilt = 0

    def fresh_process(context: Any) -> None:
        nonlocal rebuilt
        path = Path(context.node_config["publiek-config"]).resolve()
        service = node_flower._services.pop(path, None)
        if service is not None:
            service.close()
            rebuilt += 1

    config = FlowerRunConfig(
        plan=plan_path,
        out=tmp_path / "out",
        state=tmp_path / "state.sqlite",
        store=tmp_path / "releases.sqlite",
        expect_nodes=5,
        wait_s=30,
        coordinator_id=COORDINATOR_ID,
        ca=federation.pki.ca,
        poll_s=0.005,
    )
    try:
        run_server_app(
            server_app(config),
            client_app(handler_from_node_config),
            node_configs,
            before_message=fresh_process,
        )
    finally:
        for service in node_flower._services.values():
            service.close()
        node_flower._services.clear()
    return rebuilt


def test_a_fresh_secure_plan_as_the_deployment_engine_runs_it(
    federation: Federation, tmp_path: Path
) -> None:
    """Every message to a node starts from nothing but its node.toml and its Flower Context."""
    rebuilt = _run_fresh(federation, tmp_path)
    plan = parse_plan(FRESH_PLAN, "plan.toml")
    # Hellos and five stages to five nodes: all but each node's first message found no handler
    # left in memory, so the round's state came from the Context (see the next test).
    assert rebuilt >= 5 * 5

    release = json.loads((tmp_path / "out" / "release.json").read_text())
    assert release["plan"]["mode"] == ReleaseMode.SECURE.value
    assert release["failed"] == []
    (table,) = release["tables"]
    assert table["contributors"] == federation.ids
    noisy = np.array([c["noisy_sum"] for c in table["cells"]], dtype=np.float64)
    per_node = _exact_tables(federation, plan)
    exact = sum(per_node.values())
    sd = table["noise"]["sd_total"]
    cells = len(exact)
    assert np.all(np.abs(noisy - exact) <= 6 * sd), (noisy, exact, sd)
    assert abs(noisy.sum() - exact.sum()) <= 6 * sd * np.sqrt(cells)
    # Power: every node has a cell holding more than 12 sd of its own tickets, so leaving it out
    # (or counting it twice) would put that cell at least 6 sd outside the check above.
    assert min(int(t.max()) for t in per_node.values()) > 12 * sd
    for nid in federation.ids:
        ledger = Ledger(
            federation.configs[nid].parent / "ledger.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR)
        )
        charged = [e.analysis_id for e in ledger.entries() if e.run_id == release["run_id"]]
        ledger.close()
        assert charged == ["by-discipline"], nid

    from coordinator.cli import main as coordinator_main

    assert coordinator_main(["status", "--state", str(tmp_path / "state.sqlite"), "--json"]) == 0


def test_without_the_context_a_node_cannot_finish_a_round_in_a_new_process(
    federation: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check above can fail: with the round state not carried in the Context, the nodes
    # refuse the second stage ("round unknown here") and nothing is released or charged.
    monkeypatch.setattr(node_flower, "persisted_rounds", lambda _h, _s: contextlib.nullcontext())
    with pytest.raises(RuntimeError, match="ended without a release"):
        _run_fresh(federation, tmp_path)
    assert not (tmp_path / "out" / "release.json").exists()


def test_the_round_state_carries_every_field_of_a_round() -> None:
    import dataclasses

    # A field added to the node's round state that the Flower context does not carry would be
    # lost between Deployment Engine processes: name it here once it is carried.
    assert {f.name for f in dataclasses.fields(_Round)} == CARRIED_FIELDS


def test_the_run_config_of_the_server_app() -> None:
    config = FlowerRunConfig.from_run_config(
        {"plan": "p.toml", "out": "o", "expect-nodes": 5, "wait-s": 10.5, "ca": "ca.pem"}
    )
    assert (config.plan, config.out, config.expect_nodes, config.wait_s) == (
        Path("p.toml"), Path("o"), 5, 10.5,
    )  # fmt: skip
    with pytest.raises(ValueError, match="plan is missing; out is missing") as err:
        FlowerRunConfig.from_run_config({"wait-s": -1, "crl": "crl.pem"})
    assert "wait-s must be a number" in str(err.value) and "crl needs ca" in str(err.value)


def test_the_client_app_never_lets_an_error_out(federation: Federation) -> None:
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from protocols.flower_envelope import KEY_MESSAGE, MESSAGE_TYPE, RECORD
    from protocols.serde import decode_node_message

    def broken(_context: Context) -> Any:
        raise RuntimeError("secret detail from /home/data/tickets.csv")

    app = client_app(broken)
    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    with server_identity(1):
        message = Message(
            RecordDict({RECORD: ConfigRecord({KEY_MESSAGE: b"\x01garbage"})}), 5, MESSAGE_TYPE
        )
    message.metadata.__dict__["_message_id"] = "m1"
    reply = app(message, context)
    assert not reply.has_error()
    raw = reply.content.config_records[RECORD][KEY_MESSAGE]
    assert isinstance(raw, bytes)
    result = decode_node_message(raw)
    assert "secret detail" not in repr(result)
    assert result.outcome.code.value == "INTERNAL"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="publiek-config"):
        handler_from_node_config(context)


SIM_PLAN = """
[plan]
id = "flower-sim"
mode = "secure"
min_nodes = 3
task_timeout_s = 120

[[analysis]]
id = "by-discipline"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
years = [2024, 2024]
max_cells = 8
max_per_cell = 32
rho = "0.1"
"""


def _simulate(tmp_path: Path, engine: str) -> dict[str, Any]:
    """deploy.flower_sim as a user runs it (a process of its own: Ray leaves files open that
    pytest would report, and it keeps process-wide state)."""
    plan = tmp_path / "plan.toml"
    plan.write_text(SIM_PLAN)
    out = tmp_path / "sim"
    argv = ["--institutions", "4", "--scale", "0.03", "--plan", str(plan), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "deploy.flower_sim", *argv, "--engine", engine],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"over Flower ({engine}): 1 table(s), 4 institutions" in done.stdout
    doc: dict[str, Any] = json.loads((out / "release" / "release.json").read_text())
    assert doc["failed"] == []
    assert doc["tables"][0]["contributors"] == ["inst-01", "inst-02", "inst-03", "inst-04"]
    assert doc["coordinator_id"] == "flower-simulation"
    return doc


def test_the_simulation_app_in_process(tmp_path: Path) -> None:
    _simulate(tmp_path, "inprocess")


@pytest.mark.slow
def test_the_simulation_app_on_flowers_simulation_engine(tmp_path: Path) -> None:
    """Flower's own Simulation Engine on Ray (two actors here): any actor may serve a node's
    next message, and the node's secure-round state travels in its Context."""
    _simulate(tmp_path, "ray")
