"""A real federation: gRPC server on loopback, mutual TLS, node processes, a release at the end."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator.release import ReleaseExists, write_release
from coordinator.runner import RunSettings, run_plan
from deploy.devcerts import make_dev_pki
from node.data import load_ticket_lines
from node.ledger import BudgetCap, Ledger, Period
from node.queries import bounded_counts
from privacy.budget import Rho
from protocols.plan import load_plan
from synthetic import Sector, SectorConfig, generate_sector
from tests.federation import coordinator, node_configs, start_node, stop_node

REPO = Path(__file__).resolve().parent.parent
PLAN = REPO / "deploy" / "plans" / "s1-open.toml"


@pytest.fixture(scope="module")
def sector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sector, Path]:
    out = tmp_path_factory.mktemp("sector")
    sec = generate_sector(SectorConfig(n_institutions=4, seed=11, years=(2024, 2024), scale=0.05))
    sec.write(out)
    return sec, out


def test_plan_over_mtls_with_four_node_processes(
    sector: tuple[Sector, Path], tmp_path: Path
) -> None:
    sec, sector_dir = sector
    ids = [i.institution_id for i in sec.institutions]
    pki = make_dev_pki(tmp_path / "pki", ids)
    plan = load_plan(PLAN)
    progress: list[str] = []

    async def scenario() -> tuple[dict[str, Any], list[int]]:
        async with coordinator(pki) as (server, port):
            configs = node_configs(sec, sector_dir, tmp_path / "nodes", port, pki)
            nodes = [await start_node(cfg, nid) for nid, cfg in configs.items()]
            try:
                doc = await asyncio.wait_for(
                    run_plan(
                        plan,
                        server.registry,
                        RunSettings("test-coordinator", len(ids), 60),
                        progress.append,
                    ),
                    120,
                )
                # While connected, the registry knows every node's version.
                assert {n.institution_id for n in server.registry.nodes()} == set(ids)
            finally:
                codes = [await stop_node(n) for n in nodes]
                logs = {n.institution_id: n.output() for n in nodes}
        assert all("Traceback" not in text for text in logs.values()), logs
        return doc, codes

    doc, codes = asyncio.run(scenario())
    assert codes == [0] * len(ids)  # SIGTERM is a clean stop
    assert [p["institution_id"] for p in doc["participants"]] == sorted(ids)
    [table] = doc["tables"]
    assert table["contributors"] == sorted(ids)

    # The release is the sum of each node's bounded counts plus noise of the stated size.
    query = plan.analyses[0].query
    truth = np.zeros(query.n_cells, dtype=np.int64)
    for inst in sec.institutions:
        t = load_ticket_lines(sector_dir / inst.institution_id / "ticket_line.csv")
        truth += bounded_counts(t, query, inst.type)
    noisy = np.array([c["noisy_sum"] for c in table["cells"]])
    sd = table["noise"]["sd_total"]
    assert sd == pytest.approx(query.bound.l2_sensitivity / 0.2**0.5 * len(ids) ** 0.5, rel=1e-9)
    # All 60 cells within 5.5 sd: false alarm probability 60 x 3.8e-8 = 2.3e-6.
    assert np.all(np.abs(noisy - truth) <= 5.5 * sd)
    assert np.any(noisy != truth)
    assert truth.sum() > 1000  # the check above is about real data, not empty cells

    # Every node's ledger holds exactly this one release, charged once.
    for inst in sec.institutions:
        ledger = Ledger(
            tmp_path / "nodes" / inst.institution_id / "ledger.sqlite",
            BudgetCap(Rho.parse("1"), Period.YEAR),
        )
        [entry] = ledger.entries()
        assert (entry.status, entry.rho, entry.requester) == (
            "answered",
            Rho.parse("0.1"),
            "test-coordinator",
        )
        ledger.close()

    # Written once, read-only, never overwritten.
    out = tmp_path / "release"
    paths = write_release(doc, out)
    assert {p.name for p in paths} == {"release.json", "s1_tickets_discipline_quarter.csv"}
    assert not (out / "release.json").stat().st_mode & stat.S_IWUSR
    with pytest.raises(ReleaseExists):
        write_release(doc, out)
    saved = json.loads((out / "release.json").read_text())
    assert saved["release_id"] == doc["release_id"]
    assert saved["plan"]["sha256"] == plan.sha256
    assert any("4/4 answered" in line for line in progress)
