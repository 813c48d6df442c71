"""Secure aggregation: accuracy against central DP, speed against Flower, a round over gRPC.

    python -m benchmarks.secagg --quick

Measured side by side in one run, and printed as one JSON object on the last line:

- ``secure_over_central_rmse``: RMSE of secure-mode releases (the real plan runner, node
  handlers, ledgers and SecAgg+ rounds, in process) against the contribution-bounded truth,
  divided by the RMSE of ideal central DP (a trusted curator adding noise once to the pooled,
  equally bounded counts) at the same rho, with n_min = n. Target <= 1.05.
- ``open_over_central_rmse``: the same for open mode (each node adds the full noise): ~sqrt(n).
- ``speedup_vs_flower``: Flower 1.41's SecAgg+ workflow driven in-process (a Grid calling the
  ClientApp directly, no Ray: ``benchmarks/flower_baseline.py``) divided by our in-process round,
  same n = 100, vector length and neighbour count. Target >= 10.
- ``grpc_round_s_50``: protocol time of one secure round with 50 node processes over mutual-TLS
  gRPC on loopback (the coordinator's round, from setup to unmasked sum). Target < 1 s.

Against the bounded truth, all modes share the bounding bias, so the ratios isolate the noise.
The full run adds n up to 1,000 in process and vector lengths 100 and 10,000, with bytes sent
per node.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import last_line, write_result
from coordinator.inprocess import InProcessTransport
from coordinator.runner import RunSettings, run_plan
from coordinator.secure import SecureParams, run_secure_round
from deploy.devcerts import make_dev_pki
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.queries import bounded_counts
from node.secure import Contribution, SecAggClient
from privacy.budget import Rho
from privacy.noise import DiscreteGaussian
from protocols.identity import PeerVerifier, Signer
from protocols.messages import ReleaseMode, Task, TaskResult
from protocols.plan import parse_plan
from protocols.secagg import SecAggRequest, SecAggResponse, SecAggSetup
from synthetic import SectorConfig, generate_sector
from tests.federation import write_node_config
from tests.secagg_harness import query as harness_query

REPO = Path(__file__).resolve().parent.parent

ACCURACY_PLAN = """
[plan]
id = "bench-accuracy"
mode = "{mode}"
min_nodes = {n}
task_timeout_s = 120

