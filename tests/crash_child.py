"""A node process that answers one task and kills itself (SIGKILL) at a chosen point.

    python -m tests.crash_child DATA LEDGER POINT OUT

POINT is one of: in_charge (inside the charging transaction, before COMMIT), after_charge,
after_noise (answer computed, not stored), after_store (stored, not sent), after_send (written
to OUT, the stand-in for the wire), none. Used by tests/test_ledger_crash.py.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from privacy.budget import Rho
from privacy.mechanisms import GaussianHistogram
from protocols.messages import HistogramAnswer, Task
from tests.conftest import OPEN_POLICY
from tests.test_protocol_contract import s1_query

TASK = Task("run/crash", "run", "crash", 60_000, s1_query())


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(data: str, ledger_path: str, point: str, out: str) -> int:
    ledger = Ledger(Path(ledger_path), BudgetCap(Rho.parse("1"), Period.TOTAL))
    handler = TaskHandler(
        NodeIdentity("inst-01", "theatre"), load_ticket_lines(Path(data)), ledger, OPEN_POLICY
    )
    orig_begin, orig_store = ledger.begin, ledger.record_answer

    if point == "in_charge":
        seen_insert = False

        def trace(sql: str) -> None:
            # sqlite calls this as each statement starts: the charge row is written, COMMIT is next.
            nonlocal seen_insert
            seen_insert = seen_insert or sql.startswith("INSERT INTO charges")
            if seen_insert and sql == "COMMIT":
                die()

        ledger._db.set_trace_callback(trace)
    elif point == "after_charge":

        def begin(req: Any, run_cap: Any = None) -> Any:
            orig_begin(req, run_cap)
            die()

        ledger.begin = begin  # type: ignore[method-assign]
    elif point == "after_noise":
        orig_release = GaussianHistogram.release

        def release(self: GaussianHistogram, counts: Any) -> Any:
            orig_release(self, counts)
            die()

        GaussianHistogram.release = release  # type: ignore[method-assign,assignment]
    elif point == "after_store":

        def record_answer(task_id: str, answer: bytes) -> bytes:
            orig_store(task_id, answer)
            die()
            return answer

        ledger.record_answer = record_answer  # type: ignore[method-assign]

    result = handler.handle(TASK, "coord")
    assert isinstance(result.outcome, HistogramAnswer)
    Path(out).write_text(json.dumps(list(result.outcome.values)))
    if point == "after_send":
        die()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:5]))
