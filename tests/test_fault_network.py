"""Fault matrix, rows "a connection cut and restored" and "a node too slow for its deadline".

Five node agents (real ``NodeAgent`` gRPC clients with mTLS, real handlers and ledgers) reach an
in-process coordinator through a loopback TCP proxy whose link the test cuts, restores or slows
(``tests/netfault.py``): the faults are in the network, not in the code under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.runner import RunSettings, run_plan
from deploy.devcerts import DevPki, make_dev_pki
from node.agent import AgentSettings, NodeAgent
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.tls import TlsFiles
from privacy.budget import Rho
from protocols.identity import PeerVerifier, Signer
from protocols.plan import parse_plan
from synthetic import Sector, SectorConfig, generate_sector
from tests.federation import coordinator
from tests.netfault import FaultyLink, faulty_link

PLAN = """
[plan]
id = "net-{slug}"
mode = "secure"
min_nodes = 3
task_timeout_s = {timeout}

[[analysis]]
id = "s1"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
years = [2024, 2024]
max_cells = 4
max_per_cell = 16
rho = "0.1"
"""


@pytest.fixture(scope="module")
def sector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sector, Path, DevPki]:
    out = tmp_path_factory.mktemp("net")
    sec = generate_sector(SectorConfig(n_institutions=5, seed=41, years=(2024, 2024), scale=0.01))
    sec.write(out / "sector")
    pki = make_dev_pki(out / "pki", [i.institution_id for i in sec.institutions])
    return sec, out, pki


def handlers(sec: Sector, root: Path, pki: DevPki, ledgers: Path) -> dict[str, TaskHandler]:
    out = {}
    for inst in sec.institutions:
        nid = inst.institution_id
        out[nid] = TaskHandler(
            NodeIdentity(nid, inst.type),
            load_ticket_lines(root / "sector" / nid / "ticket_line.csv"),
            Ledger(ledgers / f"{nid}.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR)),
            Policy(),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
        )
    return out


async def federate(
    hs: dict[str, TaskHandler],
    pki: DevPki,
    plan_text: str,
    routes: Callable[[str], bool],
    during: Callable[[FaultyLink, str], None],
    before_run: Callable[[FaultyLink], None] = lambda _: None,
) -> tuple[dict[str, Any], FaultyLink]:
    """Run a plan with the nodes for which ``routes`` is true behind one faulty link; ``during``
    sees every progress line (to cut or restore the link at a chosen moment)."""
    async with coordinator(pki) as (server, port), faulty_link(port) as (proxy, link):
        agents = []
        for nid, h in hs.items():
            pair = pki.nodes[nid]
            settings = AgentSettings(
                f"127.0.0.1:{proxy if routes(nid) else port}",
                TlsFiles(pki.ca, pair.cert, pair.key),
                server_name="localhost",
                backoff_initial_s=0.2,
                backoff_max_s=1.0,
            )
            agents.append(NodeAgent(settings, h))
        running = [asyncio.create_task(a.run()) for a in agents]
        try:
            await server.registry.wait_for_nodes(len(hs), 30)
            before_run(link)
            run_settings = RunSettings("c", len(hs), 30, verifier=PeerVerifier.from_file(pki.ca))
            plan = parse_plan(plan_text)
            doc = await asyncio.wait_for(
                run_plan(plan, server.registry, run_settings, lambda s: during(link, s)), 120
            )
        finally:
            for a in agents:
                a.stop()
            await asyncio.gather(*running)
        return doc, link


@pytest.mark.parametrize(
    "after", ["secure round, share keys: 5/5", "secure round, consistency check: 5/5"]
)
def test_a_cut_link_is_restored_and_the_round_completes_charging_once(
    sector: tuple[Sector, Path, DevPki], tmp_path: Path, after: str
) -> None:
    sec, root, pki = sector
    hs = handlers(sec, root, pki, tmp_path)
    cut_at: list[str] = []

    def during(link: FaultyLink, line: str) -> None:
        if line.startswith(after) and not cut_at:
            cut_at.append(line)
            link.cut()  # every node loses its connection before the next stage is sent
            asyncio.get_running_loop().call_later(1.0, link.restore)

    plan = PLAN.format(slug="cut", timeout=30)
    doc, link = asyncio.run(federate(hs, pki, plan, lambda _: True, during))
    assert cut_at, f"never saw {after!r}"
    assert link.connections >= 2 * len(hs)  # every node came back through the link
    [table] = doc["tables"]
    assert table["contributors"] == sorted(hs)
    assert table["excluded"] == []
    for h in hs.values():
        [entry] = h.ledger.entries()  # the re-sent stage was answered from the round's state
        assert entry.status == "answered" and h.ledger.spent() == Rho.parse("0.1")


def test_a_node_too_slow_for_its_deadline_is_left_out_uncharged(
    sector: tuple[Sector, Path, DevPki], tmp_path: Path
) -> None:
    sec, root, pki = sector
    hs = handlers(sec, root, pki, tmp_path)
    slow = sorted(hs)[0]

    def slow_down(link: FaultyLink) -> None:
        # 4.5 s each way: a round trip takes longer than the 3 s deadline plus the
        # coordinator's 5 s grace. (A 1 s deadline left the healthy nodes, whose agents share
        # one event loop with the coordinator and the proxy here, too little room under load.)
        link.delay_s = 4.5

    plan = PLAN.format(slug="slow", timeout=3)
    doc, _ = asyncio.run(
        federate(hs, pki, plan, lambda nid: nid == slow, lambda *_: None, slow_down)
    )
    [table] = doc["tables"]
    assert table["contributors"] == sorted(set(hs) - {slow})
    [excluded] = table["excluded"]
    assert excluded["institution_id"] == slow
    assert excluded["reason"].startswith("setup") and "did not answer" in excluded["reason"]
    # It missed setup, so it was never asked for input: nothing charged, nothing lost.
    assert hs[slow].ledger.entries() == []
    for nid in set(hs) - {slow}:
        assert hs[nid].ledger.spent() == Rho.parse("0.1")
