"""The coordinator's side of the shared segmentation: a federated DP k-means, round by round.

Each step is one secure-aggregation round over a ``KMeansQuery``; this module decides what to
ask next from what the previous sums said, and never sees more than those noisy sums:

1. **Private initialisation** (``privacy.clustering.tree``): a random-projection tree grown on
   noisy counts, one round per level, then one round for the leaves' noisy counts and means.
   The leaves are a private weighted coreset; k-means++ with many restarts on it (free
   post-processing) gives the initial centres. This is the design of Google's practical DP
   clustering (Chang, Ghazi, Kumar & Manurangsi 2021) with splits through each cell's own
   noisy centre.
2. **Lloyd rounds**: per nearest centre, noisy counts, feature sums and costs; new centres are
   the noisy means. The noisy cost is the stopping rule: once a round improves it by less than
   ``tolerance`` (or less than its own noise), the rounds stop and all the Lloyd budget left
   goes into one last, more precise round, whose centres are the model.

The budget split is ``privacy.clustering.budget.Schedule``. Everything random here (directions,
k-means++ on the coreset) is public and reproducible from the fit's seed, so a coordinator that
restarts asks exactly the same questions and the rounds it already has stay valid.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from coordinator.secure import (
    RoundTask,
    SecureParams,
    SecureRoundFailed,
    StageCheckpoint,
    run_secure_round,
)
from coordinator.transport import Transport
from privacy.budget import Rho, compose
from privacy.clustering import steps
from privacy.clustering.budget import (
    DEFAULT_LLOYD_ROUNDS,
    DEFAULT_MAX_DEPTH,
    Schedule,
    growth_rule,
)
from privacy.clustering.coreset import weighted_kmeans
from privacy.clustering.public_random import PublicRandom
from privacy.clustering.space import FeatureSpace, FloatMatrix
from privacy.clustering.steps import LloydStep, TreeLeaves, TreeLevel
from privacy.clustering.tree import ROOT, PartitionTree, grow
from protocols.identity import PeerVerifier
from protocols.kmeans import KMeansQuery, KMeansStep
from protocols.secagg import noise_share
from protocols.serde import query_digest

Progress = Callable[[str], None]
DEFAULT_TOLERANCE = 0.005


class SegmentationFailed(Exception):
    """The fit cannot go on (a round failed, or too little data for a private model)."""

    def __init__(self, message: str, charged: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.charged = charged  # nodes charged for the round that failed


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """One secure round's sum: the raw vector, who is in it, and its noise sd per entry
    (in the vector's integer units)."""

    total: npt.NDArray[np.int64]
    contributors: tuple[str, ...]
    sd: float


class Rounds(Protocol):
    """Runs one secure round for a query; ``key`` names it within the fit (resumable)."""

    def __call__(self, key: str, query: KMeansQuery) -> Awaitable[RoundOutcome]: ...


@dataclass(frozen=True, slots=True)
class FitSettings:
    k: int
    rho: Rho  # the most the fit may cost each node
    space: FeatureSpace
    statistic: str = "S12"
    as_of: str = ""
    max_depth: int = DEFAULT_MAX_DEPTH
    max_lloyd_rounds: int = DEFAULT_LLOYD_ROUNDS
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.rho, self.k, self.max_depth, self.max_lloyd_rounds)


@dataclass(frozen=True, slots=True)
class RoundRecord:
    key: str
    step: str  # "tree level", "tree leaves", "lloyd"
    rho: Rho
    values: int
    contributors: int
    noise_sd: float  # per value, in the decoded (real) units
    note: str = ""


@dataclass
class FitResult:
    centres: FloatMatrix  # scaled space
    initial_centres: FloatMatrix
    sizes: npt.NDArray[np.float64]  # noisy customers per segment (last Lloyd round)
    costs: npt.NDArray[np.float64]  # noisy k-means cost per segment of that round's centres
    cost_sd: float  # noise sd of the total cost
    customers: float  # noisy number of customers (root of the tree)
    leaves: int
    stopped: str
    rounds: list[RoundRecord] = field(default_factory=list)

    @property
    def spent(self) -> Rho:
        return compose([r.rho for r in self.rounds])


def fit_seed(run_id: str, fit_id: str) -> bytes:
    """The public seed of a fit: fresh per run, and the same when a run resumes."""
    return hashlib.sha256(f"publiek/kmeans/{run_id}/{fit_id}".encode()).digest()


