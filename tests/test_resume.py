"""A run interrupted at any point resumes from its state file and charges no node twice.

The coordinator "crashes" by an exception raised from its progress callback at a chosen line
(right after nodes answered a stage, before the coordinator recorded it: the worst moment), then
a fresh ``run_plan`` with the same state file finishes the run.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

from coordinator.inprocess import InProcessTransport
from coordinator.runner import RunSettings, run_plan
from coordinator.state import RunStateStore
from deploy.devcerts import make_dev_pki
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from privacy.budget import Rho
from protocols.identity import PeerVerifier, Signer
from protocols.messages import ReleaseMode
from protocols.plan import parse_plan
from tests.conftest import ticket_row, write_tickets

IDS = [f"inst-0{i}" for i in range(1, 6)]

PLAN = """
[plan]
id = "resume-test"
mode = "{mode}"
min_nodes = 4
task_timeout_s = 30

[[analysis]]
id = "a1"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
years = [2024, 2024]
max_cells = 4
max_per_cell = 8
rho = "0.1"

[[analysis]]
id = "a2"
statistic = "S1"
measure = "tickets"
dimensions = ["quarter"]
years = [2024, 2024]
max_cells = 4
max_per_cell = 8
rho = "0.1"

[[analysis]]
id = "a3"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline", "quarter"]
years = [2024, 2024]
max_cells = 4
max_per_cell = 8
rho = "0.1"
"""


class Crash(Exception):
    pass


def handlers(tmp_path: Path) -> dict[str, TaskHandler]:
    pki = make_dev_pki(tmp_path / "pki", IDS)
    out = {}
    for n, nid in enumerate(IDS):
        rows = [
            ticket_row(
                ticket_id=f"T{i}",
                customer_id=f"C{i % 25}",
                discipline=["toneel", "dans", "film"][(i + n) % 3],
                performance_start=f"2024-{i % 12 + 1:02d}-10T20:00:00",
            )
            for i in range(150)
        ]
        table = load_ticket_lines(write_tickets(tmp_path / nid / "t.csv", rows))
        ledger = Ledger(tmp_path / nid / "l.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
        out[nid] = TaskHandler(
            NodeIdentity(nid, "theatre"),
            table,
            ledger,
            Policy(allowed_modes=frozenset(ReleaseMode)),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
        )
    return out


def run(
    mode: str, hs: dict[str, TaskHandler], state: RunStateStore, crash_on: str | None
) -> dict[str, Any]:
    transport = InProcessTransport(
        {nid: functools.partial(h.handle, requester="coord") for nid, h in hs.items()}
    )
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if crash_on is not None and crash_on in line:
            raise Crash(line)

    settings = RunSettings("coord", len(IDS), 5, state=state)
    return asyncio.run(run_plan(parse_plan(PLAN.format(mode=mode)), transport, settings, progress))


@pytest.mark.parametrize(
    ("mode", "crash_on"),
    [
        ("open", "a2: 5/5 answered"),
        ("secure", "secure round, setup: 5/5 answered"),
        ("secure", "secure round, masked input: 5/5 answered"),
        ("secure", "secure round, unmasking: 5/5 answered"),
    ],
    ids=["open-mid-plan", "secure-after-setup", "secure-after-masked-input", "secure-at-unmask"],
)
def test_interrupted_run_resumes_without_charging_twice(
    tmp_path: Path, mode: str, crash_on: str
) -> None:
    hs = handlers(tmp_path)
    state = RunStateStore(tmp_path / "state.sqlite")
    with pytest.raises(Crash):
        run(mode, hs, state, crash_on)
    [unfinished] = state.runs()
    assert unfinished.status == "running"

    # A new coordinator process would open the same file; so do we.
    doc = run(mode, hs, RunStateStore(tmp_path / "state.sqlite"), None)
    assert doc["run_id"] == unfinished.run_id
    assert [t["analysis_id"] for t in doc["tables"]] == ["a1", "a2", "a3"]
    assert all(t["contributors"] == IDS for t in doc["tables"])
    for h in hs.values():
        entries = h.ledger.entries()
        assert sorted(e.analysis_id for e in entries) == ["a1", "a2", "a3"]  # each once
        assert all(e.status == "answered" for e in entries)
        assert h.ledger.spent() == Rho.parse("0.3")


def test_a_finished_plan_starts_a_new_run(tmp_path: Path) -> None:
    hs = handlers(tmp_path)
    state = RunStateStore(tmp_path / "state.sqlite")
    first = run("open", hs, state, None)
    state.finish_run(first["run_id"], "released", first["release_id"])
    second = run("open", hs, state, None)
    assert second["run_id"] != first["run_id"]
    assert all(h.ledger.spent() == Rho.parse("0.6") for h in hs.values())  # a new run is new
