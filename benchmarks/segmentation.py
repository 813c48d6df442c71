"""How good is the federated DP segmentation, next to pooled k-means and central DP k-means?

    python -m benchmarks.segmentation --quick     # 20 institutions, epsilon 1, under a minute
    python -m benchmarks.segmentation             # 50 institutions, epsilon 0.5, 1 and 2

A synthetic sector (``synthetic``, with latent segments in its ground truth) is read by one node
per institution exactly as a node reads an export (``node.data.load``: CSV, validation, customer
features with the institution's location and the PC4 table). The sector's segmentation then runs
as a plan with a ``[[segmentation]]`` through the real runner, node handlers, ledgers and
secure-aggregation rounds (in process; n_min = n - 2), at epsilon per node converted to rho at
delta 1e-7 with OpenDP. Side by side, on the pooled matrix of the same customers (pooling
happens inside this benchmark only):

- scikit-learn's non-private ``KMeans`` (k-means++, n_init = 10): the bar;
- IBM diffprivlib's central DP ``KMeans`` at the same epsilon (a trusted curator holding
  everyone's data), in its own environment (``benchmarks/diffprivlib_kmeans.py``).

Printed last, one JSON object: ``cost_ratio_eps1`` (k-means cost on the pooled data of the
federated model at epsilon 1, over scikit-learn's; target at most 1.05),
``diffprivlib_ratio_eps1`` (the same for diffprivlib; ours must be lower at every epsilon) and
``ari_latent`` (adjusted Rand index of the federated model's segments against the synthetic
latent segments, customers with a known person only). Medians over repetitions. The full run
adds the other epsilons (``cost_ratio_eps0_5``, ...) and ``beats_diffprivlib_every_epsilon``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from benchmarks.common import last_line, write_result
from coordinator.inprocess import InProcessTransport
from coordinator.runner import RunSettings, run_plan
from deploy.devcerts import make_dev_pki
from node.data import load
from node.geo import Geography, Location
from node.handler import NodeIdentity, TaskHandler
from node.ingest.sources import file_source
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.segments import SegmentData
from privacy.budget import Rho
from privacy.clustering.steps import nearest
from protocols.identity import PeerVerifier, Signer
from protocols.plan import parse_plan
from protocols.segment_model import model_from_json
from synthetic import SectorConfig, generate_sector
from synthetic.geography import pc4_table

REPO = Path(__file__).resolve().parent.parent
DPL_PYTHON = REPO / ".venv-diffprivlib" / "bin" / "python"
DPL_SCRIPT = Path(__file__).resolve().parent / "diffprivlib_kmeans.py"
K = 11
DELTA = 1e-7
# The ingest pipeline's keyed hash of customer ids (node/ingest/pipeline.py): how this benchmark
# finds each node's customers back in the synthetic truth, to score segments against it.
_CUSTOMER_SEED = 0x5EED_C057

PLAN = """
[plan]
id = "bench-segmentation"
mode = "secure"
min_nodes = {n_min}
task_timeout_s = 600
delta = {delta}

[[segmentation]]
id = "s12_segments"
title = "Audience segments"
k = {k}
epsilon = {epsilon}
"""


@dataclass
class Institution:
    handler: TaskHandler
    data: SegmentData
    latent: npt.NDArray[np.int64]  # latent segment per row (-1: no person known)


def sector(n: int, scale: float, work: Path) -> dict[str, Institution]:
    """Every institution's node, reading its own export as a real node does."""
    sec = generate_sector(SectorConfig(n_institutions=n, seed=7, years=(2023, 2024), scale=scale))
    sec.write(work / "sector")
    pc4 = pc4_table()
    ids = [i.institution_id for i in sec.institutions]
    pki = make_dev_pki(work / "pki", ids)
    people = sec.truth.people.select("person_id", "latent_segment")
    out = {}
    for inst in sec.institutions:
        nid = inst.institution_id
        geo = Geography(location=Location(inst.lat, inst.lon), pc4=pc4)
        loaded = load(file_source(work / "sector" / nid / "ticket_line.csv"), geography=geo)
        data = SegmentData.from_features(loaded.features, inst.type, inst.region)
        handler = TaskHandler(
            NodeIdentity(nid, inst.type),
            loaded.table,
            Ledger(work / "ledgers" / f"{nid}.sqlite", BudgetCap(Rho.parse("100"), Period.TOTAL)),
            Policy(max_rho_per_task=Rho.parse("1")),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
            segments=data,
        )
        accounts = (
            sec.truth.accounts.filter(pl.col("institution_id") == nid)
            .with_columns(
                pl.col("customer_id").hash(_CUSTOMER_SEED).reinterpret(signed=True).alias("unit")
            )
            .join(people, on="person_id")
        )
        units = loaded.features.frame.filter(pl.col("has_account")).select("unit")
        latent = units.join(accounts.select("unit", "latent_segment"), on="unit", how="left")
        out[nid] = Institution(
            handler, data, latent["latent_segment"].fill_null(-1).to_numpy().astype(np.int64)
        )
    return out


def cost(x: npt.NDArray[np.float64], centres: npt.NDArray[np.float64]) -> float:
    """k-means cost: the sum of squared distances to the nearest centre."""
    total = 0.0
    for start in range(0, x.shape[0], 50_000):  # in blocks: n x k distances stay small
        part = x[start : start + 50_000]
        d2 = (part**2).sum(1)[:, None] - 2.0 * part @ centres.T + (centres**2).sum(1)[None, :]
        total += float(np.maximum(d2.min(axis=1), 0.0).sum())
    return total


