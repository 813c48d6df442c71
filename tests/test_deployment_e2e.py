"""A real deployment on one machine: the sector CA, enrolment, a coordinator and five nodes as
separate processes over mutual TLS, a revoked node and one with another CA's certificate, and a
node killed and restarted in the middle of the plan.

Every step goes through the commands an operator types: ``publiek-coordinator ca init``,
``publiek-node init --institution-id``, ``publiek-coordinator ca sign``, ``ca revoke``, then
``publiek-coordinator run --crl ... --log-format json`` and ``publiek-node run --log-format json``
(the logs are read as the structured records a log pipeline would get), ``publiek-node health``
and ``publiek-coordinator status``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.cli import main as coordinator_main
from node.cli import main as node_main
from node.ledger import BudgetCap, Ledger, Period
from privacy.budget import Rho
from synthetic import SectorConfig, generate_sector
from tests.federation import NODE_CONFIG
from tests.ports import unused_port

PLAN = """
[plan]
id = "e2e-deployment"
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
ANALYSES = [("a1", '["discipline"]'), ("a2", '["quarter"]'), ("a3", '["discipline", "quarter"]')]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
GRPC_CORE_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


class Process:
    """A command whose output (one JSON log record a line, or text) is collected as it comes."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout, self.log.open("a") as fh:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                fh.write(line)

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"message": line, "unstructured": True})
        return out

    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in list(self.lines)):
                return
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"never saw {text!r} in {self.log}:\n{self.text()[-4000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._reader.join(10)
        return code


def _enrol(site: Path, ca: Path, institution: str, bundle: Path | None = None) -> str:
    """node init + ca sign, as an institution and the sector body do; returns the [tls] table."""
    certs = site / "certs"
    key, csr = certs / "node.key", certs / "node.csr"
    argv = ["init", "--institution-id", institution, "--key-out", str(key), "--csr-out", str(csr)]
    assert node_main(argv) == 0
    assert coordinator_main(["ca", "sign", str(ca), str(csr)]) == 0
    trusted = bundle or ca / "ca.pem"
    return f'[tls]\nca = "{trusted}"\ncert = "{csr.with_suffix(".pem")}"\nkey = "{key}"'


def _node_config(
    site: Path, institution: str, kind: str, tickets: Path, port: int, tls: str
) -> Path:
    site.mkdir(parents=True, exist_ok=True)
    path = site / "node.toml"
    path.write_text(
        NODE_CONFIG.format(
            id=institution, type=kind, tickets=tickets, country="NL", port=port, tls=tls,
            cap="1.0", modes='["secure"]',
        )
    )  # fmt: skip
    return path


@dataclass(frozen=True)
class Health:
    code: int
    output: str
    elapsed: float


def _health(config: Path) -> Health:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "node", "health", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return Health(done.returncode, done.stdout + done.stderr, time.monotonic() - started)


def _node(config: Path, *extra: str) -> Process:
    argv = [sys.executable, "-m", "node", "run", "--config", str(config), "--log-format", "json"]
    return Process([*argv, *extra], config.parent / "node.log")


def test_a_deployment_with_revocation_a_foreign_ca_and_a_node_restart(
    tmp_path: Path, capsys: Any
) -> None:
    sector = generate_sector(
        SectorConfig(n_institutions=6, seed=11, years=(2024, 2024), scale=0.03)
    )
    sector.write(tmp_path / "sector")
    insts = {i.institution_id: i for i in sector.institutions}
    good, revoked_id = sorted(insts)[:5], sorted(insts)[5]
    port = unused_port()
    ca = tmp_path / "ca"

    # The sector body makes its CA; every institution enrols; one is revoked again.
    assert coordinator_main(["ca", "init", str(ca), "--host", "localhost"]) == 0
    configs = {}
    for nid in [*good, revoked_id]:
        site = tmp_path / "sites" / nid
        tickets = tmp_path / "sector" / nid / "ticket_line.csv"
        configs[nid] = _node_config(
            site, nid, insts[nid].type, tickets, port, _enrol(site, ca, nid)
        )
    argv = ["ca", "revoke", str(ca), "--institution", revoked_id, "--reason", "key_compromise"]
    assert coordinator_main(argv) == 0
    # An institution enrolled with another sector's CA. Its ca.pem lists both CAs, so its own
    # check passes and it does dial: the coordinator must refuse it.
    other = tmp_path / "other-ca"
    assert coordinator_main(["ca", "init", str(other), "--name", "another sector CA"]) == 0
    bundle = tmp_path / "both-cas.pem"
    bundle.write_bytes((ca / "ca.pem").read_bytes() + (other / "ca.pem").read_bytes())
    foreign_site = tmp_path / "sites" / "foreign"
    foreign_tls = _enrol(foreign_site, other, good[0], bundle=bundle)
    foreign_config = _node_config(
        foreign_site, good[0], insts[good[0]].type,
        tmp_path / "sector" / good[0] / "ticket_line.csv", port, foreign_tls,
    )  # fmt: skip
    # ...and one that trusts only the sector CA stops before dialling, saying why.
    strict_site = tmp_path / "sites" / "foreign-strict"
    strict_tls = foreign_tls.replace(str(bundle), str(ca / "ca.pem"))
    strict_config = _node_config(
        strict_site, good[0], "theatre", tmp_path / "sector" / good[0] / "ticket_line.csv",
        port, strict_tls,
    )  # fmt: skip
    capsys.readouterr()

    plan = tmp_path / "plan.toml"
    plan.write_text(
        PLAN.format(analyses="".join(ANALYSIS.format(id=a, dims=d) for a, d in ANALYSES))
    )
    state, store = tmp_path / "state.sqlite", tmp_path / "releases.sqlite"
    coordinator = Process(
        [
            sys.executable, "-m", "coordinator", "run", str(plan),
            "--listen", f"127.0.0.1:{port}", "--expect-nodes", "5", "--wait-s", "60",
            "--out", str(tmp_path / "out"), "--state", str(state), "--store", str(store),
            "--ca", str(ca / "ca.pem"), "--cert", str(ca / "coordinator.pem"),
            "--key", str(ca / "coordinator.key"), "--crl", str(ca / "crl.pem"),
            "--log-format", "json",
        ],
        tmp_path / "coordinator.log",
    )  # fmt: skip
    processes = [coordinator]
    try:
        coordinator.wait_for("listening on", 30)
        revoked = _node(configs[revoked_id], "--max-attempts", "3")
        foreign = _node(foreign_config, "--max-attempts", "2")
        strict = _node(strict_config)
        processes += [revoked, foreign, strict]

        # A node restarted in the middle of the plan: it connects first and is frozen
        # (SIGSTOP), so the plan's first analysis waits for it; then it is killed and started
        # again, and must rejoin that same analysis.
        restarted = good[2]
        nodes = {restarted: _node(configs[restarted])}
        coordinator.wait_for(f"node {restarted} connected", 60)
        nodes[restarted].proc.send_signal(signal.SIGSTOP)
        nodes.update({nid: _node(configs[nid]) for nid in good if nid != restarted})
        processes += nodes.values()
        coordinator.wait_for("analysis 1/3", 60)
        # Meanwhile the others answer the setup stage (the frozen node cannot), and a health
        # check of a connected node passes.
        healthy = _health(configs[good[0]])
        time.sleep(max(0.0, 1.0 - healthy.elapsed))
        nodes[restarted].proc.send_signal(signal.SIGKILL)
        nodes[restarted].proc.wait(10)
        nodes[restarted] = again = _node(configs[restarted])
        processes.append(again)
        assert coordinator.proc.wait(120) == 0, coordinator.text()[-4000:]

        assert revoked.proc.wait(60) == 3  # incompatible: needs a person, not retried
        assert foreign.proc.wait(60) == 4  # gave up after its attempts
        assert strict.proc.wait(60) == 2  # a configuration problem, found before dialling
        unhealthy = _health(configs[good[0]])  # the coordinator has stopped
    finally:
        codes = [p.stop() for p in processes]
    assert codes[0] == 0

    records = coordinator.records()
    # Every line is a JSON record, except what gRPC's C core prints itself (absl format): its
    # TLS layer refuses the foreign certificate, and the Python server never sees that session.
    core = [r["message"] for r in records if r.get("unstructured")]
    assert all(GRPC_CORE_LINE.match(line) for line in core), core
    assert any("Handshake failed" in line and "CERTIFICATE_VERIFY_FAILED" in line for line in core)
    rejected = [r for r in records if r.get("event") == "node_rejected"]
    assert {r["node"] for r in rejected} == {revoked_id}
    assert all(
        "was revoked on" in r["message"] and r["code"] == "IDENTITY_MISMATCH" for r in rejected
    )
    assert "reason: key_compromise" in rejected[0]["message"]
    connects = [r["node"] for r in records if r.get("event") == "node_connected"]
    assert sorted(set(connects)) == sorted(good)  # never the revoked or the foreign node
    assert connects.count(restarted) == 2  # it came back

    said = revoked.text()
    assert "the coordinator refused this node: IDENTITY_MISMATCH" in said
    assert "was revoked on" in said and "Traceback" not in said
    foreign_said = [r["message"] for r in foreign.records() if r.get("event") == "tls_refused"]
    assert foreign_said and "does not accept this node's certificate" in foreign_said[0]
    assert "was not issued by the sector CA" in strict.text()
    assert all(r.get("institution") == good[0] for r in foreign.records() if "level" in r)

    release = json.loads((tmp_path / "out" / "release.json").read_text())
    assert [t["analysis_id"] for t in release["tables"]] == ["a1", "a2", "a3"]
    assert release["failed"] == []
    assert {p["institution_id"] for p in release["participants"]} == set(good)
    # The restarted node answered the very analysis it was killed in, and the rest.
    assert all(t["contributors"] == good for t in release["tables"])
    for nid in good:  # no task charged twice, however the restart fell
        ledger = Ledger(
            configs[nid].parent / "ledger.sqlite", BudgetCap(Rho.parse("1"), Period.YEAR)
        )
        analyses = [e.analysis_id for e in ledger.entries()]
        ledger.close()
        assert sorted(analyses) == ["a1", "a2", "a3"], nid  # each once, the restart included

    assert healthy.code == 0, healthy.output  # asked while the node was connected
    assert f"{good[0]}: connected" in healthy.output
    assert unhealthy.code == 1 and f"{good[0]}: disconnected" in unhealthy.output
    assert coordinator_main(["status", "--state", str(state), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {n["institution_id"] for n in status["nodes"]} == set(good)
    assert all(n["software_version"] and n["last_seen"] > 0 for n in status["nodes"])
    assert [r["shown_status"] for r in status["runs"]] == ["released"]
