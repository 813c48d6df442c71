"""A node's per-run cap (policy ``max_rho_per_run``) holds against secure rounds opened together.

A secure round is admitted at setup but charged at its masked input. A coordinator that opens
two rounds of one run before either reaches its masked input passes both setups (nothing of
the run is charged yet); the cap must be checked again where the charge is made, in the same
ledger transaction, or both are charged.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from coordinator.inprocess import InProcessTransport
from coordinator.secure import RoundTask, SecureParams, SecureRoundFailed, run_secure_round
from deploy.devcerts import make_dev_pki
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from privacy.bounding import ContributionBound
from privacy.budget import Rho
from protocols.identity import PeerVerifier, Signer
from protocols.messages import Dimension, HistogramQuery, ReleaseMode
from protocols.vocabulary import DISCIPLINES
from tests.conftest import ticket_row, write_tickets

IDS = ["inst-01", "inst-02", "inst-03"]
QUERY = HistogramQuery(
    statistic="S1",
    measure="tickets",
    dimensions=(Dimension("discipline", DISCIPLINES),),
    bound=ContributionBound(2, 4),
    rho=Rho.parse("0.2"),
    mode=ReleaseMode.SECURE,
    years=(2024, 2024),
)


@pytest.mark.parametrize("concurrent", [False, True], ids=["inline", "threads"])
def test_two_rounds_of_one_run_opened_together_cannot_exceed_the_run_cap(
    tmp_path: Path, concurrent: bool
) -> None:
    """Inline, the nodes answer in the order the rounds ask, so every node is charged for the
    same round: that round is released and the other is refused by all. On worker threads the
    order is the scheduler's: nodes may be charged for different rounds, and then neither round
    gathers enough masked inputs. Either way no node pays for more than one round and at most
    one round is released."""
    pki = make_dev_pki(tmp_path / "pki", IDS)
    rows = [ticket_row(ticket_id=f"T{i}", order_id=f"O{i}", customer_id=f"C{i}") for i in range(6)]
    table = load_ticket_lines(write_tickets(tmp_path / "t.csv", rows))
    # Each round costs 0.2; the run may cost 0.3: one round fits, two do not.
    policy = Policy(max_rho_per_run=Rho.parse("0.3"))
    handlers = {
        nid: TaskHandler(
            NodeIdentity(nid, "theatre"),
            table,
            Ledger(tmp_path / f"{nid}.sqlite", BudgetCap(Rho.parse("5"), Period.YEAR)),
            policy,
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
        )
        for nid in IDS
    }
    transport = InProcessTransport(
        {nid: functools.partial(h.handle, requester="hostile") for nid, h in handlers.items()},
        concurrent=concurrent,
    )
    params = SecureParams.for_plan(len(IDS), 2, None, None)

    async def both() -> list[object]:
        rounds = [
            run_secure_round(
                transport,
                RoundTask(f"run-x/a{k}", "run-x", f"a{k}", 10_000),
                QUERY,
                IDS,
                params,
                verifier=PeerVerifier.from_file(pki.ca),
            )
            for k in (1, 2)
        ]
        return list(await asyncio.gather(*rounds, return_exceptions=True))

    outcomes = asyncio.run(both())
    failed = [o for o in outcomes if isinstance(o, SecureRoundFailed)]
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(done) + len(failed) == 2, outcomes
    assert len(done) <= 1, outcomes
    if not concurrent:
        # One round is released; the other finds no node willing to be charged for it.
        assert len(done) == 1, outcomes
        assert "masked inputs arrived" in str(failed[0])
    for nid, h in handlers.items():
        assert h.ledger.spent_in_run("run-x") == Rho.parse("0.2"), nid
        [refusal] = [r for r in h.ledger.refusals() if "one run may cost" in r.reason]
        assert "at most rho 0.3" in refusal.reason and "would cost rho 0.4" in refusal.reason


@pytest.mark.parametrize(("cap", "charged"), [("0.3", False), ("0.4", True)])
def test_the_ledger_checks_the_run_cap_with_the_charge(
    tmp_path: Path, cap: str, charged: bool
) -> None:
    from node.ledger import ChargeRequest
    from protocols.errors import PublicError

    ledger = Ledger(tmp_path / "l.sqlite", BudgetCap(Rho.parse("5"), Period.YEAR))
    first = ChargeRequest("r/a", "d1", "r", "a", "c", "x", "secure", Rho.parse("0.2"))
    second = ChargeRequest("r/b", "d2", "r", "b", "c", "x", "secure", Rho.parse("0.2"))
    other_run = ChargeRequest("s/a", "d3", "s", "a", "c", "x", "secure", Rho.parse("0.2"))
    ledger.begin(first, Rho.parse(cap))
    ledger.begin(other_run, Rho.parse(cap))  # another run's spend does not count
    if charged:
        ledger.begin(second, Rho.parse(cap))
    else:
        with pytest.raises(PublicError, match=r"one run may cost at most rho 0\.3"):
            ledger.begin(second, Rho.parse(cap))
    assert ledger.spent_in_run("r") == Rho.parse("0.4" if charged else "0.2")
    # Asking again about a task already charged is not a new cost, whatever the cap.
    ledger.begin(first, Rho.parse("0.2"))
