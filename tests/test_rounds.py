"""Round logic over the in-process transport: deadlines, dropouts, reconnects, too few nodes."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.inprocess import InProcessTransport
from coordinator.runner import RunAborted, RunSettings, run_plan
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from privacy.budget import Rho
from protocols.messages import Task, TaskResult
from protocols.plan import load_plan
from tests.conftest import OPEN_POLICY, ticket_row, write_tickets

PLAN = Path(__file__).resolve().parent.parent / "deploy" / "plans" / "s1-open.toml"


@pytest.fixture
def handlers(tmp_path: Path) -> dict[str, TaskHandler]:
    out = {}
    for n in range(4):
        nid = f"inst-0{n + 1}"
        rows = [
            ticket_row(
                ticket_id=f"T{i}", customer_id=f"C{i % 20}", performance_start="2024-05-01T20:00:00"
            )
            for i in range(100)
        ]
        table = load_ticket_lines(write_tickets(tmp_path / nid / "t.csv", rows))
        ledger = Ledger(tmp_path / nid / "l.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
        out[nid] = TaskHandler(NodeIdentity(nid, "theatre"), table, ledger, OPEN_POLICY)
    return out


def callables(handlers: dict[str, TaskHandler]) -> dict[str, Callable[[Task], TaskResult]]:
    return {nid: functools.partial(h.handle, requester="coord") for nid, h in handlers.items()}


def run(transport: InProcessTransport, timeout_s: float | None = None) -> dict[str, Any]:
    plan = load_plan(PLAN)
    if timeout_s is not None:
        object.__setattr__(plan, "task_timeout_s", timeout_s)
    return asyncio.run(run_plan(plan, transport, RunSettings("coord", 4, 1), lambda _: None))


def test_all_nodes_answer(handlers: dict[str, TaskHandler]) -> None:
    doc = run(InProcessTransport(callables(handlers)))
    [table] = doc["tables"]
    assert table["contributors"] == sorted(handlers)
    assert table["excluded"] == []


def test_a_node_too_slow_for_its_deadline_is_left_out(handlers: dict[str, TaskHandler]) -> None:
    calls = callables(handlers)
    fast = calls["inst-04"]

    def slow(task: Task) -> TaskResult:
        # Twice the deadline, while the others answer in about 0.1 s: 2.5 s leaves a
        # loaded machine room for them, and the slow one is still sure to miss it.
        time.sleep(5.0)
        return fast(task)

    calls["inst-04"] = slow
    doc = run(InProcessTransport(calls), timeout_s=2.5)
    [table] = doc["tables"]
    assert table["contributors"] == ["inst-01", "inst-02", "inst-03"]
    [(excluded)] = table["excluded"]
    assert excluded["institution_id"] == "inst-04"
    assert "did not answer" in excluded["reason"]
    assert table["noise"]["nodes_added"] == 3  # the error bar counts only the noise in the sum


def test_a_node_absent_at_the_start_does_not_take_part(
    handlers: dict[str, TaskHandler],
) -> None:
    transport = InProcessTransport(callables(handlers))
    transport.disconnect("inst-02")

    async def come_back() -> None:
        await asyncio.sleep(0.3)
        transport.reconnect("inst-02")

    async def scenario() -> dict[str, Any]:
        plan = load_plan(PLAN)
        back = asyncio.create_task(come_back())
        doc = await run_plan(plan, transport, RunSettings("coord", 4, 1), lambda _: None)
        await back
        return doc

    # The run starts with the three connected nodes; inst-02 is not a participant.
    doc = asyncio.run(scenario())
    [table] = doc["tables"]
    assert "inst-02" not in table["contributors"]
    assert handlers["inst-02"].ledger.entries() == []


def test_dropout_mid_round_then_reconnect(handlers: dict[str, TaskHandler]) -> None:
    calls = callables(handlers)
    inner = calls["inst-03"]
    attempts: list[str] = []

    def flaky(task: Task) -> TaskResult:
        result = inner(task)  # answered and charged...
        attempts.append(task.task_id)
        if len(attempts) == 1:
            transport.disconnect("inst-03")  # ...but the connection drops before delivery
        return result

    calls["inst-03"] = flaky
    transport = InProcessTransport(calls)

    async def reconnect_later() -> None:
        while not attempts:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        transport.reconnect("inst-03")

    async def scenario() -> dict[str, Any]:
        back = asyncio.create_task(reconnect_later())
        doc = await run_plan(load_plan(PLAN), transport, RunSettings("coord", 4, 1), print)
        await back
        return doc

    doc = asyncio.run(scenario())
    [table] = doc["tables"]
    assert "inst-03" in table["contributors"]
    assert len(attempts) == 2
    assert attempts[0] == attempts[1]  # the same task id, asked again after the reconnect
    [entry] = handlers["inst-03"].ledger.entries()  # charged once; the second was a replay
    assert entry.status == "answered"
    assert handlers["inst-03"].ledger.spent() == Rho.parse("0.1")


def test_too_few_nodes_releases_nothing(handlers: dict[str, TaskHandler]) -> None:
    calls = callables(handlers)
    transport = InProcessTransport({k: calls[k] for k in ("inst-01", "inst-02")})
    with pytest.raises(RunAborted, match="only 2 eligible node"):
        run(transport)
    assert all(h.ledger.entries() == [] for h in handlers.values())


def test_refusals_below_min_nodes_fail_the_analysis(handlers: dict[str, TaskHandler]) -> None:
    # Two nodes whose policy refuses open mode: 2 usable answers < min_nodes 3.
    for nid in ("inst-01", "inst-02"):
        handlers[nid].policy = Policy(allowed_modes=frozenset())
    with pytest.raises(RunAborted, match="only 2 usable answer"):
        run(InProcessTransport(callables(handlers)))
    refusal = handlers["inst-01"].ledger.refusals()[0]
    assert refusal.code == "POLICY_REFUSED"
