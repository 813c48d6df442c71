"""How many nodes can one coordinator take through a secure plan at once?

Starts the real coordinator (``publiek-coordinator run``, mutual TLS on loopback, its own state
file and release store) and N simulated nodes: real ``NodeAgent`` gRPC clients with real task
handlers, ledgers (one SQLite file each), policies and signing keys, many of them sharing an
event loop in each of a few worker processes (one process per node would need N Python
interpreters; an institution runs one). The nodes' data cycles over the institutions of a small
synthetic sector. The plan is the demo's S1 table (60 cells) in secure mode with n_min at 95% of
N, so the round really is N-wide SecAgg+.

Measured: ``nodes`` that contributed to the released table, ``plan_s`` (from the last node
connecting, when the run can start, to the release, from the run state file), ``connect_s``
(from the node processes starting, data loading included, to the last node connecting) and
``coordinator_peak_rss_mb`` (the coordinator process's peak resident memory, from the kernel's
accounting when it exits).

    python -m benchmarks.load --quick     # 200 nodes, under a minute
    python -m benchmarks.load             # 200, 500 and 1,000 nodes

Target (issue 10): 200 nodes in the quick run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import last_line, write_result

REPO = Path(__file__).resolve().parent.parent
QUICK_NODES = (200,)
FULL_NODES = (200, 500, 1000)
WORKERS = 4  # node processes; each runs N / WORKERS agents in one event loop
SOURCES = 20  # synthetic institutions whose data the simulated nodes cycle over

PLAN = """
[plan]
id = "load-{n}"
title = "Load: tickets by discipline and quarter, {n} nodes"
mode = "secure"
min_nodes = {n_min}
task_timeout_s = 600

