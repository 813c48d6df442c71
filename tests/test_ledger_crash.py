"""Kill a node with SIGKILL at every point of charging and answering, restart it, and check that
the ledger never under-counts and that an answer that may have left is the one replayed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.ledger import BudgetCap, Ledger, Period
from privacy.budget import Rho
from protocols.messages import HistogramAnswer, TaskResult
from protocols.serde import decode_node_message
from tests.conftest import ticket_row, write_tickets

POINTS = ["in_charge", "after_charge", "after_noise", "after_store", "after_send"]


def child(data: Path, ledger: Path, point: str, out: Path) -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.crash_child", str(data), str(ledger), point, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode


def stored_values(path: Path) -> list[int] | None:
    ledger = Ledger(path, BudgetCap(Rho.parse("1"), Period.TOTAL))
    try:
        row = ledger._db.execute("SELECT answer FROM charges WHERE task_id='run/crash'").fetchone()
    finally:
        ledger.close()
    if row is None or row[0] is None:
        return None
    result = decode_node_message(bytes(row[0]))
    assert isinstance(result, TaskResult) and isinstance(result.outcome, HistogramAnswer)
    return list(result.outcome.values)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [
        ticket_row(
            ticket_id=f"T{i}", customer_id=f"C{i % 30}", discipline=["toneel", "dans"][i % 2]
        )
        for i in range(200)
    ]
    return write_tickets(tmp_path_factory.mktemp("data") / "t.csv", rows)


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_then_restart(point: str, data: Path, tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.sqlite"
    sent = tmp_path / "sent.json"
    assert child(data, ledger_path, point, sent) == -signal.SIGKILL

    before = Ledger(ledger_path, BudgetCap(Rho.parse("1"), Period.TOTAL))
    spent_after_crash = before.spent()
    before.close()
    # Never under-counted: once the charge could have committed, it is there.
    expected = Rho.zero() if point == "in_charge" else Rho.parse("0.1")
    assert spent_after_crash == expected
    stored = stored_values(ledger_path)
    assert (stored is not None) == (point in ("after_store", "after_send"))
    left = json.loads(sent.read_text()) if sent.exists() else None
    assert (left is not None) == (point == "after_send")

    # Restart: the same task again.
    replay = tmp_path / "replay.json"
    assert child(data, ledger_path, "none", replay) == 0
    answer = json.loads(replay.read_text())
    after = Ledger(ledger_path, BudgetCap(Rho.parse("1"), Period.TOTAL))
    [entry] = after.entries()
    assert (entry.status, after.spent()) == ("answered", Rho.parse("0.1"))  # charged once
    after.close()
    if stored is not None:
        assert answer == stored  # what may have left is what is sent again, never fresh noise
    if left is not None:
        assert answer == left
