"""The noise in a k-means round's released sum has exactly the scale the round claims.

End to end: three real node handlers (ledger, policy, secure-aggregation client, OpenDP shares)
answer a leaf round (512 leaves x 25 values) run by the coordinator's own ``SecureRounds`` over
the in-process transport. The released sum minus the exact noiseless sum of the three nodes'
bounded contributions is compared with the discrete Gaussian the round states (``RoundOutcome.sd``:
three shares, each at the scale the step's own sensitivity and rho require), by the chi-square
test of ``tests/test_privacy_noise_statistics.py``. The same test must reject the sum when every
node samples its share at 0.7x or 1.3x the scale while reporting the right one (a node that
reports a wrong scale is refused by the coordinator before anything is released, also shown).

False-positive rate: the check at the claimed scale fails with probability ALPHA = 1e-6 when the
noise is right (uniform p-value under the null). The sum of three discrete Gaussian shares at
scale s >> 1 is discrete Gaussian at sqrt(3) s up to a total variation below 1e-100, far under
what 25,600 draws can see. At 0.7x / 1.3x the chi-square statistic is in the thousands, so the
wrong-noise checks pass with probability indistinguishable from 1.
"""

from __future__ import annotations

import asyncio
import functools
import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator.inprocess import InProcessTransport
from coordinator.secure import SecureParams
from coordinator.segmentation import RoundOutcome, SecureRounds, SegmentationFailed
from deploy.devcerts import make_dev_pki
from node.data import load_ticket_lines
from node.handler import NodeIdentity, TaskHandler
from node.ledger import BudgetCap, Ledger, Period
from node.policy import Policy
from node.segments import SegmentData, kmeans_contribution
from privacy.budget import Rho
from privacy.clustering import steps
from privacy.clustering.public_random import PublicRandom
from privacy.clustering.steps import TreeLeaves
from privacy.clustering.tree import PartitionTree
from privacy.distributed import DistributedGaussian
from privacy.noise import DiscreteGaussian
from protocols.features import customer_space
from protocols.identity import PeerVerifier, Signer
from protocols.kmeans import KMeansQuery
from tests.conftest import ticket_row, write_tickets
from tests.test_privacy_noise_statistics import ALPHA, chi_square_p, gaussian_pmf

pytestmark = pytest.mark.slow

SPACE = customer_space()
DEPTH = 9  # a full tree: 512 leaves, 25 values each, 12,800 values per round
NODES = ("inst-a", "inst-b", "inst-c")
RHO = Rho.parse("0.5")


def _full_tree() -> PartitionTree:
    directions = PublicRandom(bytes(32), "stat-tree").unit_vectors(DEPTH, SPACE.dim)
    splits = tuple((c, 0.0) for c in range(1, 2**DEPTH))
    return PartitionTree(tuple(tuple(float(v) for v in d) for d in directions), splits)


def _handlers(folder: Path) -> tuple[dict[str, TaskHandler], PeerVerifier]:
    pki = make_dev_pki(folder / "pki", list(NODES))
    table = load_ticket_lines(write_tickets(folder / "t.csv", [ticket_row()]))
    rng = np.random.default_rng(5)  # customers' feature rows: test data, not noise
    out = {}
    for nid in NODES:
        rows = rng.uniform(0, 1, (3000, SPACE.dim))
        data = SegmentData.from_matrix(rows, SPACE, date(2024, 12, 31))
        out[nid] = TaskHandler(
            NodeIdentity(nid, "theatre"),
            table,
            Ledger(folder / f"{nid}.sqlite", BudgetCap(Rho.parse("100"), Period.TOTAL)),
            Policy(max_rho_per_task=Rho.parse("1")),
            signer=Signer.from_files(nid, pki.nodes[nid].cert, pki.nodes[nid].key),
            verifier=PeerVerifier.from_file(pki.ca),
            segments=data,
        )
    return out, PeerVerifier.from_file(pki.ca)


def _rounds(handlers: dict[str, TaskHandler], verifier: PeerVerifier, run: str) -> SecureRounds:
    transport = InProcessTransport(
        {nid: functools.partial(h.handle, requester="coord") for nid, h in handlers.items()},
        concurrent=False,
    )
    return SecureRounds(
        transport,
        list(NODES),
        SecureParams.default(len(NODES), len(NODES)),
        run_id=run,
        fit_id="stat",
        timeout_ms=120_000,
        verifier=verifier,
    )


def _noise(handlers: dict[str, TaskHandler], verifier: PeerVerifier, run: str) -> tuple[Any, float]:
    """Two leaf rounds: (released - exact) for 25,600 values, and the sd the rounds state."""
    step = TreeLeaves(_full_tree(), tuple(range(2**DEPTH, 2 ** (DEPTH + 1))))
    query = KMeansQuery("S12", SPACE, step, RHO, as_of="2024-12-31")
    exact = sum(kmeans_contribution(query, h.segments) for h in handlers.values())
    rounds = _rounds(handlers, verifier, run)
    out: list[RoundOutcome] = [asyncio.run(rounds(f"r{i}", query)) for i in range(2)]
    assert all(o.contributors == NODES for o in out)
    return np.concatenate([o.total - exact for o in out]), out[0].sd


def test_a_kmeans_rounds_noise_has_the_claimed_scale(tmp_path: Path) -> None:
    handlers, verifier = _handlers(tmp_path)
    noise, sd = _noise(handlers, verifier, "right")
    assert noise.size == 25_600
    # The stated sd is the central Gaussian the step's own sensitivity needs at RHO.
    step_sd = steps.l2_sensitivity(TreeLeaves(_full_tree(), (2**DEPTH,)), SPACE.radius) / math.sqrt(
        2 * float(RHO)
    )
    assert step_sd <= sd <= step_sd * 1.01
    assert chi_square_p(noise, gaussian_pmf(sd)) > ALPHA
    # every node was charged its two rounds, once each
    assert all(h.ledger.spent() == RHO + RHO for h in handlers.values())


@pytest.mark.parametrize("factor", [0.7, 1.3])
def test_nodes_adding_the_wrong_noise_are_caught(
    tmp_path: Path, factor: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers, verifier = _handlers(tmp_path)

    # Every node samples its share at factor x the scale, but reports the right scale.
    def wrong(self: DistributedGaussian) -> DiscreteGaussian:
        return DiscreteGaussian(self.share_scale * factor)

    monkeypatch.setattr(DistributedGaussian, "share", property(wrong))
    noise, sd = _noise(handlers, verifier, f"wrong-{factor}")
    assert chi_square_p(noise, gaussian_pmf(sd)) < ALPHA


def test_a_node_reporting_another_noise_scale_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.handler

    handlers, verifier = _handlers(tmp_path)
    real = node.handler.noise_share  # type: ignore[attr-defined]

    def smaller(setup: Any) -> DistributedGaussian:
        d = real(setup)
        return DistributedGaussian(
            d.l2_sensitivity, d.l1_sensitivity, d.dim, d.n_min, d.n_max, d.share_scale * 0.7
        )

    monkeypatch.setattr(node.handler, "noise_share", smaller)
    step = TreeLeaves(_full_tree(), tuple(range(2**DEPTH, 2 ** (DEPTH + 1))))
    query = KMeansQuery("S12", SPACE, step, RHO, as_of="2024-12-31")
    with pytest.raises(SegmentationFailed, match="added noise of another scale"):
        asyncio.run(_rounds(handlers, verifier, "lying")("r0", query))
