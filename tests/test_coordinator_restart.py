"""Kill the coordinator (SIGKILL) in the middle of a secure plan, start it again: the run
completes, and every node's ledger shows each task charged exactly once.

Real processes throughout: five `publiek-node run` and the `publiek-coordinator run` command,
mutual TLS on a fixed loopback port (the nodes reconnect to it by themselves).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from deploy.devcerts import make_dev_pki
from node.ledger import BudgetCap, Ledger, Period
from privacy.budget import Rho
from synthetic import SectorConfig, generate_sector
from tests.federation import write_node_config
from tests.ports import unused_port

PLAN = """
[plan]
id = "restart-test"
mode = "secure"
min_nodes = 4
task_timeout_s = 60
{analyses}
"""
ANALYSIS = """
[[analysis]]
id = "{id}"
statistic = "S1"
measure = "tickets"
dimensions = {dims}
years = [2024, 2024]
max_cells = 8
max_per_cell = 32
rho = "0.1"
"""
ANALYSES = [
    ("a1", '["discipline"]'),
    ("a2", '["discipline", "quarter"]'),
    ("a3", '["quarter"]'),
]


class Coordinator:
    def __init__(self, args: list[str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)

    def wait_for(self, text: str, timeout: float, after: str | None = None) -> None:
        """Wait for a line containing ``text`` (if given, after the first containing ``after``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = list(self.lines)
            if after is not None:
                start = next((i for i, line in enumerate(lines) if after in line), None)
                lines = [] if start is None else lines[start:]
            if any(text in line for line in lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"never saw {text!r}:\n" + "\n".join(self.lines))


def test_killed_coordinator_resumes_and_charges_no_node_twice(tmp_path: Path) -> None:
    sector = generate_sector(SectorConfig(n_institutions=5, seed=8, years=(2024, 2024), scale=0.03))
    sector.write(tmp_path / "sector")
    ids = [i.institution_id for i in sector.institutions]
    pki = make_dev_pki(tmp_path / "pki", ids)
    port = unused_port()
    plan = tmp_path / "plan.toml"
    plan.write_text(
        PLAN.format(analyses="".join(ANALYSIS.format(id=a, dims=d) for a, d in ANALYSES))
    )
    args = [
        "run", str(plan), "--listen", f"127.0.0.1:{port}", "--expect-nodes", "5",
        "--wait-s", "60", "--out", str(tmp_path / "out"),
        "--state", str(tmp_path / "state.sqlite"), "--store", str(tmp_path / "releases.sqlite"),
        "--ca", str(pki.ca), "--cert", str(pki.server.cert), "--key", str(pki.server.key),
    ]  # fmt: skip
    nodes = []
    coordinators = [first := Coordinator(args, tmp_path)]
    try:
        for inst in sector.institutions:
            config = write_node_config(
                tmp_path / "nodes" / inst.institution_id,
                inst.institution_id,
                inst.type,
                tmp_path / "sector" / inst.institution_id / "ticket_line.csv",
                port,
                pki,
                modes=("secure",),
            )
            with (config.parent / "node.log").open("w") as log:
                nodes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "node", "run", "--config", str(config)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        # Kill it in the middle of the second analysis, after the nodes sent their masked
        # inputs (they are charged) and before anything of that analysis was released.
        first.wait_for("analysis 2/3", 120)
        first.wait_for("secure round, masked input: 5/5 answered", 60, after="analysis 2/3")
        # Freeze the nodes first: the round cannot move on without their answers, so the kill
        # lands mid-round however late this process is woken to send it.
        for n in nodes:
            n.send_signal(signal.SIGSTOP)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        for n in nodes:
            n.send_signal(signal.SIGCONT)

        coordinators.append(second := Coordinator(args, tmp_path))
        second.proc.wait(180)
        second.close()
        output = "\n".join(second.lines)
        assert second.proc.returncode == 0, output
        assert "resuming run" in output
        assert "analysis 1/3: a1 done before the restart" in output
        assert "continuing secure round" in output
    finally:
        for p in nodes:
            p.send_signal(signal.SIGTERM)
            p.send_signal(signal.SIGCONT)  # if a failure left it frozen
        for p in nodes:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for c in coordinators:
            c.close()

    release = json.loads((tmp_path / "out" / "release.json").read_text())
    assert [t["analysis_id"] for t in release["tables"]] == ["a1", "a2", "a3"]
    assert all(t["contributors"] == ids for t in release["tables"])
    for nid in ids:
        ledger = Ledger(
            tmp_path / "nodes" / nid / "ledger.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR)
        )
        entries = ledger.entries()
        assert sorted(e.analysis_id for e in entries) == ["a1", "a2", "a3"], nid  # once each
        assert all(e.status == "answered" for e in entries)
        assert ledger.spent() == Rho.parse("0.3")
        ledger.close()
