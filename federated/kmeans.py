"""``FederatedKMeans``: the sector's federated DP k-means on any numeric matrix, as a library.

The same protocol the sector runs, in one process: every part of the data is a node with its
own certificate (a throw-away CA made for the fit), its own secure-aggregation client and its own
noise share; the coordinator's fit (``coordinator.segmentation``) sees only secure sums, through
the in-process transport, which still passes every message through the wire encoding.

    from federated import FederatedKMeans
    model = FederatedKMeans(n_clusters=8, epsilon=1.0, bounds=[(0, 1)] * 5)
    model.fit([part_a, part_b, part_c])      # one matrix per node, rows within the bounds
    labels = model.predict(new_rows)
    model.cluster_centers_, model.model_card_

Privacy: epsilon is per node (a row of one part is the privacy unit) for the whole fit, at
``delta``, converted to zCDP rho with OpenDP's conversion (``privacy.budget.epsilon_of``); every
round's noise comes from OpenDP's discrete Gaussian on the nodes. ``n_min`` (default: all parts)
is the fewest parts whose noise shares must be in a sum for the guarantee to hold.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import serialization

from coordinator.ca import CertificateAuthority
from coordinator.inprocess import InProcessTransport
from coordinator.secure import SecureParams
from coordinator.segmentation import FitResult, FitSettings, SecureRounds, fit, fit_seed
from node.secure import Contribution, SecAggClient
from node.segments import SegmentData, kmeans_contribution
from privacy.budget import Rho, epsilon_of, rho_for_epsilon
from privacy.clustering.budget import DEFAULT_LLOYD_ROUNDS, DEFAULT_MAX_DEPTH, Schedule
from privacy.clustering.public_random import new_seed
from privacy.clustering.space import Feature, FeatureSpace
from privacy.clustering.steps import nearest
from privacy.secagg.prg import SEED_BYTES
from protocols.certificates import new_node_key, node_request
from protocols.errors import ErrorCode, PublicError
from protocols.identity import PeerVerifier, Signer
from protocols.kmeans import KMeansQuery
from protocols.messages import ErrorInfo, Task, TaskResult
from protocols.secagg import SecAggRequest, SecAggResponse, SecAggSetup, noise_share

FloatMatrix = npt.NDArray[np.float64]


@dataclass
class _MatrixNode:
    """One part: a secure-aggregation client that contributes its rows' k-means sums."""

    institution_id: str
    data: SegmentData
    client: SecAggClient | None = None
    spent: Rho = field(default_factory=Rho.zero)
    setups: dict[str, SecAggSetup] = field(default_factory=dict)

    def contribute(self, round_id: str, setup: SecAggSetup) -> Contribution:
        query = setup.query
        if not isinstance(query, KMeansQuery):
            raise PublicError(ErrorCode.UNSUPPORTED_TASK, "a library node answers k-means only")
        noise = noise_share(setup)
        values = noise.share.sample(kmeans_contribution(query, self.data))
        self.spent = self.spent + query.rho
        return Contribution(values, noise.share_scale, query.rho)

    def handle(self, task: Task) -> TaskResult:
        assert self.client is not None
        assert isinstance(task.spec, SecAggRequest)
        try:
            reply = self.client.handle(task.spec)
        except PublicError as err:
            return TaskResult(task.task_id, ErrorInfo(err.code, err.message))
        return TaskResult(task.task_id, SecAggResponse(task.spec.round_id, reply))