class _Fit:
    def __init__(self, settings: FitSettings, rounds: Rounds, progress: Progress) -> None:
        self.settings = settings
        self.schedule = settings.schedule
        self.rounds = rounds
        self.progress = progress
        self.records: list[RoundRecord] = []
        self.n = 0

    def query(self, step: KMeansStep, rho: Rho) -> KMeansQuery:
        s = self.settings
        return KMeansQuery(s.statistic, s.space, step, rho, as_of=s.as_of)

    async def ask(self, kind: str, step: KMeansStep, rho: Rho, note: str = "") -> RoundOutcome:
        key = f"r{self.n:02d}-{kind.replace(' ', '-')}"
        self.n += 1
        query = self.query(step, rho)
        outcome = await self.rounds(key, query)
        sd = outcome.sd / steps.SCALE
        self.records.append(
            RoundRecord(key, kind, rho, query.n_cells, len(outcome.contributors), sd, note)
        )
        self.progress(
            f"segmentation {key}: {query.n_cells} values from {len(outcome.contributors)}"
            f" node(s), rho {float(rho):.3g}{' (' + note + ')' if note else ''}"
        )
        return outcome


async def fit(
    settings: FitSettings, rounds: Rounds, seed: bytes, progress: Progress | None = None
) -> FitResult:
    """Run the whole fit; raises SegmentationFailed with a reason when it cannot."""
    f = _Fit(settings, rounds, progress or (lambda _: None))
    space = settings.space
    schedule = f.schedule

    # 1. The tree: the root, then a level at a time while cells are big enough to split.
    directions = PublicRandom(seed, "directions").unit_vectors(settings.max_depth, space.dim)
    tree = PartitionTree(tuple(tuple(float(x) for x in row) for row in directions))
    root = TreeLevel(tree, (ROOT,))
    decoded = steps.decode(root, (await f.ask("tree level", root, schedule.level_rho)).total)
    customers = float(decoded.counts[0])
    rule = growth_rule(schedule, space.dim, space.radius, customers)
    growth = grow(tree, (ROOT,), decoded.counts, steps.mean_projections(root, decoded), (), rule)
    while growth.frontier:
        level = TreeLevel(growth.tree, growth.frontier)
        decoded = steps.decode(level, (await f.ask("tree level", level, schedule.level_rho)).total)
        growth = grow(
            growth.tree,
            growth.frontier,
            decoded.counts,
            steps.mean_projections(level, decoded),
            growth.leaves,
            rule,
        )
    if not growth.leaves:
        raise SegmentationFailed(
            f"about {max(customers, 0):.0f} customers in all: too few for a private segmentation"
            f" at rho {settings.rho} (no part of the data holds the {rule.min_points:.0f}"
            " customers a private mean needs)"
        )

    # 2. The leaves: a private weighted coreset, and k-means++ on it (post-processing).
    leaves = TreeLeaves(growth.tree, growth.leaves)
    rho = schedule.leaves_rho_after(f.n)  # every round so far was a level round
    note = f"{len(leaves.cells)} leaves"
    decoded = steps.decode(leaves, (await f.ask("tree leaves", leaves, rho, note)).total)
    points = steps.means(space, decoded.counts, decoded.sums)
    usable = decoded.counts > 0
    if not usable.any():
        # Reached when a leaf passed the tree's noisy threshold by chance but holds too little:
        # the same verdict as no leaf at all, said the same way.
        raise SegmentationFailed(
            f"every leaf's noisy count is zero or negative: too few for a private segmentation"
            f" at rho {settings.rho} (nothing to seed the centres with)"
        )
    centres = weighted_kmeans(
        points[usable], decoded.counts[usable], settings.k, PublicRandom(seed, "coreset")
    )
    initial = centres.copy()

    # 3. Lloyd rounds with the stopping rule, and a final round with what is left.
    total_rounds = settings.max_lloyd_rounds
    done = 0
    previous: float | None = None
    previous_sd = 0.0
    stopped = f"ran all {total_rounds} Lloyd rounds"
    sizes = np.zeros(settings.k)
    costs = np.zeros(settings.k)
    cost_sd = 0.0
    final = False
    while done < total_rounds:
        rounds_left = total_rounds - done
        rho = schedule.lloyd_rho(rounds_left, final)
        step = LloydStep(tuple(tuple(float(v) for v in c) for c in centres))
        last = final or rounds_left == 1
        outcome = await f.ask("lloyd", step, rho, "final, all that is left" if last else "")
        decoded = steps.decode(step, outcome.total)
        sd = outcome.sd / steps.SCALE
        sizes = decoded.counts
        costs = steps.costs(step, space, decoded)
        cost_sd = sd * space.radius**2 / steps.COST_WEIGHT_TIMES_R2 * math.sqrt(settings.k)
        # A centre whose noisy count is within noise of nothing stays where it was.
        moved = steps.means(space, decoded.counts, decoded.sums)
        keep = decoded.counts < max(1.0, 3.0 * sd)
        moved[keep] = centres[keep]
        centres = moved
        done = total_rounds if final else done + 1
        if final:
            break
        cost = float(costs.sum())
        if previous is not None and done < total_rounds:
            # Stop once the improvement is confidently small: even its upper 95% bound (the
            # gain plus two noise sds) is below the tolerance. With little data the noise keeps
            # this from firing and every round runs (stopping on a noisy "no gain" was measured
            # to stop too early); with much data it saves the budget of rounds that would
            # change nothing and spends it on a more precise final round.
            gain = previous - cost
            upper = gain + 2.0 * math.hypot(previous_sd, cost_sd)
            if upper < settings.tolerance * previous:
                change = (
                    f"fell by {gain / max(previous, 1e-12):.2%}"
                    if gain > 0
                    else f"rose by {-gain / max(previous, 1e-12):.2%} (noise)"
                )
                stopped = (
                    f"stopped after {done} Lloyd rounds: the noisy cost {change}, a gain of at"
                    f" most {upper / previous:.2%} at 95%, less than {settings.tolerance:.2%};"
                    f" the {total_rounds - done} round(s) of budget left went into one final round"
                )
                final = True
        previous, previous_sd = cost, cost_sd
    return FitResult(
        centres=centres,
        initial_centres=initial,
        sizes=np.asarray(sizes, dtype=np.float64),
        costs=np.asarray(costs, dtype=np.float64),
        cost_sd=cost_sd,
        customers=customers,
        leaves=len(leaves.cells),
        stopped=stopped,
        rounds=f.records,
    )


