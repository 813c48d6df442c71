"""The coordinator's side of a secure-aggregation round: relay, collect, and unmask only the sum.

The coordinator routes every message but cannot read the shares (encrypted end to end) or any
single input (masked). After the masked-input stage it knows who survived (U3); it asks the
survivors to sign that set, shows the signatures to everyone, and receives, for each node, a
share of either its self-mask seed (it survived) or its mask key (it dropped) from that node's
neighbours. With ``threshold`` shares per node it removes the masks and is left with the exact
sum of the survivors' vectors, which already carries the distributed DP noise.

Dropouts at any stage are fine as long as every node still has ``threshold`` live neighbours and
at least ``n_min`` inputs survive; otherwise the round fails with a reason and nothing is
released. The nodes that sent a masked input were charged (and say so in their ledgers); the
failure names them.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from coordinator.rounds import NodeOutcome, collect
from coordinator.transport import Transport
from privacy.secagg import graph, keys, prg, ring, shamir
from protocols.identity import IdentityError, PeerVerifier
from protocols.messages import Task, TaskResult
from protocols.secagg import (
    EncryptedShare,
    EncryptedShares,
    MaskedVector,
    NodeSignature,
    RevealedShares,
    SecAggConsistency,
    SecAggMaskedInput,
    SecAggReply,
    SecAggRequest,
    SecAggResponse,
    SecAggSetup,
    SecAggShareKeys,
    SecAggStage,
    SecAggUnmask,
    SecureQuery,
    SignedKeys,
    keys_statement,
    self_mask_commitment,
)
from protocols.serde import encode_coordinator_message, encode_node_message

Progress = Callable[[str], None]


class StageCheckpoint(Protocol):
    """Where a round's stages are saved as they complete, so a restarted coordinator can go on
    with the same round: it re-sends the first unsaved stage, whose requests are rebuilt
    identically from the saved replies, and the nodes (which keep their round state) answer
    it again with the very same replies."""

    def load(self) -> tuple[str, dict[str, dict[str, SecAggReply]]] | None: ...

    def save(self, round_id: str, stage: str, replies: dict[str, SecAggReply]) -> None: ...


class TaskIds(Protocol):
    """What a round takes from the task it runs for: a ``Task``, or a ``RoundTask`` when the
    query is not a task spec of its own (a k-means step travels only inside a secure round)."""

    @property
    def task_id(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def analysis_id(self) -> str: ...

    @property
    def timeout_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RoundTask:
    task_id: str
    run_id: str
    analysis_id: str
    timeout_ms: int


class SecureRoundFailed(Exception):
    def __init__(self, message: str, charged: tuple[str, ...]) -> None:
        super().__init__(message)
        self.charged = charged


@dataclass(frozen=True, slots=True)
class SecureParams:
    n_min: int
    degree: int
    threshold: int

    @classmethod
    def default(cls, n: int, n_min: int) -> SecureParams:
        degree = graph.default_degree(n)
        return cls(n_min=n_min, degree=degree, threshold=graph.default_threshold(degree))

    @classmethod
    def for_plan(
        cls, n: int, n_min: int, degree: int | None, threshold: int | None
    ) -> SecureParams:
        """A plan's knobs (None: the default), fitted to the ``n`` participants."""
        params = cls.default(n, n_min)
        if degree is None and threshold is None:
            return params
        d = min(degree or params.degree, n - 1)
        return cls(n_min=n_min, degree=d, threshold=min(threshold or d // 2 + 1, d))


@dataclass
class SecureRoundResult:
    round_id: str
    setup: SecAggSetup
    total: npt.NDArray[np.int64]
    survivors: tuple[str, ...]  # whose inputs are in the sum (each was charged)
    dropped: dict[str, str] = field(default_factory=dict)  # node -> stage and reason
    noise_scales: dict[str, float] = field(default_factory=dict)
    bytes_to_node: dict[str, int] = field(default_factory=dict)
    bytes_from_node: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)


class _Round:
    def __init__(
        self,
        transport: Transport,
        base: TaskIds,
        round_id: str,
        setup: SecAggSetup,
        verifier: PeerVerifier | None,
        progress: Progress | None,
        measure_bytes: bool,
    ) -> None:
        self.transport = transport
        self.base = base
        self.round_id = round_id
        self.setup = setup
        self.verifier = verifier
        self.progress = progress
        self.measure_bytes = measure_bytes
        self.checkpoint: StageCheckpoint | None = None
        self.saved: dict[str, dict[str, SecAggReply]] = {}
        self.graph = graph.neighbours(round_id, list(setup.participants), setup.degree)
        self.dropped: dict[str, str] = {}
        self.sent: dict[str, int] = dict.fromkeys(setup.participants, 0)
        self.received: dict[str, int] = dict.fromkeys(setup.participants, 0)
        self.seconds: dict[str, float] = {}

    def _task(self, stage: SecAggStage) -> Task:
        return Task(
            task_id=self.base.task_id,
            run_id=self.base.run_id,
            analysis_id=self.base.analysis_id,
            timeout_ms=self.base.timeout_ms,
            spec=SecAggRequest(self.round_id, stage),
        )

    async def stage(
        self, name: str, requests: dict[str, SecAggStage], expect: type
    ) -> dict[str, SecAggReply]:
        restored = self.saved.get(name)
        if restored is not None:
            for node in requests:
                if node not in restored:
                    self.dropped[node] = f"{name}: no answer (before the coordinator restarted)"
            return {n: r for n, r in restored.items() if n in requests and isinstance(r, expect)}
        replies = await self._exchange(name, requests, expect)
        if self.checkpoint is not None:
            self.checkpoint.save(self.round_id, name, replies)
        return replies

    async def _exchange(
        self, name: str, requests: dict[str, SecAggStage], expect: type
    ) -> dict[str, SecAggReply]:
        started = time.perf_counter()
        tasks = {node: self._task(stage) for node, stage in requests.items()}
        if self.measure_bytes:  # costs one more encoding of every message: off by default
            for node, task in tasks.items():
                self.sent[node] += len(encode_coordinator_message(task))
        outcomes: list[NodeOutcome] = await collect(
            self.transport, tasks, self.progress, f"secure round, {name}"
        )
        replies: dict[str, SecAggReply] = {}
        for o in outcomes:
            a = o.answer
            if not isinstance(a, SecAggResponse):
                self.dropped[o.institution_id] = f"{name}: {o.reason or 'no answer'}"
                continue
            if self.measure_bytes:
                self.received[o.institution_id] += len(
                    encode_node_message(TaskResult(self.base.task_id, a))
                )
            if a.round_id != self.round_id or not isinstance(a.stage, expect):
                self.dropped[o.institution_id] = f"{name}: answered for another round or stage"
                continue
            replies[o.institution_id] = a.stage
        self.seconds[name] = time.perf_counter() - started
        return replies

    def drop(self, node: str, reason: str) -> None:
        self.dropped[node] = reason


async def run_secure_round(
    transport: Transport,
    base: TaskIds,
    query: SecureQuery,
    participants: list[str],
    params: SecureParams,
    *,
    verifier: PeerVerifier | None = None,
    progress: Progress | None = None,
    measure_bytes: bool = False,
    checkpoint: StageCheckpoint | None = None,
) -> SecureRoundResult:
    """One round over ``participants``; ``base`` supplies the task id, run and timeout.

    With a ``checkpoint`` every completed stage is saved, and a round found there is continued
    (same round id, saved stages not asked again) instead of started afresh.
    """
    people = tuple(sorted(participants))
    restored = checkpoint.load() if checkpoint is not None else None
    # A fresh id per attempt: a node never confuses a new round with an old one of the task.
    round_id = restored[0] if restored else f"{base.task_id}#{secrets.token_hex(6)}"
    setup = SecAggSetup(query, people, params.n_min, params.degree, params.threshold)
    r = _Round(transport, base, round_id, setup, verifier, progress, measure_bytes)
    r.checkpoint = checkpoint
    if restored:
        r.saved = restored[1]
        if progress:
            progress(
                f"continuing secure round {round_id} after {', '.join(restored[1]) or 'no stage'}"
            )
    n_cells = query.n_cells

    # 1. Keys.
    replies = await r.stage("setup", dict.fromkeys(people, setup), SignedKeys)
    advertised: dict[str, SignedKeys] = {}
    for node, k in replies.items():
        assert isinstance(k, SignedKeys)
        if k.institution_id != node:
            r.drop(node, "setup: advertised keys under another institution's name")
            continue
        if verifier is not None:
            try:
                verifier.verify(
                    k.certificate,
                    node,
                    keys_statement(
                        round_id, node, k.encryption_key, k.mask_key, k.self_mask_commitment
                    ),
                    k.signature,
                )
            except IdentityError as err:
                r.drop(node, f"setup: {err}")
                continue
        advertised[node] = k
    u1 = sorted(advertised)
    _enough(r, "setup", u1, params.n_min)

    # 2. Shares.
    requests: dict[str, SecAggStage] = {
        u: SecAggShareKeys(tuple(advertised[v] for v in r.graph[u] if v in advertised)) for u in u1
    }
    replies = await r.stage("share keys", requests, EncryptedShares)
    inbox: dict[str, list[EncryptedShare]] = {u: [] for u in u1}
    u2: list[str] = []
    for node, bundle in replies.items():
        assert isinstance(bundle, EncryptedShares)
        allowed = {v for v in r.graph[node] if v in advertised}
        if any(e.sender != node or e.recipient not in allowed for e in bundle.shares):
            r.drop(node, "share keys: addressed shares to nodes it does not neighbour")
            continue
        u2.append(node)
        for e in bundle.shares:
            inbox[e.recipient].append(e)
    u2.sort()
    _enough(r, "share keys", u2, params.n_min)
    u2_set = set(u2)

    # 3. Masked inputs.
    requests = {
        u: SecAggMaskedInput(tuple(u2), tuple(e for e in inbox[u] if e.sender in u2_set))
        for u in u2
    }
    replies = await r.stage("masked input", requests, MaskedVector)
    masked: dict[str, MaskedVector] = {}
    for node, m in replies.items():
        assert isinstance(m, MaskedVector)
        expected = tuple(v for v in r.graph[node] if v in u2_set)
        if m.length != n_cells:
            r.drop(node, f"masked input: {m.length} cells, the table has {n_cells}")
        elif m.masked_with != expected:
            r.drop(node, "masked input: masked with a different set of neighbours")
        else:
            masked[node] = m
    u3 = tuple(sorted(masked))
    charged = u3
    if len(u3) < params.n_min:
        raise SecureRoundFailed(
            f"only {len(u3)} masked inputs arrived; the plan needs {params.n_min} for its"
            " privacy guarantee, so nothing is released",
            charged,
        )

    # 4. Consistency: survivors sign U3.
    replies = await r.stage(
        "consistency check", dict.fromkeys(u3, SecAggConsistency(u3)), NodeSignature
    )
    signatures = {s.institution_id: s for s in replies.values() if isinstance(s, NodeSignature)}

    # 5. Unmask. A node checks, for each neighbour, signatures of that neighbour's neighbours:
    # it is sent exactly those (all of them in a small, all-to-all round).
    def needed(u: str) -> tuple[NodeSignature, ...]:
        two_hop = {w for v in r.graph[u] for w in r.graph[v]}
        return tuple(signatures[w] for w in sorted(two_hop) if w in signatures)

    replies = await r.stage(
        "unmasking", {u: SecAggUnmask(u3, needed(u)) for u in sorted(replies)}, RevealedShares
    )
    seed_shares: dict[str, list[shamir.Share]] = {}
    key_shares: dict[str, list[shamir.Share]] = {}
    for node, reveal in replies.items():
        assert isinstance(reveal, RevealedShares)
        for x in reveal.shares:
            if node not in r.graph.get(x.owner, ()):
                continue  # only a neighbour can hold a share; ignore anything else
            try:
                share = shamir.share_from_bytes(x.point, x.value)
            except ValueError:
                continue
            (seed_shares if x.self_mask else key_shares).setdefault(x.owner, []).append(share)

    unmask_started = time.perf_counter()
    total = np.zeros(n_cells, dtype=np.uint64)
    for u in u3:
        total = total + ring.from_bytes(masked[u].values, n_cells)
    t = params.threshold
    for u in u3:
        seed = _reconstruct(seed_shares.get(u, []), t, u, "self-mask seed", charged)
        if not hmac.compare_digest(
            self_mask_commitment(round_id, u, seed), advertised[u].self_mask_commitment
        ):
            raise SecureRoundFailed(
                f"the self-mask seed of {u} rebuilt from its neighbours' shares does not match"
                " its commitment (a share holder lied); nothing released",
                charged,
            )
        total = total - prg.mask_vector(seed, n_cells)
    for v in u2:
        if v in masked:
            continue
        private = _reconstruct(key_shares.get(v, []), t, v, "mask key", charged)
        dropped_keys = keys.KeyPair.from_private(private)
        if dropped_keys.public != advertised[v].mask_key:
            raise SecureRoundFailed(
                f"the mask key of {v} rebuilt from shares does not match its public key;"
                " nothing released",
                charged,
            )
        for u in u3:
            if v in masked[u].masked_with:
                seed = keys.mask_seed(dropped_keys.shared(advertised[u].mask_key), round_id, v, u)
                pair = prg.mask_vector(seed, n_cells)
                total = total - pair if u < v else total + pair
    return SecureRoundResult(
        round_id=round_id,
        setup=setup,
        total=ring.from_ring(np.asarray(total, dtype=np.uint64)).astype(np.int64),
        survivors=u3,
        dropped=dict(r.dropped),
        noise_scales={u: masked[u].noise_scale for u in u3},
        bytes_to_node=r.sent,
        bytes_from_node=r.received,
        stage_seconds={**r.seconds, "unmask arithmetic": time.perf_counter() - unmask_started},
    )


def _enough(r: _Round, stage: str, left: list[str], n_min: int) -> None:
    """Stop before anyone is charged once fewer than n_min are left (inputs are charged only
    when they are masked, the stage after these)."""
    if len(left) >= n_min:
        return
    why = "; ".join(f"{node}: {reason}" for node, reason in sorted(r.dropped.items()))
    raise SecureRoundFailed(
        f"only {len(left)} institutions are left after {stage}; the plan needs {n_min} for its"
        f" privacy guarantee, so no input was asked for and no one was charged"
        + (f" ({why})" if why else ""),
        (),
    )


def _reconstruct(
    shares: list[shamir.Share], t: int, owner: str, what: str, charged: tuple[str, ...]
) -> bytes:
    if len(shares) < t:
        raise SecureRoundFailed(
            f"only {len(shares)} of {owner}'s neighbours revealed a share of its {what}"
            f" ({t} needed): too many dropouts to unmask; nothing released",
            charged,
        )
    try:
        return shamir.combine(shares, t)
    except ValueError as err:
        raise SecureRoundFailed(
            f"the shares of {owner}'s {what} are inconsistent ({err}); nothing released", charged
        ) from err
