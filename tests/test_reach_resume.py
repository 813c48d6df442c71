"""A coordinator killed during a [[reach]] section and restarted charges nobody twice.

Real node handlers (their ledgers on disk, their match keys from a shared key file) behind the
in-process transport; the coordinator "dies" by an exception raised while it handles one node's
answer: mid-way through a stage of the second round, at the last answer of the first round
(before its sum is saved) and at the first answer of the second round (the first saved: between
rounds). Restarted on the same run state, the run finishes: every node is charged exactly once
per round, no node is asked to send a contribution that already left, and the release holds
the section's tables.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.inprocess import InProcessTransport
from coordinator.runner import RunSettings, run_plan
from coordinator.state import RunStateStore
from deploy.devcerts import DevPki, make_dev_pki
from node.data import load
from node.handler import NodeIdentity, TaskHandler
from node.ingest.matchkey import MatchKeySecret
from node.ingest.pipeline import IngestSettings
from node.ingest.sources import file_source
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.reach import ReachData
from privacy.budget import Rho, compose
from protocols.identity import PeerVerifier, Signer
from protocols.messages import ReleaseMode, Task, TaskResult
from protocols.plan import parse_plan
from synthetic import SectorConfig, generate_sector

PLAN = """
[plan]
id = "reach-resume"
mode = "secure"
min_nodes = 4
task_timeout_s = 60

[[reach]]
id = "reach"
years = [2024, 2024]
rho = "0.05"
by = ["sector", "discipline"]
buckets = { sector = 256 }
"""

Nodes = list[tuple[str, str, Any, ReachData]]


@pytest.fixture(scope="module")
def sector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Nodes, DevPki]:
    root = tmp_path_factory.mktemp("reachresume")
    sec = generate_sector(SectorConfig(n_institutions=5, seed=23, years=(2024, 2024), scale=0.04))
    sec.write(root / "sector")
    secret = MatchKeySecret(key=secrets.token_bytes(32), source=root / "match.key")
    nodes = []
    for inst in sec.institutions:
        nid = inst.institution_id
        loaded = load(
            file_source(root / "sector" / nid / "ticket_line.csv"),
            IngestSettings(match_key=secret),
        )
        reach = ReachData.build(loaded.table, loaded.match_keys, inst.type, secret.fingerprint)
        nodes.append((nid, inst.type, loaded.table, reach))
    return nodes, make_dev_pki(root / "pki", [n[0] for n in nodes])


def handlers(sector: tuple[Nodes, DevPki], folder: Path) -> dict[str, TaskHandler]:
    nodes, pki = sector
    return {
        nid: TaskHandler(
            NodeIdentity(nid, kind),
            table,
            Ledger(folder / f"{nid}.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR)),
            Policy(allowed_modes=frozenset({ReleaseMode.SECURE})),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
            reach=reach,
        )
        for nid, kind, table, reach in nodes
    }


def transport(
    hs: dict[str, TaskHandler], wrap: Callable[[str, Task, TaskResult], None] | None = None
) -> InProcessTransport:
    def handle(nid: str, task: Task) -> TaskResult:
        result = hs[nid].handle(task, "test-coordinator")
        if wrap is not None:
            wrap(nid, task, result)
        return result

    # Each node announces what its handler says it can do (reach and its key's fingerprint).
    return InProcessTransport(
        {nid: functools.partial(handle, nid) for nid in hs},
        capabilities={nid: h.capabilities for nid, h in hs.items()},
    )


def run(tr: InProcessTransport, n: int, state: RunStateStore, run_id: str | None) -> dict[str, Any]:
    settings = RunSettings("test-coordinator", n, 5, run_id=run_id, state=state)
    return asyncio.run(run_plan(parse_plan(PLAN), tr, settings, lambda _: None))


class Crash(Exception):
    pass


def _calls_per_round(sector: tuple[Nodes, DevPki], folder: Path) -> list[int]:
    """How many node answers each round takes, counted on an undisturbed run."""
    hs = handlers(sector, folder)
    per_round: dict[str, int] = {}

    def count(nid: str, task: Task, result: TaskResult) -> None:
        per_round[task.analysis_id] = per_round.get(task.analysis_id, 0) + 1

    run(transport(hs, count), len(hs), RunStateStore(folder / "state.sqlite"), "count")
    # The discipline round runs first (its count of people sizes an "auto" sector sketch).
    return [per_round["reach_discipline"], per_round["reach_sector"]]


@pytest.mark.parametrize(
    "where", ["mid-way through the second round", "at the first round's last answer", "between"]
)
def test_a_crashed_coordinator_resumes_reach_without_charging_twice(
    sector: tuple[Nodes, DevPki], tmp_path: Path, where: str
) -> None:
    first, second = _calls_per_round(sector, tmp_path / "count")
    crash_at = {
        "mid-way through the second round": first + second // 2,
        "at the first round's last answer": first,
        "between": first + 1,
    }[where]
    hs = handlers(sector, tmp_path / "ledgers")
    state = RunStateStore(tmp_path / "state.sqlite")
    calls = {"n": 0}

    def crash(nid: str, task: Task, result: TaskResult) -> None:
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise Crash("coordinator killed")

    with pytest.raises(Crash):
        run(transport(hs, crash), len(hs), state, "reach-run")
    charged_before = {nid: len(h.ledger.entries()) for nid, h in hs.items()}
    assert max(charged_before.values()) >= 1  # the crash came after a contribution left
    doc = run(transport(hs), len(hs), state, None)
    assert doc["run_id"] == "reach-run"
    tables = {t["analysis_id"] for t in doc["tables"]}
    assert {"reach_people_by_sector", "reach_overlap_discipline"} <= tables
    reach = parse_plan(PLAN).reaches[0]
    for h in hs.values():
        entries = h.ledger.entries()
        assert len({e.task_id for e in entries}) == len(entries)
        assert sorted(e.analysis_id for e in entries) == ["reach_discipline", "reach_sector"]
        assert all(e.status == "answered" for e in entries)
        assert not [r for r in h.ledger.refusals() if "already left" in r.reason]
        assert h.ledger.spent() == compose([e.rho for e in entries]) == reach.total_rho
