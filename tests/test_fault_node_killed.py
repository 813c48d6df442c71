"""Fault matrix, row "a node killed at each protocol stage": real node processes over mTLS gRPC.

Five ``publiek-node run`` processes answer a secure plan. Between two stages of the round (the
moment the coordinator has every answer of one stage and is about to send the next) one node is
killed with SIGKILL and started again at once, as a crashed service would be restarted. Its
secure-aggregation round state died with it, so it can only rejoin the round at setup; after
that it refuses the stages of a round it does not know, and the round carries on without it.

What must hold at every stage: the release is made; a node's input is in the sum exactly when
its ledger shows the analysis charged, once; a node that gave no masked input is charged
nothing; the sum agrees with the contributors' own bounded tables within the stated error.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.runner import RunSettings, run_plan
from deploy.devcerts import make_dev_pki
from node.data import load_ticket_lines
from node.ledger import BudgetCap, Ledger, Period
from node.queries import bounded_counts
from privacy.budget import Rho
from protocols.identity import PeerVerifier
from protocols.plan import parse_plan
from synthetic import SectorConfig, generate_sector
from tests.federation import NodeProcess, coordinator, start_node, stop_node, write_node_config

PLAN = """
[plan]
id = "kill-{slug}"
mode = "secure"
min_nodes = 3
task_timeout_s = 60

[[analysis]]
id = "s1"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline", "quarter"]
years = [2024, 2024]
max_cells = 4
max_per_cell = 4
rho = "0.5"
"""

# (the progress line after which the victim is killed, what it missed, whether its masked input
# had already arrived, so that it is in the sum)
STAGES = [
    ("analysis 1/1", "setup", None),  # may rejoin in time for setup: either outcome is valid
    ("secure round, setup: 5/5 answered", "share keys", False),
    ("secure round, share keys: 5/5 answered", "masked input", False),
    ("secure round, masked input: 5/5 answered", "consistency check", True),
    ("secure round, consistency check: 5/5 answered", "unmasking", True),
]


def test_a_node_killed_at_each_stage(tmp_path: Path) -> None:
    sector = generate_sector(
        SectorConfig(n_institutions=5, seed=31, years=(2024, 2024), scale=0.06)
    )
    sector.write(tmp_path / "sector")
    ids = [i.institution_id for i in sector.institutions]
    types = {i.institution_id: i.type for i in sector.institutions}
    pki = make_dev_pki(tmp_path / "pki", ids)
    cap = BudgetCap(Rho.parse("10"), Period.YEAR)

    async def scenario() -> list[tuple[str, str, bool | None, dict[str, Any]]]:
        outcomes = []
        async with coordinator(pki) as (server, port):
            configs = {
                nid: write_node_config(
                    tmp_path / "nodes" / nid,
                    nid,
                    types[nid],
                    tmp_path / "sector" / nid / "ticket_line.csv",
                    port,
                    pki,
                    cap="10",
                    modes=("secure",),
                )
                for nid in ids
            }
            nodes = {nid: await start_node(configs[nid], nid) for nid in ids}
            restarts: list[asyncio.Task[NodeProcess]] = []
            try:
                for k, (trigger, missed, in_sum) in enumerate(STAGES):
                    await server.registry.wait_for_nodes(len(ids), 60)
                    victim = ids[k % len(ids)]
                    killed = False

                    def progress(line: str, victim: str = victim, trigger: str = trigger) -> None:
                        nonlocal killed
                        if not killed and line.startswith(trigger):
                            killed = True
                            # SIGKILL now, before the next stage is sent; start it again
                            # at once, as a supervisor would.
                            os.kill(nodes[victim].proc.pid, signal.SIGKILL)
                            restarts.append(asyncio.create_task(restart(victim)))

                    async def restart(nid: str) -> NodeProcess:
                        await nodes[nid].proc.wait()
                        nodes[nid] = await start_node(configs[nid], nid)
                        return nodes[nid]

                    plan = parse_plan(PLAN.format(slug=missed.replace(" ", "-")))
                    settings = RunSettings(
                        "c", len(ids), 60, verifier=PeerVerifier.from_file(pki.ca)
                    )
                    doc = await asyncio.wait_for(
                        run_plan(plan, server.registry, settings, progress), 120
                    )
                    assert killed, f"never saw {trigger!r}"
                    await asyncio.gather(*restarts)
                    restarts.clear()
                    outcomes.append((victim, missed, in_sum, doc))
            finally:
                for t in restarts:
                    t.cancel()
                for n in nodes.values():
                    await stop_node(n)
        return outcomes

    outcomes = asyncio.run(scenario())
    tables = {nid: load_ticket_lines(tmp_path / "sector" / nid / "ticket_line.csv") for nid in ids}
    query = parse_plan(PLAN.format(slug="x")).analyses[0].query
    own = {nid: bounded_counts(tables[nid], query, "theatre") for nid in ids}
    for victim, missed, in_sum, doc in outcomes:
        [table] = doc["tables"]
        contributors = table["contributors"]
        excluded = {e["institution_id"]: e["reason"] for e in table["excluded"]}
        # Excluded, with the stage it missed, exactly when its input is not in the sum.
        assert (victim in excluded) is (victim not in contributors), (missed, excluded)
        if victim in excluded:
            assert excluded[victim].startswith(missed) and "restarted" in excluded[victim]
        if in_sum is not None:
            assert (victim in contributors) is in_sum, (missed, contributors)
        assert set(ids) - {victim} <= set(contributors), missed  # nobody else was lost
        for nid in ids:
            ledger = Ledger(tmp_path / "nodes" / nid / "ledger.sqlite", cap)
            charged = [e for e in ledger.entries() if e.task_id.startswith(doc["run_id"])]
            # In the sum exactly when charged, and then once.
            assert len(charged) == (1 if nid in contributors else 0), (missed, nid, charged)
        truth = np.sum(np.stack([own[n] for n in contributors]), axis=0)
        noisy = np.array([c["noisy_sum"] for c in table["cells"]])
        # 60 cells within 5.5 sd in each of five stages: a false alarm has probability
        # 300 x 3.8e-8 = 1.1e-5 per run.
        sd = table["noise"]["sd_total"]
        off = np.flatnonzero(np.abs(noisy - truth) > 5.5 * sd)
        # On a miss, say enough to tell noise from a contribution counted wrongly: which
        # cells, by how many sd, and each contributor's own value there.
        assert off.size == 0, (
            missed,
            victim,
            contributors,
            sd,
            [(int(i), float(noisy[i] - truth[i]) / sd) for i in off[:5]],
            {n: [int(own[n][i]) for i in off[:5]] for n in ids},
        )
        # The cells' total tells a node counted wrongly from noise: it is off by that node's
        # whole total, while its noise has sd sqrt(60) sd (false alarm 3.8e-8 per stage at
        # 5.5 of those), and every node's total is more than 12 of those (checked below; the
        # bound and budget of the plan are chosen for it), so a node wrongly in or out of the
        # sum is caught unless the noise is 6.5 spreads the other way (below 1e-10).
        spread = math.sqrt(noisy.size) * sd
        assert abs(float(noisy.sum() - truth.sum())) <= 5.5 * spread, (missed, victim)
        assert min(int(own[n].sum()) for n in ids) > 12 * spread, spread