def federated(
    nodes: dict[str, Institution], epsilon: float, run: str
) -> tuple[npt.NDArray[np.float64], dict[str, Any], float]:
    """The sector's segmentation, as the runner runs it: (centres, model card, seconds)."""
    n = len(nodes)
    plan = parse_plan(PLAN.format(n_min=max(2, n - 2), delta=DELTA, k=K, epsilon=epsilon))
    transport = InProcessTransport(
        {nid: functools.partial(i.handler.handle, requester="bench") for nid, i in nodes.items()},
        concurrent=False,
    )
    start = time.perf_counter()
    doc = asyncio.run(
        run_plan(plan, transport, RunSettings("bench", n, 5, run_id=run), lambda _: None)
    )
    seconds = time.perf_counter() - start
    [raw] = doc["segmentations"]
    model = model_from_json(raw)
    return model.centres(), model.card, seconds


def sklearn_kmeans(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    from sklearn.cluster import KMeans  # dev dependency: benchmarks and tests only

    km = KMeans(n_clusters=K, init="k-means++", n_init=10, random_state=0).fit(x)
    return np.asarray(km.cluster_centers_, dtype=np.float64)


def diffprivlib(
    x: npt.NDArray[np.float64], epsilons: list[float], reps: int, work: Path
) -> dict[float, list[npt.NDArray[np.float64]]]:
    if not DPL_PYTHON.exists():
        raise SystemExit(
            f"{DPL_PYTHON} is missing: run `make diffprivlib-env` (make bench does) to set up"
            " the baseline's own environment"
        )
    data, out = work / "pooled.npy", work / "diffprivlib.npz"
    np.save(data, x)
    cmd = [str(DPL_PYTHON), str(DPL_SCRIPT), str(data), str(out), "--k", str(K)]
    cmd += ["--epsilons", *map(str, epsilons), "--reps", str(reps)]
    subprocess.run(cmd, check=True)
    saved = np.load(out)
    return {e: [saved[f"eps{e:g}_rep{r}"] for r in range(reps)] for e in epsilons}


def ari(labels: npt.NDArray[np.int64], latent: npt.NDArray[np.int64]) -> float:
    from sklearn.metrics import adjusted_rand_score

    known = latent >= 0
    return float(adjusted_rand_score(latent[known], labels[known]))


def run(n: int, scale: float, epsilons: list[float], reps: int, work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    nodes = sector(n, scale, work)
    x = np.vstack([i.data.scaled for i in nodes.values()])
    latent = np.concatenate([i.latent for i in nodes.values()])
    prepared = time.perf_counter() - start
    base_centres = sklearn_kmeans(x)
    base = cost(x, base_centres)
    dpl = diffprivlib(x, epsilons, reps, work)
    result: dict[str, Any] = {
        "institutions": n,
        "customers": int(x.shape[0]),
        "k": K,
        "delta": DELTA,
        "reps": reps,
        "sklearn_cost_per_customer": base / x.shape[0],
        "sklearn_ari_latent": ari(nearest(x, base_centres), latent),
        "prepare_seconds": prepared,
    }
    beats = True
    for eps in epsilons:
        tag = f"eps{eps:g}".replace(".", "_")
        ratios, aris, seconds, spent = [], [], [], []
        for r in range(reps):
            centres, card, took = federated(nodes, eps, f"{tag}-rep{r}")
            ratios.append(cost(x, centres) / base)
            aris.append(ari(nearest(x, centres), latent))
            seconds.append(took)
            spent.append(card["privacy"]["epsilon_spent"])
            print(
                f"epsilon {eps:g} rep {r}: cost ratio {ratios[-1]:.4f}, ARI {aris[-1]:.3f},"
                f" {took:.1f} s, {card['method']['stopped']}",
                flush=True,
            )
        dpl_ratios = [cost(x, c) / base for c in dpl[eps]]
        result[f"cost_ratio_{tag}"] = statistics.median(ratios)
        result[f"diffprivlib_ratio_{tag}"] = statistics.median(dpl_ratios)
        result[f"ari_latent_{tag}"] = statistics.median(aris)
        result[f"fit_seconds_{tag}"] = statistics.median(seconds)
        result[f"epsilon_spent_{tag}"] = max(spent)
        result[f"cost_ratios_{tag}"] = ratios
        result[f"diffprivlib_ratios_{tag}"] = dpl_ratios
        beats = beats and result[f"cost_ratio_{tag}"] < result[f"diffprivlib_ratio_{tag}"]
    result["ari_latent"] = result["ari_latent_eps1"]
    result["beats_diffprivlib_every_epsilon"] = beats
    # check every node's own ledger: what the fits cost, as the institutions see it
    spent_rho = max(float(i.handler.ledger.spent()) for i in nodes.values())
    result["max_rho_charged_in_a_ledger"] = spent_rho
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.segmentation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="under a minute")
    args = parser.parse_args(argv)
    if args.quick:
        config = {"n": 20, "scale": 0.1, "epsilons": [1.0], "reps": 1}
    else:
        config = {"n": 50, "scale": 0.1, "epsilons": [0.5, 1.0, 2.0], "reps": 3}
    with tempfile.TemporaryDirectory(prefix="publiek-bench-seg-") as tmp:
        result = run(work=Path(tmp), **config)  # type: ignore[arg-type]
    for key, value in result.items():
        if not isinstance(value, list):
            print(f"{key:>34}: {value}")
    write_result("segmentation", {"quick": args.quick, **config}, result)
    print(
        last_line(
            {
                "cost_ratio_eps1": result["cost_ratio_eps1"],
                "diffprivlib_ratio_eps1": result["diffprivlib_ratio_eps1"],
                "ari_latent": result["ari_latent"],
                **{
                    k: v
                    for k, v in result.items()
                    if k.startswith(("cost_ratio_eps", "diffp")) and not isinstance(v, list)
                },
                "beats_diffprivlib_every_epsilon": result["beats_diffprivlib_every_epsilon"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
