"""The node's side of a secure-aggregation round: a state machine that refuses to be misled.

Per round a node holds fresh X25519 keys, a self-mask seed and the shares its neighbours sent
it. It answers each of the five stages once, in order; an identical re-send of a stage gets the
same answer (a retry reveals nothing new), anything else that goes backwards or repeats with
different content is refused. The checks that make a dishonest coordinator fail:

- keys: every neighbour's keys must be signed by a certificate the sector CA issued to that
  neighbour (no substituted keys, no man in the middle between two nodes);
- shares: they are end-to-end encrypted and authenticated between the two nodes, bound to the
  round and the direction;
- the survivor set: the node signs one survivor set per round, refuses sets smaller than the
  plan's n_min (that would release a sum with too little noise in it), and before revealing any
  share it checks that at least ``threshold`` of each neighbour's own neighbours signed that
  same set. With a strict-majority threshold, two honest neighbours of a node can then never be
  told different stories about it, so the coordinator never gets both a node's self-mask seed
  and its mask key (which together would unmask its input), as long as fewer than
  2 * threshold - degree of that node's neighbours collude with the coordinator;
- reveal: for a neighbour in the survivor set the node reveals a share of its self-mask seed,
  for one that dropped a share of its mask key, never both for the same neighbour.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from privacy.budget import Rho
from privacy.noise import IntVector
from privacy.secagg import channel, graph, keys, prg, ring, shamir
from protocols.errors import ErrorCode, PublicError
from protocols.identity import IdentityError, PeerVerifier, Signer
from protocols.secagg import (
    STAGE_NAMES,
    STAGE_ORDER,
    EncryptedShare,
    EncryptedShares,
    MaskedVector,
    NodeSignature,
    RevealedShare,
    RevealedShares,
    SecAggConsistency,
    SecAggMaskedInput,
    SecAggReply,
    SecAggRequest,
    SecAggSetup,
    SecAggShareKeys,
    SecAggStage,
    SecAggUnmask,
    SignedKeys,
    keys_statement,
    self_mask_commitment,
    survivors_statement,
)

ROUND_TTL_S = 6 * 3600.0  # a round not finished in six hours is abandoned
MAX_OPEN_ROUNDS = 64  # unfinished rounds at once: more is a coordinator misbehaving
# Finished rounds are kept (their last answer only, for an identical re-send after a coordinator
# restart) up to this many, oldest dropped first.
MAX_FINISHED_ROUNDS = 1024
_POINT_BYTES = 4


class SecAggRefused(PublicError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.SECAGG_REFUSED, message)


@dataclass(frozen=True, slots=True)
class Contribution:
    """What the node adds into the sum: its encoded, contribution-bounded, noised vector."""

    values: IntVector
    noise_scale: float
    rho: Rho


# Called once per round (with the round id and its setup), at the masked-input stage, after the
# node has verified everything it can: charges the ledger and returns the vector (or raises
# PublicError to refuse).
ContributionFn = Callable[[str, SecAggSetup], Contribution]


@dataclass
class _Round:
    round_id: str
    setup: SecAggSetup
    me: str
    neighbours: tuple[str, ...]
    graph: Mapping[str, tuple[str, ...]]
    enc: keys.KeyPair
    mask: keys.KeyPair
    self_seed: bytes
    started: float = field(default_factory=time.monotonic)
    done: int = -1  # index of the last stage answered
    replies: dict[int, tuple[SecAggStage, SecAggReply]] = field(default_factory=dict)
    peers: dict[str, SignedKeys] = field(default_factory=dict)  # verified neighbours' keys
    channel_secrets: dict[str, bytes] = field(default_factory=dict)  # per peer, both directions
    holders: list[str] = field(default_factory=list)  # neighbours I gave shares to
    received: dict[str, tuple[shamir.Share, shamir.Share]] = field(default_factory=dict)
    masked_with: list[str] = field(default_factory=list)
    signed: tuple[str, ...] | None = None


class SecAggClient:
    """One per node; serves any number of concurrent rounds. Thread-safe."""

    def __init__(
        self, signer: Signer, verifier: PeerVerifier, contribution: ContributionFn
    ) -> None:
        self.signer = signer
        self.me = signer.institution_id
        self.verifier = verifier
        self.contribution = contribution
        self._rounds: dict[str, _Round] = {}
        self._lock = threading.Lock()

    # --- dispatch ----------------------------------------------------------------------------

    def handle(self, request: SecAggRequest) -> SecAggReply:
        with self._lock:
            self._expire()
            index = request.index
            state = self._rounds.get(request.round_id)
            if state is None:
                if not isinstance(request.stage, SecAggSetup):
                    raise SecAggRefused(
                        f"round {request.round_id} is unknown here (never set up, expired, or"
                        " this node restarted); it cannot take part any more"
                    )
                finished = [r for r, st in self._rounds.items() if st.done == len(STAGE_ORDER) - 1]
                if len(self._rounds) - len(finished) >= MAX_OPEN_ROUNDS:
                    raise SecAggRefused("too many secure rounds open at once")
                for old in finished[: max(0, len(finished) - MAX_FINISHED_ROUNDS + 1)]:
                    del self._rounds[old]
                state = self._new_round(request.round_id, request.stage)
                self._rounds[request.round_id] = state
            name = STAGE_NAMES[type(request.stage)]
            if index <= state.done:
                answered, reply = state.replies[index]
                if answered == request.stage:  # frozen values: equal content, equal request
                    return reply  # a retry: the same answer, nothing new revealed
                raise SecAggRefused(
                    f"the {name} stage of round {request.round_id} was already answered and is"
                    " now asked again with different content; refusing a replayed stage"
                )
            if index != state.done + 1:
                expected = STAGE_NAMES[STAGE_ORDER[state.done + 1]]
                raise SecAggRefused(
                    f"round {request.round_id} expects the {expected} stage next, not {name}"
                )
            reply = self._answer(state, request)
            state.done = index
            state.replies[index] = (request.stage, reply)
            if isinstance(request.stage, SecAggUnmask):
                # Keep only the cached reply: the secrets of a finished round are dropped.
                state.self_seed = b""
                state.received.clear()
            return reply

    def _expire(self) -> None:
        now = time.monotonic()
        for rid in [r for r, s in self._rounds.items() if now - s.started > ROUND_TTL_S]:
            del self._rounds[rid]

    def _new_round(self, round_id: str, setup: SecAggSetup) -> _Round:
        if self.me not in setup.participants:
            raise SecAggRefused(f"{self.me} is not among the participants of round {round_id}")
        g = graph.neighbours(round_id, list(setup.participants), setup.degree)
        seed = os.urandom(prg.SEED_BYTES)
        return _Round(
            round_id=round_id,
            setup=setup,
            me=self.me,
            neighbours=g[self.me],
            graph=g,
            enc=keys.KeyPair.generate(),
            mask=keys.KeyPair.generate(),
            self_seed=seed,
        )

    def _answer(self, state: _Round, request: SecAggRequest) -> SecAggReply:
        stage = request.stage
        if isinstance(stage, SecAggSetup):
            return self._advertise(state, stage)
        if isinstance(stage, SecAggShareKeys):
            return self._share_keys(state, stage)
        if isinstance(stage, SecAggMaskedInput):
            return self._masked_input(state, stage)
        if isinstance(stage, SecAggConsistency):
            return self._consistency(state, stage)
        return self._unmask(state, stage)

    # --- stage 1 -----------------------------------------------------------------------------

    def _advertise(self, state: _Round, setup: SecAggSetup) -> SignedKeys:
        if setup != state.setup:
            raise SecAggRefused("the setup differs from the one this round started with")
        commitment = self_mask_commitment(state.round_id, self.me, state.self_seed)
        signature = self.signer.sign(
            keys_statement(state.round_id, self.me, state.enc.public, state.mask.public, commitment)
        )
        return SignedKeys(
            self.me,
            state.enc.public,
            state.mask.public,
            self.signer.certificate_pem,
            signature,
            commitment,
        )

    # --- stage 2 -----------------------------------------------------------------------------

    def _verify_keys(self, state: _Round, k: SignedKeys) -> None:
        for key in (k.encryption_key, k.mask_key):
            problem = keys.public_key_problem(key)
            if problem:
                raise SecAggRefused(f"the keys of {k.institution_id} are unusable: {problem}")
        try:
            self.verifier.verify(
                k.certificate,
                k.institution_id,
                keys_statement(
                    state.round_id,
                    k.institution_id,
                    k.encryption_key,
                    k.mask_key,
                    k.self_mask_commitment,
                ),
                k.signature,
            )
        except IdentityError as err:
            raise SecAggRefused(
                f"the keys presented for {k.institution_id} are not signed by it ({err});"
                " refusing possibly substituted keys"
            ) from err

    def _share_keys(self, state: _Round, stage: SecAggShareKeys) -> EncryptedShares:
        seen: set[str] = set()
        for k in stage.keys:
            if k.institution_id not in state.neighbours:
                raise SecAggRefused(
                    f"got keys of {k.institution_id}, who is not a neighbour of {self.me} in"
                    f" round {state.round_id}"
                )
            if k.institution_id in seen:
                raise SecAggRefused(f"got two sets of keys for {k.institution_id}")
            seen.add(k.institution_id)
            self._verify_keys(state, k)
            state.peers[k.institution_id] = k
        holders = sorted(state.peers)
        t = state.setup.threshold
        if len(holders) < t:
            raise SecAggRefused(
                f"only {len(holders)} of my {len(state.neighbours)} neighbours advertised keys;"
                f" at least {t} are needed to recover my secrets if I drop out"
            )
        points = {v: 1 + state.neighbours.index(v) for v in holders}
        seed_shares = shamir.split(state.self_seed, t, list(points.values()))
        key_shares = shamir.split(state.mask.private, t, list(points.values()))
        out = []
        for v in holders:
            p = points[v]
            plaintext = (
                p.to_bytes(_POINT_BYTES, "big")
                + seed_shares[p].to_bytes()
                + key_shares[p].to_bytes()
            )
            shared = state.enc.shared(state.peers[v].encryption_key)
            state.channel_secrets[v] = shared
            key = keys.channel_key(shared, state.round_id, self.me, v)
            out.append(
                EncryptedShare(self.me, v, channel.seal(key, state.round_id, self.me, v, plaintext))
            )
        state.holders = holders
        return EncryptedShares(tuple(out))

    # --- stage 3 -----------------------------------------------------------------------------

    def _masked_input(self, state: _Round, stage: SecAggMaskedInput) -> MaskedVector:
        u2 = set(stage.share_holders)
        if self.me not in u2:
            raise SecAggRefused(f"the share holders of round {state.round_id} omit {self.me}")
        if not u2 <= set(state.setup.participants):
            raise SecAggRefused("the share holders include institutions not in the round")
        if len(u2) < state.setup.n_min:
            # Fewer than n_min could ever be summed: answering would spend budget on a round
            # that cannot release anything.
            raise SecAggRefused(
                f"only {len(u2)} institutions hold shares in round {state.round_id}, fewer than"
                f" the {state.setup.n_min} it needs; not charging for a round that cannot release"
            )
        expected = sorted(v for v in state.peers if v in u2)
        by_sender: dict[str, EncryptedShare] = {}
        for e in stage.shares:
            if e.recipient != self.me:
                raise SecAggRefused(f"got a share addressed to {e.recipient}, not {self.me}")
            if e.sender not in expected or e.sender in by_sender:
                raise SecAggRefused(
                    f"got an unexpected or repeated share from {e.sender} in round {state.round_id}"
                )
            by_sender[e.sender] = e
        missing = [v for v in expected if v not in by_sender]
        if missing:
            raise SecAggRefused(
                f"the coordinator lists {', '.join(missing)} as share holders but relayed no"
                " share from them"
            )
        t = state.setup.threshold
        if len(expected) < t:
            raise SecAggRefused(
                f"only {len(expected)} neighbours of {self.me} hold shares; {t} are needed"
            )
        for v in expected:
            key = keys.channel_key(state.channel_secrets[v], state.round_id, v, self.me)
            try:
                plain = channel.open_sealed(
                    key, state.round_id, v, self.me, by_sender[v].ciphertext
                )
            except channel.ChannelError as err:
                raise SecAggRefused(str(err)) from err
            point = int.from_bytes(plain[:_POINT_BYTES], "big")
            body = plain[_POINT_BYTES:]
            if point != 1 + state.graph[v].index(self.me) or len(body) != 2 * shamir.SHARE_BYTES:
                raise SecAggRefused(f"the share from {v} is malformed")
            state.received[v] = (
                shamir.share_from_bytes(point, body[: shamir.SHARE_BYTES]),
                shamir.share_from_bytes(point, body[shamir.SHARE_BYTES :]),
            )
        contribution = self.contribution(state.round_id, state.setup)  # charges; may refuse
        n = contribution.values.shape[0]
        masked = ring.to_ring(contribution.values) + prg.mask_vector(state.self_seed, n)
        for v in expected:
            seed = keys.mask_seed(
                state.mask.shared(state.peers[v].mask_key), state.round_id, self.me, v
            )
            pair = prg.mask_vector(seed, n)
            masked = masked + pair if self.me < v else masked - pair
        state.masked_with = expected
        return MaskedVector(
            values=ring.to_bytes(np.asarray(masked, dtype=np.uint64)),
            length=n,
            masked_with=tuple(expected),
            noise_scale=contribution.noise_scale,
            rho=contribution.rho,
        )

    # --- stage 4 -----------------------------------------------------------------------------

    def _check_survivors(self, state: _Round, survivors: tuple[str, ...]) -> None:
        u3 = set(survivors)
        if self.me not in u3:
            raise SecAggRefused(f"the survivor set of round {state.round_id} omits {self.me}")
        if not u3 <= set(state.setup.participants):
            raise SecAggRefused("the survivor set includes institutions not in the round")
        if len(u3) < state.setup.n_min:
            raise SecAggRefused(
                f"only {len(u3)} contributions would be summed, fewer than the {state.setup.n_min}"
                " the plan's privacy guarantee needs; refusing to help unmask"
            )

    def _consistency(self, state: _Round, stage: SecAggConsistency) -> NodeSignature:
        self._check_survivors(state, stage.survivors)
        state.signed = stage.survivors
        return NodeSignature(
            self.me,
            self.signer.certificate_pem,
            self.signer.sign(survivors_statement(state.round_id, stage.survivors)),
        )

    # --- stage 5 -----------------------------------------------------------------------------

    def _unmask(self, state: _Round, stage: SecAggUnmask) -> RevealedShares:
        if stage.survivors != state.signed:
            raise SecAggRefused(
                "the survivor set to unmask differs from the one this node signed; the"
                " coordinator is telling nodes different stories"
            )
        self._check_survivors(state, stage.survivors)
        message = survivors_statement(state.round_id, stage.survivors)
        offered = {
            sig.institution_id: sig
            for sig in stage.signatures
            if sig.institution_id in stage.survivors
        }
        valid: set[str] = {self.me}  # this node signed exactly this set (checked above)
        invalid: set[str] = set()

        def confirmed(signer: str) -> bool:
            # Verify lazily and once: only signers that some neighbour's quorum needs.
            if signer in valid:
                return True
            if signer in invalid or signer not in offered:
                return False
            sig = offered[signer]
            try:
                self.verifier.verify(sig.certificate, signer, message, sig.signature)
            except IdentityError:
                invalid.add(signer)  # an invalid signature simply does not count
                return False
            valid.add(signer)
            return True

        t = state.setup.threshold
        for v in state.received:
            # Already-verified signers first, so overlapping neighbourhoods cost nothing extra.
            candidates = sorted(state.graph[v], key=lambda s: s not in valid)
            signers = 0
            for candidate in candidates:
                if signers >= t:
                    break
                signers += confirmed(candidate)
            if signers < t:
                raise SecAggRefused(
                    f"only {signers} of {v}'s neighbours confirmed this survivor set ({t}"
                    " needed); refusing to reveal shares that could be inconsistent"
                )
        u3 = set(stage.survivors)
        shares = []
        for v, (seed_share, key_share) in sorted(state.received.items()):
            alive = v in u3
            share = seed_share if alive else key_share
            shares.append(RevealedShare(v, alive, share.x, share.to_bytes()))
        return RevealedShares(tuple(shares))
