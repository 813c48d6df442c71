"""Secure mode over real gRPC on loopback: the coordinator gets the sum and nothing else.

Node agents run here with their identities (certificate and key from a development CA) and
talk plaintext gRPC through a recording proxy, so every byte they send can be read back: no
node's contribution, and no personal data, appears on the wire; the release is the sum of the
contributions within its stated error bars; every ledger is charged once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from coordinator.runner import RunSettings, run_plan
from deploy.devcerts import make_dev_pki
from node.agent import AgentSettings, NodeAgent
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.queries import bounded_counts
from privacy.budget import Rho
from privacy.secagg import ring
from protocols.identity import PeerVerifier, Signer
from protocols.messages import ReleaseMode, TaskResult
from protocols.plan import parse_plan
from protocols.secagg import MaskedVector, SecAggResponse
from protocols.serde import decode_node_message
from synthetic import Sector, SectorConfig, generate_sector
from tests.federation import coordinator
from tests.wire import data_by_stream, grpc_messages, recording_proxy

PLAN = """
[plan]
id = "secure-test"
mode = "secure"
min_nodes = 4
task_timeout_s = 60

[[analysis]]
id = "s1"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline", "quarter"]
years = [2024, 2024]
max_cells = 8
max_per_cell = 32
rho = "0.1"
"""


@pytest.fixture(scope="module")
def sector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sector, Path]:
    out = tmp_path_factory.mktemp("sector")
    sec = generate_sector(SectorConfig(n_institutions=5, seed=21, years=(2024, 2024), scale=0.04))
    sec.write(out)
    return sec, out


def test_secure_plan_over_grpc_reveals_only_the_sum(
    sector: tuple[Sector, Path], tmp_path: Path
) -> None:
    sec, sector_dir = sector
    ids = [i.institution_id for i in sec.institutions]
    pki = make_dev_pki(tmp_path / "pki", ids)
    plan = parse_plan(PLAN)
    query = plan.analyses[0].query
    handlers = {}
    for inst in sec.institutions:
        nid = inst.institution_id
        table = load_ticket_lines(sector_dir / nid / "ticket_line.csv")
        ledger = Ledger(tmp_path / f"{nid}.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
        handlers[nid] = TaskHandler(
            NodeIdentity(nid, inst.type),
            table,
            ledger,
            Policy(allowed_modes=frozenset({ReleaseMode.SECURE})),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
        )

    async def scenario() -> tuple[dict[str, Any], list[tuple[bytearray, bytearray]]]:
        async with coordinator(None) as (server, port), recording_proxy(port) as (proxy, cap):
            agents = [
                NodeAgent(AgentSettings(f"127.0.0.1:{proxy}", None), h) for h in handlers.values()
            ]
            running = [asyncio.create_task(a.run()) for a in agents]
            try:
                doc = await asyncio.wait_for(
                    run_plan(
                        plan,
                        server.registry,
                        RunSettings("c", len(ids), 30, verifier=PeerVerifier.from_file(pki.ca)),
                        lambda _: None,
                    ),
                    120,
                )
            finally:
                for a in agents:
                    a.stop()
                await asyncio.gather(*running)
            return doc, cap.connections

    doc, connections = asyncio.run(scenario())
    [released] = doc["tables"]
    assert released["contributors"] == sorted(ids)
    assert released["noise"]["mode"] == "secure"
    assert released["secure_aggregation"]["n_min"] == 4

    truth = {
        i.institution_id: bounded_counts(handlers[i.institution_id].table, query, i.type)
        for i in sec.institutions
    }
    total = sum(truth.values())
    assert isinstance(total, np.ndarray)
    noisy = np.array([c["noisy_sum"] for c in released["cells"]])
    sd = released["noise"]["sd_total"]
    # Central-DP-sized noise (not sqrt(5) times it): all 60 cells within 5.5 sd, false alarm
    # probability 60 x 3.8e-8 = 2.3e-6.
    assert sd == pytest.approx(query.bound.l2_sensitivity / 0.2**0.5 * np.sqrt(5 / 4), rel=0.01)
    assert np.all(np.abs(noisy - total) <= 5.5 * sd)

    for h in handlers.values():
        [entry] = h.ledger.entries()
        assert (entry.mode, entry.status, entry.rho) == ("secure", "answered", Rho.parse("0.1"))

    # What crossed the wire from the nodes: masked vectors, never a contribution in the clear.
    masked: list[bytes] = []
    raw = b""
    for up, down in connections:
        raw += bytes(up) + bytes(down)
        for body in data_by_stream(bytes(up), client_side=True).values():
            for message in grpc_messages(body):
                msg = decode_node_message(message)
                outcome = msg.outcome if isinstance(msg, TaskResult) else None
                if isinstance(outcome, SecAggResponse) and isinstance(outcome.stage, MaskedVector):
                    masked.append(outcome.stage.values)
    assert len(masked) == len(ids)
    for vector in truth.values():
        assert ring.to_bytes(ring.to_ring(vector))[:80] not in raw
    for inst in sec.institutions:
        path = sector_dir / inst.institution_id / "ticket_line.csv"
        frame = pl.read_csv(path, infer_schema=False)
        for column in ("customer_id", "email", "ticket_id"):
            for value in frame[column].drop_nulls().unique().to_list()[:300]:
                assert value.encode() not in raw
