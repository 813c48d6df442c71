"""An in-process secure-aggregation federation with real keys, certificates and the wire encoding:
nodes are ``SecAggClient``s with fixed input vectors, the coordinator is ``run_secure_round``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coordinator.inprocess import InProcessTransport
from coordinator.secure import SecureParams, SecureRoundResult, run_secure_round
from deploy.devcerts import DevPki, make_dev_pki
from node.secure import Contribution, SecAggClient
from privacy.bounding import ContributionBound
from privacy.budget import Rho
from protocols.errors import PublicError
from protocols.identity import PeerVerifier, Signer
from protocols.messages import Dimension, ErrorInfo, HistogramQuery, ReleaseMode, Task, TaskResult
from protocols.secagg import STAGE_NAMES, STAGE_ORDER, SecAggRequest, SecAggResponse, SecAggSetup
from protocols.vocabulary import quarters

STAGES = tuple(STAGE_NAMES[t] for t in STAGE_ORDER)


def query(cells: int = 15) -> HistogramQuery:
    """A secure-mode histogram query over exactly ``cells`` public keys."""
    periods = quarters(1900, 2099)  # 800 public keys
    years = tuple(str(y) for y in range(1900, 2100))  # 200 more, crossed with them
    if cells <= len(periods):
        dims: tuple[Dimension, ...] = (Dimension("quarter", periods[:cells]),)
    else:
        y = next(
            (y for y in range(2, len(years) + 1) if cells % y == 0 and cells // y <= len(periods)),
            None,
        )
        assert y is not None, f"cannot make a public key set of exactly {cells} cells"
        dims = (Dimension("year", years[:y]), Dimension("quarter", periods[: cells // y]))
    return HistogramQuery(
        statistic="S1",
        measure="tickets",
        dimensions=dims,
        bound=ContributionBound(4, 8),
        rho=Rho.parse("0.1"),
        mode=ReleaseMode.SECURE,
        years=(1900, 2099),
    )


@dataclass
class Federation:
    pki: DevPki
    vectors: dict[str, np.ndarray]
    clients: dict[str, SecAggClient] = field(default_factory=dict)
    # node -> stage name at which it vanishes (before answering it)
    vanish_at: dict[str, str] = field(default_factory=dict)
    transport: InProcessTransport | None = None
    contributed: list[str] = field(default_factory=list)

    def handler(self, node: str) -> Callable[[Task], TaskResult]:
        client = self.clients[node]

        def handle(task: Task) -> TaskResult:
            assert isinstance(task.spec, SecAggRequest)
            stage = STAGES[task.spec.index]
            if self.vanish_at.get(node) == stage:
                assert self.transport is not None
                self.transport.disconnect(node)
            try:
                reply = client.handle(task.spec)
            except PublicError as err:
                return TaskResult(task.task_id, ErrorInfo(err.code, err.message))
            return TaskResult(task.task_id, SecAggResponse(task.spec.round_id, reply))

        return handle


def make_federation(tmp: Path, n: int, length: int = 15, seed: int = 0) -> Federation:
    ids = [f"inst-{i:03d}" for i in range(n)]
    pki = make_dev_pki(tmp / "pki", ids)
    rng = np.random.default_rng(seed)
    vectors = {i: rng.integers(-(2**40), 2**40, size=length) for i in ids}
    fed = Federation(pki, vectors)
    verifier_pem = pki.ca.read_bytes()
    for i in ids:

        def contribution(round_id: str, setup: SecAggSetup, i: str = i) -> Contribution:
            fed.contributed.append(i)
            return Contribution(fed.vectors[i].astype(np.int64), 1.0, setup.query.rho)

        signer = Signer.from_files(i, pki.nodes[i].cert, pki.nodes[i].key)
        fed.clients[i] = SecAggClient(signer, PeerVerifier(verifier_pem), contribution)
    fed.transport = InProcessTransport({i: fed.handler(i) for i in ids})
    return fed


def run(
    fed: Federation,
    params: SecureParams | None = None,
    # Long: a healthy node must never miss it on a loaded machine (the slowest of 50 took
    # 0.5 s idle in share keys); tests of dropouts pass their own short deadline.
    timeout_ms: int = 30_000,
    measure_bytes: bool = False,
) -> SecureRoundResult:
    assert fed.transport is not None
    ids = sorted(fed.vectors)
    cells = len(next(iter(fed.vectors.values())))
    base = Task("run/secure", "run", "secure", timeout_ms, query(cells))
    p = params or SecureParams.default(len(ids), n_min=max(2, len(ids) // 2))
    return asyncio.run(
        run_secure_round(
            fed.transport,
            base,
            query(cells),
            ids,
            p,
            verifier=PeerVerifier(fed.pki.ca.read_bytes()),
            measure_bytes=measure_bytes,
        )
    )
