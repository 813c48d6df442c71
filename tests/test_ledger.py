"""The node's budget ledger on a real SQLite file: charge first, replay stored, refuse over cap."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.ledger import (
    BudgetCap,
    ChargeRequest,
    Ledger,
    LedgerError,
    NewCharge,
    PendingCharge,
    Period,
    StoredAnswer,
)
from privacy.budget import Rho
from protocols.errors import ErrorCode, PublicError


def req(task_id: str = "run/a", rho: str = "0.3", digest: str = "d1") -> ChargeRequest:
    return ChargeRequest(task_id, digest, "run", "a", "coord", "S1 test", "open", Rho.parse(rho))


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def cap() -> BudgetCap:
    return BudgetCap(Rho.parse("1"), Period.YEAR)


def test_charge_then_answer_then_replay(tmp_path: Path, cap: BudgetCap) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", cap)
    assert isinstance(ledger.begin(req()), NewCharge)
    assert ledger.spent() == Rho.parse("0.3")
    ledger.record_answer("run/a", b"answer-1")
    again = ledger.begin(req())
    assert again == StoredAnswer("run/a", b"answer-1")
    assert ledger.spent() == Rho.parse("0.3")  # a replay costs nothing


def test_first_stored_answer_wins(tmp_path: Path, cap: BudgetCap) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", cap)
    ledger.begin(req())
    assert ledger.record_answer("run/a", b"first") == b"first"
    assert ledger.record_answer("run/a", b"second") == b"first"


def test_state_survives_reopening(tmp_path: Path, cap: BudgetCap) -> None:
    path = tmp_path / "l.sqlite"
    first = Ledger(path, cap)
    first.begin(req("t1"))
    first.record_answer("t1", b"x")
    first.begin(req("t2"))  # charged, never answered (the process stopped here)
    first.close()
    second = Ledger(path, cap)
    assert second.spent() == Rho.parse("0.6")
    assert second.begin(req("t1")) == StoredAnswer("t1", b"x")
    assert isinstance(second.begin(req("t2")), PendingCharge)
    assert second.spent() == Rho.parse("0.6")  # the pending task is not charged twice


def test_over_cap_is_refused_and_nothing_is_charged(tmp_path: Path, cap: BudgetCap) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", cap)
    ledger.begin(req("t1", "0.6"))
    with pytest.raises(PublicError) as err:
        ledger.begin(req("t2", "0.5"))
    assert err.value.code is ErrorCode.BUDGET_EXCEEDED
    assert "only rho 0.4 left" in err.value.message
    assert ledger.spent() == Rho.parse("0.6")
    # Spending exactly to the cap is allowed: the boundary belongs to the institution.
    assert isinstance(ledger.begin(req("t3", "0.4")), NewCharge)
    assert ledger.remaining() == Rho.zero()


def test_same_task_id_with_another_spec_is_a_conflict(tmp_path: Path, cap: BudgetCap) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", cap)
    ledger.begin(req(digest="d1"))
    ledger.record_answer("run/a", b"x")
    with pytest.raises(PublicError) as err:
        ledger.begin(req(digest="d2"))
    assert err.value.code is ErrorCode.TASK_ID_CONFLICT
    assert ledger.spent() == Rho.parse("0.3")


def test_budget_resets_with_the_period(tmp_path: Path, cap: BudgetCap) -> None:
    clock = Clock(datetime(2025, 12, 31, 23, 0, tzinfo=UTC))
    ledger = Ledger(tmp_path / "l.sqlite", cap, clock=clock)
    ledger.begin(req("t1", "1"))
    with pytest.raises(PublicError):
        ledger.begin(req("t2", "0.1"))
    clock.now = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    assert isinstance(ledger.begin(req("t2", "0.1")), NewCharge)
    assert ledger.spent("2025") == Rho.parse("1")
    assert ledger.spent() == Rho.parse("0.1")


def test_lowering_the_cap_below_spending_leaves_nothing(tmp_path: Path, cap: BudgetCap) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path, cap).begin(req("t1", "0.8"))
    lowered = Ledger(path, BudgetCap(Rho.parse("0.5"), Period.YEAR))
    assert lowered.remaining() == Rho.zero()
    with pytest.raises(PublicError, match="only rho 0 left"):
        lowered.begin(req("t2", "0.01"))


def test_refusals_are_recorded(tmp_path: Path, cap: BudgetCap) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", cap)
    ledger.record_refusal("t9", "coord", "S1", "POLICY_REFUSED", "not allowed")
    [r] = ledger.refusals()
    assert (r.task_id, r.code, r.reason) == ("t9", "POLICY_REFUSED", "not allowed")


def test_a_file_that_is_not_a_ledger_is_a_clear_error(tmp_path: Path, cap: BudgetCap) -> None:
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="cannot open the budget ledger"):
        Ledger(path, cap)