[[analysis]]
id = "s1"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline", "quarter"]
years = [2024, 2024]
max_cells = 8
max_per_cell = 32
rho = "0.1"
"""


def ids_for(n: int) -> list[str]:
    return [f"node-{i:04d}" for i in range(n)]


def run_nodes(work: Path, ids: list[str], port: int) -> None:
    """Worker process: one NodeAgent per id, all in this event loop, until SIGTERM."""
    from node.agent import AgentSettings, NodeAgent
    from node.data import load_ticket_lines
    from node.handler import NodeIdentity, TaskHandler
    from node.ledger import BudgetCap, Ledger, Period
    from node.policy import Policy
    from node.tls import TlsFiles
    from privacy.budget import Rho
    from protocols.identity import PeerVerifier, Signer

    pki = work / "pki"  # as make_dev_pki wrote it in prepare()
    tables = {}
    agents = []
    verifier = PeerVerifier.from_file(pki / "ca.pem")
    for i, nid in enumerate(ids):
        source = int(nid.split("-")[1]) % SOURCES
        if source not in tables:
            tables[source] = load_ticket_lines(work / "sector" / f"src-{source}.csv")
        cert, key = pki / f"{nid}.pem", pki / f"{nid}.key"
        folder = work / "nodes" / nid
        folder.mkdir(parents=True, exist_ok=True)
        handler = TaskHandler(
            NodeIdentity(nid, ("theatre", "museum", "concertzaal")[i % 3]),
            tables[source],
            Ledger(folder / "ledger.sqlite", BudgetCap(Rho.parse("10"), Period.YEAR)),
            Policy(),
            signer=Signer.from_files(nid, cert, key),
            verifier=verifier,
        )
        tls = TlsFiles(ca=pki / "ca.pem", cert=cert, key=key)
        settings = AgentSettings(f"127.0.0.1:{port}", tls, server_name="localhost")
        agents.append(NodeAgent(settings, handler))

    async def main() -> None:
        def stop_all() -> None:
            for agent in agents:
                agent.stop()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_all)
        await asyncio.gather(*(a.run() for a in agents))

    asyncio.run(main())


def prepare(work: Path, n: int) -> None:
    """A small synthetic sector (data for SOURCES institutions) and certificates for n nodes."""
    from deploy.devcerts import make_dev_pki
    from synthetic import SectorConfig, generate_sector
    from synthetic.schema import TICKET_LINE_COLUMNS, write_ticket_line_csv

    (work / "sector").mkdir(parents=True, exist_ok=True)
    if not (work / "sector" / f"src-{SOURCES - 1}.csv").exists():
        sector = generate_sector(
            SectorConfig(n_institutions=SOURCES, seed=11, years=(2024, 2024), scale=0.01)
        )
        for i, inst in enumerate(sector.institutions):
            rows = sector.truth.tickets.filter(
                sector.truth.tickets["institution_id"] == inst.institution_id
            )
            write_ticket_line_csv(
                rows.select(TICKET_LINE_COLUMNS), work / "sector" / f"src-{i}.csv"
            )
    make_dev_pki(work / "pki", ids_for(n))


def _timeline(state: Path) -> tuple[float, float]:
    """(the last node connected, the run released) from the run state file."""
    with sqlite3.connect(state) as db:
        (last_connected,) = db.execute("SELECT max(connected_at) FROM nodes").fetchone()
        row = db.execute("SELECT updated_at FROM runs WHERE status = 'released'").fetchone()
    if row is None or last_connected is None:
        raise RuntimeError(f"no released run in {state}")
    return float(last_connected), float(row[0])


def measure(work: Path, n: int) -> dict[str, Any]:
    folder = work / f"n{n}"
    folder.mkdir()
    plan = folder / "plan.toml"
    plan.write_text(PLAN.format(n=n, n_min=max(2, n * 95 // 100)))
    pki = work / "pki"
    port_file = folder / "port"
    exe = Path(sys.executable).parent / "publiek-coordinator"
    log = (folder / "coordinator.log").open("w")
    coordinator = subprocess.Popen(
        [
            str(exe), "run", str(plan), "--listen", "127.0.0.1:0", "--port-file", str(port_file),
            "--ca", str(pki / "ca.pem"), "--cert", str(pki / "coordinator.pem"),
            "--key", str(pki / "coordinator.key"), "--expect-nodes", str(n), "--wait-s", "600",
            "--out", str(folder / "release"), "--state", str(folder / "state.sqlite"),
            "--store", str(folder / "releases.sqlite"), "--log-level", "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    logs = [log]
    try:
        while not port_file.exists() or not port_file.read_text().strip():
            if coordinator.poll() is not None:
                raise RuntimeError(
                    f"coordinator exited: {(folder / 'coordinator.log').read_text()}"
                )
            time.sleep(0.05)
        port = int(port_file.read_text())
        started = time.time()
        ids = ids_for(n)
        for w in range(WORKERS):
            mine = ids[w::WORKERS]
            logs.append((folder / f"nodes-{w}.log").open("w"))
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.load", "--child", str(work), str(port),
                     *mine],
                    stdout=logs[-1],
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        # wait4 gives the coordinator's own resource usage, peak RSS included.
        _, status, usage = os.wait4(coordinator.pid, 0)
        coordinator.returncode = os.waitstatus_to_exitcode(status)
    finally:
        for p in workers:
            p.send_signal(signal.SIGTERM)
        for p in workers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
        for f in logs:
            f.close()
    if coordinator.returncode != 0:
        tail = (folder / "coordinator.log").read_text()[-2000:]
        raise RuntimeError(f"coordinator exited with {coordinator.returncode}: {tail}")
    release = json.loads((folder / "release" / "release.json").read_text())
    [table] = release["tables"]
    all_connected, released = _timeline(folder / "state.sqlite")
    return {
        "nodes": len(table["contributors"]),
        "plan_s": released - all_connected,
        "connect_s": all_connected - started,
        "coordinator_peak_rss_mb": usage.ru_maxrss / 1024.0,
    }


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--child"]:
        run_nodes(Path(args_in[1]), args_in[3:], int(args_in[2]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="200 nodes")
    parser.add_argument("--nodes", type=int, nargs="+", help="override the node counts")
    args = parser.parse_args(args_in)
    counts = tuple(args.nodes) if args.nodes else QUICK_NODES if args.quick else FULL_NODES
    per_n: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="publiek-load-") as tmp:
        work = Path(tmp)
        prepare(work, max(counts))
        for n in counts:
            per_n[n] = measure(work, n)
            print(f"{n} nodes: {per_n[n]}", flush=True)
    largest = per_n[max(counts)]
    result: dict[str, Any] = {
        "nodes": largest["nodes"],
        "plan_s": largest["plan_s"],
        "connect_s": largest["connect_s"],
        "coordinator_peak_rss_mb": largest["coordinator_peak_rss_mb"],
        "by_nodes": {str(n): r for n, r in per_n.items()},
    }
    config = {"quick": args.quick, "node_counts": list(counts), "worker_processes": WORKERS}
    write_result("load", config, result)
    print(last_line(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
