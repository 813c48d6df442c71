"""The load benchmark's harness works end to end at a small size (the benchmark itself runs
200+ nodes; here 12 simulated nodes in worker processes against the real coordinator CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import load
from node.ledger import BudgetCap, Ledger, Period
from privacy.budget import Rho


@pytest.mark.slow
def test_simulated_nodes_complete_a_secure_plan(tmp_path: Path) -> None:
    load.prepare(tmp_path, 12)
    result = load.measure(tmp_path, 12)
    assert result["nodes"] == 12  # every simulated node's input is in the released sum
    assert 0 < result["plan_s"] < 120
    assert result["coordinator_peak_rss_mb"] > 10
    # Each node's own ledger charged the one analysis once.
    ledgers = sorted((tmp_path / "nodes").glob("*/ledger.sqlite"))
    assert len(ledgers) == 12
    for path in ledgers:
        ledger = Ledger(path, BudgetCap(Rho.parse("10"), Period.YEAR))
        [entry] = ledger.entries()
        assert entry.status == "answered" and ledger.spent() == Rho.parse("0.1")
