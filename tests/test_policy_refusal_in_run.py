"""A node whose local policy refuses a plan says why, is charged nothing, and the federation
carries on without it when enough nodes remain (secure and open mode, real handlers, ledgers and
secure-aggregation rounds in process)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

from coordinator.inprocess import InProcessTransport
from coordinator.runner import RunAborted, RunSettings, run_plan
from node.handler import TaskHandler
from node.policy import Policy
from privacy.budget import Rho
from protocols.messages import ReleaseMode
from protocols.plan import parse_plan
from tests.test_resume import IDS, PLAN, handlers

STRICT = "inst-05"


def federation(tmp_path: Path) -> dict[str, TaskHandler]:
    hs = handlers(tmp_path)
    # The plan lets a customer add 8 tickets to a cell; this institution allows 4 at most.
    hs[STRICT].policy = Policy(
        allowed_modes=frozenset(ReleaseMode), max_contribution={"tickets": 4}
    )
    return hs


def run(hs: dict[str, TaskHandler], mode: str, min_nodes: int) -> dict[str, Any]:
    transport = InProcessTransport(
        {nid: functools.partial(h.handle, requester="coord") for nid, h in hs.items()}
    )
    plan = parse_plan(PLAN.format(mode=mode).replace("min_nodes = 4", f"min_nodes = {min_nodes}"))
    settings = RunSettings("coord", len(IDS), 5)
    return asyncio.run(run_plan(plan, transport, settings, lambda _: None))


@pytest.mark.parametrize("mode", ["secure", "open"])
def test_the_rest_carries_on_without_a_refusing_node(tmp_path: Path, mode: str) -> None:
    hs = federation(tmp_path)
    doc = run(hs, mode, min_nodes=4)
    others = [nid for nid in IDS if nid != STRICT]
    assert [t["analysis_id"] for t in doc["tables"]] == ["a1", "a2", "a3"]
    for table in doc["tables"]:
        assert table["contributors"] == others
        [excluded] = table["excluded"]
        assert excluded["institution_id"] == STRICT
        assert "more than the 4 allowed" in excluded["reason"], excluded["reason"]
    # The refusing node spent nothing and recorded why; the others paid each analysis once.
    strict = hs[STRICT].ledger
    assert strict.spent() == Rho.parse("0")
    assert [e.status for e in strict.entries()] == []
    refusals = strict.refusals()
    assert sorted(r.task_id.rsplit("/", 1)[1] for r in refusals) == ["a1", "a2", "a3"]
    assert all(r.code == "POLICY_REFUSED" for r in refusals)
    assert all("more than the 4 allowed" in r.reason for r in refusals)
    for nid in others:
        assert hs[nid].ledger.spent() == Rho.parse("0.3")


def test_too_few_willing_nodes_in_secure_mode_stop_before_anyone_is_charged(
    tmp_path: Path,
) -> None:
    # n_min 5 with one of five refusing: the round stops after setup, before any input is
    # masked (and charged), and says why.
    hs = federation(tmp_path)
    with pytest.raises(RunAborted) as err:
        run(hs, "secure", min_nodes=5)
    message = str(err.value)
    assert "only 4 institutions are left after setup; the plan needs 5" in message
    assert "no one was charged" in message and "more than the 4 allowed" in message
    assert all(h.ledger.spent() == Rho.parse("0") for h in hs.values())
    assert all(h.ledger.entries() == [] for h in hs.values())
    assert len(hs[STRICT].ledger.refusals()) == 3


def test_too_few_willing_nodes_in_open_mode_are_named_with_who_was_charged(
    tmp_path: Path,
) -> None:
    # Open mode has no setup stage: the others' noisy answers did reach the coordinator, so
    # their ledgers rightly show the charge; the failure names the refusal.
    hs = federation(tmp_path)
    with pytest.raises(RunAborted, match=r"only 4 usable answer.*more than the 4 allowed"):
        run(hs, "open", min_nodes=5)
    assert hs[STRICT].ledger.spent() == Rho.parse("0")
    assert all(hs[nid].ledger.spent() == Rho.parse("0.3") for nid in IDS if nid != STRICT)