class FederatedKMeans:
    """Federated k-means with differential privacy and secure aggregation (scikit-learn style).

    ``bounds``: per feature (low, high), public (not taken from the data); values are clipped to
    them. Or ``space``: a ready ``FeatureSpace`` (bounds, scaling, origin, radius).
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        epsilon: float | None = 1.0,
        delta: float = 1e-7,
        rho: Rho | None = None,
        bounds: Sequence[tuple[float, float]] | None = None,
        space: FeatureSpace | None = None,
        max_lloyd_rounds: int = DEFAULT_LLOYD_ROUNDS,
        max_depth: int = DEFAULT_MAX_DEPTH,
        n_min: int | None = None,
        seed: bytes | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if (bounds is None) == (space is None):
            raise ValueError("give either bounds or space")
        if (epsilon is None) == (rho is None):
            raise ValueError("give either epsilon or rho")
        self.n_clusters = n_clusters
        self.epsilon = epsilon
        self.delta = delta
        self.rho = rho if rho is not None else rho_for_epsilon(float(epsilon or 0), delta)
        self.space = space or FeatureSpace.box(
            tuple(Feature(f"x{i}", float(lo), float(hi)) for i, (lo, hi) in enumerate(bounds or ()))
        )
        self.max_lloyd_rounds = max_lloyd_rounds
        self.max_depth = max_depth
        # Every setting is checked here, before any data is seen or any budget spent.
        Schedule(self.rho, n_clusters, max_depth, max_lloyd_rounds)
        if n_min is not None and (isinstance(n_min, bool) or n_min < 1):
            raise ValueError(f"n_min must be a positive number of parts, got {n_min!r}")
        if seed is not None and len(seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
        self.n_min = n_min
        self.seed = seed
        self.progress = progress

    # --- fitting -----------------------------------------------------------------------------

    def fit(self, parts: Sequence[npt.ArrayLike]) -> FederatedKMeans:
        """Fit on data partitioned over nodes: one matrix (rows x features) per node."""
        matrices = [self.space.scale(p) for p in parts]
        if len(matrices) < 2:
            raise ValueError("secure aggregation needs at least two parts (nodes)")
        if self.n_min is not None and self.n_min > len(matrices):
            raise ValueError(
                f"n_min = {self.n_min} parts must survive, but only {len(matrices)} were given"
            )
        with tempfile.TemporaryDirectory(prefix="publiek-kmeans-") as tmp:
            result, nodes = asyncio.run(self._fit(matrices, Path(tmp)))
        self.result_ = result
        self.cluster_centers_ = self.space.unscale(result.centres)
        self.spent_rho_ = result.spent
        self.epsilon_spent_ = epsilon_of(result.spent, self.delta)
        self.labels_ = [nearest(m, result.centres) for m in matrices]  # computed per part
        self.node_spent_ = {n.institution_id: n.spent for n in nodes}
        self.model_card_ = self._card(result, len(matrices))
        return self

    async def _fit(
        self, matrices: list[FloatMatrix], folder: Path
    ) -> tuple[FitResult, list[_MatrixNode]]:
        ids = [f"part-{i:04d}" for i in range(len(matrices))]
        # A throw-away CA for this fit: every part signs its secure-aggregation keys with a
        # certificate of the real profile, as an institution's node does.
        authority = CertificateAuthority.init(
            folder, name="publiek library fit", organisation="publiek library", days=1
        )
        ca = authority.cert_path.read_bytes()
        nodes = []
        for nid, m in zip(ids, matrices, strict=True):
            node = _MatrixNode(nid, SegmentData.from_matrix(m, self.space, date.today()))
            key = new_node_key()
            request = node_request(key, nid, "publiek library")
            cert = authority.sign_request(request.public_bytes(serialization.Encoding.PEM), days=1)
            signer = Signer(nid, cert.public_bytes(serialization.Encoding.PEM), key)
            node.client = SecAggClient(signer, PeerVerifier(ca), node.contribute)
            nodes.append(node)
        transport = InProcessTransport(
            {n.institution_id: n.handle for n in nodes}, concurrent=False
        )
        n_min = self.n_min or len(ids)
        seed = self.seed or new_seed()
        rounds = SecureRounds(
            transport,
            ids,
            SecureParams.default(len(ids), n_min),
            run_id="library",
            fit_id="kmeans",
            timeout_ms=600_000,
            verifier=PeerVerifier(ca),
        )
        settings = FitSettings(
            k=self.n_clusters,
            rho=self.rho,
            space=self.space,
            max_depth=self.max_depth,
            max_lloyd_rounds=self.max_lloyd_rounds,
        )
        result = await fit(settings, rounds, fit_seed(seed.hex(), "kmeans"), self.progress)
        return result, nodes

    # --- using the model ---------------------------------------------------------------------

    def _fitted(self) -> FitResult:
        result: FitResult | None = getattr(self, "result_", None)
        if result is None:
            raise ValueError("this FederatedKMeans is not fitted yet: call fit(parts) first")
        return result

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Index of the nearest centre of each row (local: nothing leaves)."""
        return nearest(self.space.scale(x), self._fitted().centres)

    def cost(self, x: npt.ArrayLike) -> float:
        """k-means cost (sum of squared distances to the nearest centre) in the scaled space."""
        scaled = self.space.scale(x)
        c = self._fitted().centres
        d2 = ((scaled[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        return float(d2.min(axis=1).sum())

    def _card(self, result: FitResult, parts: int) -> dict[str, Any]:
        return {
            "k": self.n_clusters,
            "parts": parts,
            "privacy": {
                "unit": "one row of one part",
                "rho_declared": str(self.rho),
                "rho_spent": str(result.spent),
                "epsilon_spent": epsilon_of(result.spent, self.delta),
                "delta": self.delta,
                "conversion": "OpenDP zCDP -> (epsilon, delta) (make_zCDP_to_approxDP)",
                "n_min": self.n_min or parts,
            },
            "rounds": [
                {
                    "key": r.key,
                    "step": r.step,
                    "rho": str(r.rho),
                    "values": r.values,
                    "contributors": r.contributors,
                    "noise_sd": r.noise_sd,
                    "note": r.note,
                }
                for r in result.rounds
            ],
            "stopped": result.stopped,
            "customers_noisy": result.customers,
            "leaves": result.leaves,
            "sizes_noisy": [float(v) for v in result.sizes],
            "cost_noisy": float(result.costs.sum()),
            "cost_noise_sd": result.cost_sd,
        }
