"""Answering tasks: policy and budget refusals, replays, and what the answer is made of."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.queries import bounded_counts
from privacy.budget import Rho
from protocols.errors import ErrorCode
from protocols.messages import Dimension, ErrorInfo, HistogramAnswer, ReleaseMode, Task
from tests.conftest import OPEN_POLICY, ticket_row
from tests.test_protocol_contract import s1_query


@pytest.fixture
def handler(tmp_path: Path, tickets_file: Callable[..., Path]) -> TaskHandler:
    rows = []
    for i in range(400):
        rows.append(
            ticket_row(
                ticket_id=f"T{i}",
                customer_id=f"C{i % 40}",
                discipline=["toneel", "dans", "film"][i % 3],
                performance_start=f"2024-{i % 12 + 1:02d}-10T20:00:00",
                order_status="paid" if i % 10 else "refunded",
            )
        )
    table = load_ticket_lines(tickets_file(rows))
    ledger = Ledger(tmp_path / "ledger.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
    return TaskHandler(NodeIdentity("inst-01", "theatre"), table, ledger, OPEN_POLICY)


def task(task_id: str = "run/s1", **kw: object) -> Task:
    return Task(task_id, "run", "s1", 60_000, s1_query(**kw))


def test_answer_is_noisy_bounded_counts_and_is_charged(handler: TaskHandler) -> None:
    result = handler.handle(task(), "coord")
    assert isinstance(result.outcome, HistogramAnswer)
    truth = bounded_counts(handler.table, s1_query(), "theatre")
    noise = np.array(result.outcome.values) - truth
    # sigma = 16 / sqrt(0.2) = 35.8; 60 cells all within 6 sigma fails with probability < 1e-7.
    assert result.outcome.noise_scale == pytest.approx(16 / 0.2**0.5, rel=1e-9)
    assert np.all(np.abs(noise) < 6 * result.outcome.noise_scale)
    assert np.any(noise != 0)  # and there is noise at all (P[all 60 zero] < 1e-80)
    assert handler.ledger.spent() == Rho.parse("0.1")
    [entry] = handler.ledger.entries()
    assert (entry.status, entry.requester, entry.mode) == ("answered", "coord", "open")


def test_refunded_tickets_do_not_count(handler: TaskHandler) -> None:
    truth = bounded_counts(handler.table, s1_query(), "theatre")
    assert truth.sum() == 360  # 400 tickets, every tenth refunded; each customer under the bounds


def test_replay_returns_the_stored_answer(handler: TaskHandler) -> None:
    first = handler.handle(task(), "coord")
    second = handler.handle(task(), "coord")
    assert isinstance(first.outcome, HistogramAnswer) and isinstance(
        second.outcome, HistogramAnswer
    )
    assert second.outcome.values == first.outcome.values
    assert second.outcome.replayed and not first.outcome.replayed
    assert handler.ledger.spent() == Rho.parse("0.1")


def test_same_question_under_a_new_id_is_charged_again(handler: TaskHandler) -> None:
    # Re-asking under a fresh task id is a new release: it costs budget, so a coordinator that
    # tries to average noise away runs into the cap.
    for i in range(5):
        handler.handle(task(f"run/s1-{i}", rho=Rho.parse("0.2")), "coord")
    refused = handler.handle(task("run/s1-5", rho=Rho.parse("0.2")), "coord")
    assert isinstance(refused.outcome, ErrorInfo)
    assert refused.outcome.code is ErrorCode.BUDGET_EXCEEDED
    assert handler.ledger.spent() == Rho.parse("1")


def test_policy_refusals_cost_nothing_and_are_recorded(handler: TaskHandler) -> None:
    result = handler.handle(task(mode=ReleaseMode.SECURE, rho=Rho.parse("0.9")), "coord")
    assert isinstance(result.outcome, ErrorInfo)
    assert result.outcome.code is ErrorCode.POLICY_REFUSED
    assert "secure" in result.outcome.message and "at most rho 0.5" in result.outcome.message
    assert handler.ledger.spent() == Rho.zero()
    [refusal] = handler.ledger.refusals()
    assert refusal.code == "POLICY_REFUSED"


def test_conflicting_reuse_of_a_task_id_is_refused(handler: TaskHandler) -> None:
    handler.handle(task(), "coord")
    result = handler.handle(task(rho=Rho.parse("0.2")), "coord")
    assert isinstance(result.outcome, ErrorInfo)
    assert result.outcome.code is ErrorCode.TASK_ID_CONFLICT
    assert handler.ledger.spent() == Rho.parse("0.1")


def test_institution_type_dimension_uses_the_node_itself(handler: TaskHandler) -> None:
    q = s1_query(dimensions=(Dimension("institution_type", ("museum", "theatre")),))
    counts = bounded_counts(handler.table, q, "theatre")
    # 36 customers with paid tickets (C0, C10, C20, C30 only have refunds), each with 10 tickets
    # in the one "theatre" cell, clipped to 8.
    assert counts.tolist() == [0, 36 * 8]
