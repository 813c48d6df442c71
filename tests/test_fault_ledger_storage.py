"""Fault matrix, rows "the ledger's disk full" and "the ledger read-only".

A node that cannot write its budget ledger must not answer: an answer may only leave after its
charge is on disk. Both faults are made real in a child process (the limits would hit pytest's
own files otherwise):

- disk full: the file-size limit (RLIMIT_FSIZE) is set to the ledger's current size, so the
  next write fails in the kernel as on a full disk (EFBIG; SIGXFSZ ignored, as a service would);
- read-only: the ledger belongs to another user and the node runs as ``nobody`` (as root), or
  the files are mode 0444 (otherwise): SQLite cannot write and says so.

Then the node answers with a clear error, its ledger is exactly as before, and once the fault is
gone the same task is answered and charged once.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.ledger import BudgetCap, Ledger, Period
from privacy.budget import Rho
from tests.conftest import ticket_row, write_tickets

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, signal, sys
from pathlib import Path
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, LedgerError, Period
from node.policy import Policy
from privacy.budget import Rho
from protocols.messages import ErrorInfo, ReleaseMode
from tests.test_fault_ledger_storage import task

folder, fault = Path(sys.argv[1]), sys.argv[2]
try:
    ledger = Ledger(folder / "ledger.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
except LedgerError as err:
    print(json.dumps({"open_error": str(err)}))
    raise SystemExit(0)
handler = TaskHandler(
    NodeIdentity("inst-01", "theatre"),
    load_ticket_lines(folder / "tickets.csv"),
    ledger,
    Policy(allowed_modes=frozenset(ReleaseMode)),
)
if fault != "readonly":
    first = handler.handle(task("t1"), "coord")
    assert not isinstance(first.outcome, ErrorInfo), first
if fault == "full":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    size = max(p.stat().st_size for p in folder.glob("ledger.sqlite*"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
second = handler.handle(task("t2"), "coord")
out = second.outcome
print(json.dumps({"code": out.code.value, "message": out.message} if isinstance(out, ErrorInfo)
                 else {"answered": True}))
"""


def task(task_id: str) -> object:
    from privacy.bounding import ContributionBound
    from protocols.messages import Dimension, HistogramQuery, ReleaseMode, Task

    query = HistogramQuery(
        statistic="S1",
        measure="tickets",
        dimensions=(Dimension("discipline", ("toneel", "dans")),),
        bound=ContributionBound(2, 4),
        rho=Rho.parse("0.1"),
        mode=ReleaseMode.OPEN,
        years=(2024, 2024),
    )
    return Task(task_id, "run-1", "a1", 30_000, query)


@pytest.fixture
def node_folder() -> Iterator[Path]:
    # Under /tmp itself, not pytest's private folder, so that ``nobody`` can reach it.
    folder = Path(tempfile.mkdtemp(prefix="publiek-ledger-fault-"))
    folder.chmod(0o755)
    rows = [
        ticket_row(ticket_id=f"T{i}", customer_id=f"C{i % 7}", discipline=("toneel", "dans")[i % 2])
        for i in range(40)
    ]
    write_tickets(folder / "tickets.csv", rows)
    (folder / "tickets.csv").chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_child(folder: Path, fault: str) -> dict[str, object]:
    command = [sys.executable, "-c", CHILD, str(folder), fault]
    if fault == "readonly" and os.geteuid() == 0:
        # Root writes through file modes; without these capabilities it obeys them, like the
        # service user a node should run as.
        drop = "-dac_override,-dac_read_search,-fowner"
        command = ["setpriv", "--bounding-set", drop, "--", *command]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["log"] = proc.stderr
    return result


def entries(folder: Path) -> list[tuple[str, str, str]]:
    ledger = Ledger(folder / "ledger.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR))
    try:
        return [(e.task_id, e.status, str(e.rho)) for e in ledger.entries()]
    finally:
        ledger.close()


def test_a_full_disk_stops_the_answer_and_loses_no_charge(node_folder: Path) -> None:
    result = run_child(node_folder, "full")
    assert result["code"] == "DATA_UNAVAILABLE"
    assert "cannot record charges in its budget ledger" in str(result["message"])
    assert str(node_folder) not in str(result["message"])  # the path stays in the local log
    log = str(result["log"])
    assert "cannot be written" in log and "disk full" in log
    assert "Traceback" not in log
    # Only the first task is in the ledger: the second was neither charged nor answered.
    assert entries(node_folder) == [("t1", "answered", "0.1")]
    # With room again, the refused task is answered and charged once.
    again = run_child(node_folder, "none")
    assert again == {"answered": True, "log": again["log"]}
    assert [(t, s) for t, s, _ in entries(node_folder)] == [("t1", "answered"), ("t2", "answered")]


def test_a_read_only_ledger_answers_nothing_and_is_left_as_it_was(node_folder: Path) -> None:
    run_child(node_folder, "none")  # t1 and t2 answered while the ledger was writable
    before = entries(node_folder)
    files = sorted(node_folder.glob("ledger.sqlite*"))
    snapshot = {p.name: p.read_bytes() for p in files}
    for p in files:
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    node_folder.chmod(0o555)
    try:
        result = run_child(node_folder, "readonly")
    finally:
        node_folder.chmod(0o755)
    # Either the ledger cannot even be opened (the node does not start), or the charge fails
    # and the task is refused; never an answer.
    if "open_error" in result:
        assert "cannot open the budget ledger" in str(result["open_error"])
        assert "writable by the node's user" in str(result["open_error"])
    else:
        assert result["code"] == "DATA_UNAVAILABLE", result
        assert "read-only" in str(result["log"]) and "Traceback" not in str(result["log"])
    assert {p.name: p.read_bytes() for p in files if p.exists()} == snapshot
    assert entries(node_folder) == before