[[analysis]]
id = "s1_region"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline", "quarter", "region"]
years = [2024, 2024]
max_cells = 8
max_per_cell = 32
rho = "0.1"
"""


def _rmse(errors: list[np.ndarray]) -> float:
    e = np.concatenate(errors).astype(np.float64)
    return math.sqrt(float(np.mean(e**2)))


def accuracy(n: int, reps: int, work: Path) -> dict[str, float]:
    """RMSE of secure, open and central releases of S1 by discipline x quarter x region."""
    sector = generate_sector(SectorConfig(n_institutions=n, seed=3, years=(2024, 2024), scale=0.1))
    sector.write(work / "sector")
    ids = [i.institution_id for i in sector.institutions]
    pki = make_dev_pki(work / "pki", ids)
    handlers: dict[str, TaskHandler] = {}
    for inst in sector.institutions:
        nid = inst.institution_id
        table = load_ticket_lines(work / "sector" / nid / "ticket_line.csv")
        cap = BudgetCap(Rho.parse("1000"), Period.TOTAL)
        ledger = Ledger(work / "ledgers" / f"{nid}.sqlite", cap)
        handlers[nid] = TaskHandler(
            NodeIdentity(nid, inst.type),
            table,
            ledger,
            Policy(max_rho_per_task=Rho.parse("1"), allowed_modes=frozenset(ReleaseMode)),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
        )
    transport = InProcessTransport(
        {nid: functools.partial(h.handle, requester="bench") for nid, h in handlers.items()}
    )
    plans = {mode: parse_plan(ACCURACY_PLAN.format(mode=mode, n=n)) for mode in ("secure", "open")}
    q = plans["secure"].analyses[0].query
    truth = sum(
        bounded_counts(handlers[i].table, q, handlers[i].identity.institution_type) for i in ids
    )
    assert isinstance(truth, np.ndarray)
    errors: dict[str, list[np.ndarray]] = {"secure": [], "open": [], "central": []}
    central = DiscreteGaussian.for_budget(q.bound.l2_sensitivity, q.rho)
    for _ in range(reps):
        for mode, plan in plans.items():
            doc = asyncio.run(run_plan(plan, transport, RunSettings("bench", n, 1), lambda _: None))
            noisy = np.array([c["noisy_sum"] for c in doc["tables"][0]["cells"]])
            errors[mode].append(noisy - truth)
        errors["central"].append(central.sample(truth) - truth)
    central_rmse = _rmse(errors["central"])
    return {
        "secure_over_central_rmse": _rmse(errors["secure"]) / central_rmse,
        "open_over_central_rmse": _rmse(errors["open"]) / central_rmse,
        "accuracy_cells": float(truth.size),
        "accuracy_reps": float(reps),
        "accuracy_nodes": float(n),
    }


@dataclasses.dataclass
class _Fed:
    transport: InProcessTransport
    ids: list[str]
    clients: dict[str, SecAggClient]
    certificates: dict[str, bytes]

    def warm_certificate_caches(self) -> None:
        """What a long-running node has: every peer's certificate checked against the CA once.

        The neighbour graph changes every round, so without this the first rounds of a new
        federation also pay one CA-signature check per new neighbour; the cold round is
        reported separately.
        """
        checked = PeerVerifier(next(iter(self.clients.values())).verifier.ca_pem)
        for peer, pem in self.certificates.items():
            checked.certificate(pem, peer)
        for client in self.clients.values():
            # Equal to every node checking every certificate once (O(n^2) checks at n = 1000).
            client.verifier._known.update(checked._known)


def _protocol_federation(n: int, length: int, work: Path) -> _Fed:
    """n SecAgg clients with fixed vectors (no data, no DP: the protocol alone)."""
    ids = [f"inst-{i:04d}" for i in range(n)]
    pki = make_dev_pki(work / f"pki-{n}", ids)
    rng = np.random.default_rng(0)
    ca = pki.ca.read_bytes()
    handlers = {}
    clients = {}
    for i in ids:
        vector = rng.integers(0, 1000, size=length)

        def contribution(round_id: str, setup: SecAggSetup, v: np.ndarray = vector) -> Contribution:
            return Contribution(v.astype(np.int64), 1.0, setup.query.rho)

        signer = Signer.from_files(i, pki.nodes[i].cert, pki.nodes[i].key)
        client = SecAggClient(signer, PeerVerifier(ca), contribution)
        clients[i] = client
        handlers[i] = functools.partial(_answer, client)
    certificates = {i: pki.nodes[i].cert.read_bytes() for i in ids}
    # Nodes run one after the other on this thread, as Flower's in-process Grid runs its
    # ClientApps: with the GIL held by the cryptography, threads would only add switching.
    return _Fed(InProcessTransport(handlers, concurrent=False), ids, clients, certificates)


def _answer(client: SecAggClient, task: Task) -> TaskResult:
    assert isinstance(task.spec, SecAggRequest)
    return TaskResult(task.task_id, SecAggResponse(task.spec.round_id, client.handle(task.spec)))


def our_round(n: int, length: int, degree: int, work: Path, repeats: int) -> dict[str, float]:
    fed = _protocol_federation(n, length, work)
    q = harness_query(length)
    base = Task("bench/secagg", "bench", "secagg", 600_000, q)
    params = SecureParams(n_min=max(1, n // 2), degree=degree, threshold=degree // 2 + 1)
    times = []
    for r in range(repeats + 1):
        if r == 1:
            fed.warm_certificate_caches()
        start = time.perf_counter()
        result = asyncio.run(run_secure_round(fed.transport, base, q, fed.ids, params))
        times.append(time.perf_counter() - start)
        assert len(result.survivors) == n, result.dropped
    # One more round, untimed, to count what each node sends (the count costs an encoding).
    counted = asyncio.run(
        run_secure_round(fed.transport, base, q, fed.ids, params, measure_bytes=True)
    )
    sent = [max(counted.bytes_from_node.values())]
    return {
        "seconds": statistics.median(times[1:]),
        "cold_first_round_seconds": times[0],
        "max_bytes_sent_per_node": float(max(sent)),
    }


def versus_flower(n: int, length: int, degree: int, work: Path, repeats: int) -> dict[str, Any]:
    """Same n, length and neighbours: Flower's num_shares counts the node itself (degree + 1)."""
    ours = our_round(n, length, degree, work, repeats)
    try:
        from benchmarks.flower_baseline import flower_secagg_round
    except ImportError as err:  # flwr is an extra: pip install -e '.[flower]'
        return {"ours_s": ours["seconds"], "flower_s": None, "speedup_vs_flower": None,
                "flower_unavailable": str(err)}  # fmt: skip
    num_shares = degree + 1
    threshold = degree // 2 + 1  # a strict majority, as ours
    rounds = [flower_secagg_round(n, length, num_shares, threshold, seed=r) for r in range(repeats)]
    assert all(r.exact for r in rounds), "Flower's sum was not exact"
    flower = [r.seconds for r in rounds]
    flower_s = statistics.median(flower)
    return {
        "ours_s": ours["seconds"],
        "flower_s": flower_s,
        "speedup_vs_flower": flower_s / ours["seconds"],
        "ours_max_bytes_sent_per_node": ours["max_bytes_sent_per_node"],
        "n": n,
        "length": length,
        "neighbours": degree,
        "flower_num_shares": num_shares,
        "threshold": threshold,
    }