class RoundStore(Protocol):
    """Where finished rounds are kept, so a restarted coordinator does not ask again."""

    def load(self, analysis_id: str) -> dict[str, Any] | None: ...

    def save(self, analysis_id: str, record: dict[str, Any]) -> None: ...


CheckpointFactory = Callable[[str, str], StageCheckpoint]  # (analysis id, task id)


@dataclass
class SecureRounds:
    """``Rounds`` over real secure-aggregation rounds: one task id per round
    (``<run>/<fit>/<key>``, charged once in every ledger), each round resumable from its stage
    checkpoints and, once finished, from the round store."""

    transport: Transport
    participants: list[str]
    params: SecureParams
    run_id: str
    fit_id: str
    timeout_ms: int
    verifier: PeerVerifier | None = None
    progress: Progress | None = None
    store: RoundStore | None = None
    checkpoints: CheckpointFactory | None = None
    dropped: dict[str, str] = field(default_factory=dict)

    async def __call__(self, key: str, query: KMeansQuery) -> RoundOutcome:
        analysis_id = f"{self.fit_id}/{key}"
        digest = query_digest(query)
        saved = self.store.load(analysis_id) if self.store is not None else None
        if saved is not None:
            if saved.get("query_sha256") != digest:
                raise SegmentationFailed(
                    f"round {analysis_id} was run with another query before the restart; the"
                    " fit cannot be resumed consistently"
                )
            return RoundOutcome(
                np.asarray(saved["total"], dtype=np.int64),
                tuple(saved["contributors"]),
                float(saved["sd"]),
            )
        task = RoundTask(f"{self.run_id}/{analysis_id}", self.run_id, analysis_id, self.timeout_ms)
        checkpoint = (
            self.checkpoints(analysis_id, task.task_id) if self.checkpoints is not None else None
        )
        try:
            result = await run_secure_round(
                self.transport,
                task,
                query,
                self.participants,
                self.params,
                verifier=self.verifier,
                progress=self.progress,
                checkpoint=checkpoint,
            )
        except SecureRoundFailed as err:
            raise SegmentationFailed(f"round {key}: {err}", err.charged) from err
        noise = noise_share(result.setup)
        wrong = [
            node
            for node, scale in result.noise_scales.items()
            if not math.isclose(scale, noise.share_scale, rel_tol=1e-9)
        ]
        if wrong:
            raise SegmentationFailed(
                f"round {key}: {', '.join(wrong)} added noise of another scale than the round"
                f" requires ({noise.share_scale:.6g}); nothing released",
                result.survivors,
            )
        for node, reason in result.dropped.items():
            self.dropped.setdefault(node, f"{key}: {reason}")
        outcome = RoundOutcome(
            result.total, result.survivors, noise.total_scale(len(result.survivors))
        )
        if self.store is not None:
            self.store.save(
                analysis_id,
                {
                    "query_sha256": digest,
                    "total": [int(v) for v in result.total],
                    "contributors": list(result.survivors),
                    "sd": outcome.sd,
                    "round_id": result.round_id,
                },
            )
        return outcome