def grpc_rounds(n: int, rounds: int, work: Path) -> dict[str, Any]:
    """Secure rounds with n node processes (``publiek-node run``) over mTLS gRPC on loopback."""
    import subprocess
    import sys

    from coordinator.registry import NodeRegistry
    from coordinator.server import CoordinatorServer, ServerTls

    sector = generate_sector(SectorConfig(n_institutions=n, seed=9, years=(2024, 2024), scale=0.01))
    sector.write(work / "sector")
    ids = [i.institution_id for i in sector.institutions]
    pki = make_dev_pki(work / "pki", ids)
    # The demo's table (S1, discipline x quarter, 60 cells), n_min = n - 5.
    demo = (REPO / "deploy" / "plans" / "s1-demo.toml").read_text()
    plan = parse_plan(demo.replace("min_nodes = 10", f"min_nodes = {n - 5}"))
    q = plan.analyses[0].query
    exe = str(Path(sys.executable).parent / "publiek-node")

    async def scenario() -> dict[str, Any]:
        registry = NodeRegistry()
        server = CoordinatorServer(
            registry, "bench", tls=ServerTls(pki.ca, pki.server.cert, pki.server.key)
        )
        port = await server.start("127.0.0.1:0")
        procs = []
        try:
            started = time.perf_counter()
            for inst in sector.institutions:
                folder = work / "nodes" / inst.institution_id
                config = write_node_config(
                    folder,
                    inst.institution_id,
                    inst.type,
                    work / "sector" / inst.institution_id / "ticket_line.csv",
                    port,
                    pki,
                    cap="10",
                    country=inst.country,
                    modes=("secure",),
                )
                log = (folder / "node.log").open("w")
                procs.append(
                    subprocess.Popen([exe, "run", "--config", str(config)], stdout=log, stderr=log)
                )
            nodes = await registry.wait_for_nodes(n, 300)
            connect_s = time.perf_counter() - started
            assert len(nodes) == n, f"only {len(nodes)} of {n} nodes connected"
            params = SecureParams.default(n, n_min=n - 5)
            times, stages = [], []
            for r in range(rounds):
                base = Task(f"bench/grpc-{r}", "bench", "grpc", 120_000, q)
                t0 = time.perf_counter()
                result = await run_secure_round(
                    registry, base, q, ids, params, verifier=PeerVerifier.from_file(pki.ca)
                )
                times.append(time.perf_counter() - t0)
                stages.append(result.stage_seconds)
                assert len(result.survivors) == n, result.dropped
            return {
                "round_seconds": times,
                "stage_seconds_last": stages[-1],
                "nodes_connected_in_s": connect_s,
                "degree": params.degree,
                "n_min": params.n_min,
            }
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            await server.stop(0.5)

    return asyncio.run(scenario())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.secagg",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="under a minute")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        acc = accuracy(n=12, reps=8 if args.quick else 30, work=work / "acc")
        result.update(acc)
        print(f"accuracy: secure/central {acc['secure_over_central_rmse']:.3f}, "
              f"open/central {acc['open_over_central_rmse']:.3f}", flush=True)  # fmt: skip
        grpc = grpc_rounds(50, rounds=2 if args.quick else 5, work=work / "grpc")
        # The first round also checks each peer's certificate against the CA once.
        result["grpc_round_s_50"] = statistics.median(grpc["round_seconds"][1:])
        result["grpc"] = grpc
        print(f"gRPC, 50 node processes: {grpc}", flush=True)
        vs = versus_flower(100, 1000, 10, work / "flower", repeats=1 if args.quick else 5)
        result["speedup_vs_flower"] = vs.pop("speedup_vs_flower")
        result["versus_flower"] = vs
        print(f"versus Flower (n=100, length 1000): {vs}", flush=True)
        if not args.quick:
            scaling = {}
            for n, length in ((100, 100), (100, 10_000), (300, 1000), (1000, 100)):
                r = our_round(n, length, 12, work / f"scale-{n}-{length}", repeats=1)
                scaling[f"n{n}_len{length}"] = r
                print(f"in-process round n={n} length={length}: {r}", flush=True)
            result["scaling"] = scaling
    write_result("secagg", {"quick": args.quick}, result)
    headline = {k: v for k, v in result.items() if not isinstance(v, dict)}
    print(last_line(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
