"""Typed messages of a secure-aggregation round, and the statements nodes sign in it.

A round has five stages (see ``v1/federation.proto``). These values are validated on
construction like the rest of ``protocols.messages``; what they *mean* for a node (is this key
really signed by that institution? is this the survivor set everyone else saw?) is checked by the
node's round state machine in ``node/secure.py``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from dataclasses import dataclass
from typing import Final

from privacy.budget import Rho
from privacy.distributed import DistributedGaussian
from protocols.errors import ErrorCode, MalformedMessage
from protocols.identity import statement
from protocols.kmeans import KMeansQuery
from protocols.messages import MAX_ID_CHARS, HistogramQuery, ReleaseMode
from protocols.reach import ReachQuery

MAX_PARTICIPANTS: Final[int] = 100_000
MAX_CERTIFICATE_BYTES: Final[int] = 16_384
MAX_VECTOR_LENGTH: Final[int] = 1_000_000


def _bad(message: str) -> MalformedMessage:
    return MalformedMessage(message, ErrorCode.INVALID_TASK)


def _check_ids(kind: str, ids: tuple[str, ...], *, sorted_unique: bool = True) -> None:
    if len(ids) > MAX_PARTICIPANTS:
        raise _bad(f"{kind} lists more than {MAX_PARTICIPANTS} institutions")
    problem = _id_list_problem(ids, sorted_unique)
    if problem:
        raise _bad(f"{kind} {problem}")


@functools.lru_cache(maxsize=1024)
def _id_list_problem(ids: tuple[str, ...], sorted_unique: bool) -> str | None:
    # The same participant and survivor lists arrive at every node of a round: check each once.
    for i in ids:
        if not i or len(i) > MAX_ID_CHARS or not i.isprintable():
            return "contains an invalid institution id"
    if sorted_unique and any(a >= b for a, b in itertools.pairwise(ids)):
        return "must be sorted and without repeats"
    return None


# The kinds of query a secure round can sum. Each has ``mode``, ``rho``, ``statistic``,
# ``n_cells`` (the length of the summed vector) and the ``l2_sensitivity`` and
# ``l1_sensitivity`` of one privacy unit's contribution to it, which is all the round and its
# noise need. A new kind (e.g. reach sketches) is added here, as a field of the setup's ``query``
# oneof in v1/federation.proto with its case in serde.py, and as a contribution in
# node/handler.py; the round itself (node/secure.py, coordinator/secure.py) does not change.
SecureQuery = HistogramQuery | KMeansQuery | ReachQuery


@dataclass(frozen=True, slots=True)
class SecAggSetup:
    query: SecureQuery
    participants: tuple[str, ...]
    n_min: int
    degree: int
    threshold: int

    def __post_init__(self) -> None:
        if self.query.mode is not ReleaseMode.SECURE:
            raise _bad("a secure-aggregation round must carry a query in secure mode")
        _check_ids("participants", self.participants)
        n = len(self.participants)
        if n < 2:
            raise _bad("secure aggregation needs at least two participants")
        if not 1 <= self.n_min <= n:
            raise _bad(f"n_min must be between 1 and the {n} participants, got {self.n_min}")
        if not 1 <= self.degree <= n - 1:
            raise _bad(f"degree must be between 1 and {n - 1}, got {self.degree}")
        if not 1 <= self.threshold <= self.degree:
            raise _bad(f"threshold must be between 1 and the degree, got {self.threshold}")


@dataclass(frozen=True, slots=True)
class SignedKeys:
    institution_id: str
    encryption_key: bytes
    mask_key: bytes
    certificate: bytes
    signature: bytes
    self_mask_commitment: bytes

    def __post_init__(self) -> None:
        _check_ids("signed keys", (self.institution_id,))
        if len(self.certificate) > MAX_CERTIFICATE_BYTES:
            raise _bad("certificate too large")


@dataclass(frozen=True, slots=True)
class SecAggShareKeys:
    keys: tuple[SignedKeys, ...]


@dataclass(frozen=True, slots=True)
class EncryptedShare:
    sender: str
    recipient: str
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class EncryptedShares:
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True, slots=True)
class SecAggMaskedInput:
    share_holders: tuple[str, ...]
    shares: tuple[EncryptedShare, ...]

    def __post_init__(self) -> None:
        _check_ids("share holders", self.share_holders)


@dataclass(frozen=True, slots=True)
class MaskedVector:
    values: bytes
    length: int
    masked_with: tuple[str, ...]
    noise_scale: float
    rho: Rho

    def __post_init__(self) -> None:
        if not 0 <= self.length <= MAX_VECTOR_LENGTH or len(self.values) != 8 * self.length:
            raise MalformedMessage("masked vector length does not match its bytes")
        _check_ids("masked_with", self.masked_with)


@dataclass(frozen=True, slots=True)
class SecAggConsistency:
    survivors: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_ids("survivors", self.survivors)


@dataclass(frozen=True, slots=True)
class NodeSignature:
    institution_id: str
    certificate: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SecAggUnmask:
    survivors: tuple[str, ...]
    signatures: tuple[NodeSignature, ...]

    def __post_init__(self) -> None:
        _check_ids("survivors", self.survivors)


@dataclass(frozen=True, slots=True)
class RevealedShare:
    owner: str
    self_mask: bool
    point: int
    value: bytes


@dataclass(frozen=True, slots=True)
class RevealedShares:
    shares: tuple[RevealedShare, ...]


SecAggStage = SecAggSetup | SecAggShareKeys | SecAggMaskedInput | SecAggConsistency | SecAggUnmask
SecAggReply = SignedKeys | EncryptedShares | MaskedVector | NodeSignature | RevealedShares

STAGE_ORDER: Final[tuple[type, ...]] = (
    SecAggSetup,
    SecAggShareKeys,
    SecAggMaskedInput,
    SecAggConsistency,
    SecAggUnmask,
)
STAGE_NAMES: Final[dict[type, str]] = {
    SecAggSetup: "setup",
    SecAggShareKeys: "share keys",
    SecAggMaskedInput: "masked input",
    SecAggConsistency: "consistency check",
    SecAggUnmask: "unmasking",
}


@dataclass(frozen=True, slots=True)
class SecAggRequest:
    round_id: str
    stage: SecAggStage

    def __post_init__(self) -> None:
        _check_ids("round_id", (self.round_id,))

    @property
    def index(self) -> int:
        return STAGE_ORDER.index(type(self.stage))


@dataclass(frozen=True, slots=True)
class SecAggResponse:
    round_id: str
    stage: SecAggReply


def keys_statement(
    round_id: str, institution_id: str, encryption: bytes, mask: bytes, commitment: bytes
) -> bytes:
    return statement("secagg/keys", round_id, institution_id, encryption, mask, commitment)


def self_mask_commitment(round_id: str, institution_id: str, seed: bytes) -> bytes:
    return hashlib.sha256(statement("secagg/self-mask", round_id, institution_id, seed)).digest()


@functools.lru_cache(maxsize=256)
def survivors_statement(round_id: str, survivors: tuple[str, ...]) -> bytes:
    return statement("secagg/survivors", round_id, *survivors)


def noise_share(setup: SecAggSetup) -> DistributedGaussian:
    """The distributed noise a round's setup implies; both sides compute it the same way.

    Nodes add a share of this scale; the coordinator checks the scales nodes report against it
    and states the release's error bars from it.
    """
    q = setup.query
    return _distributed(
        q.l2_sensitivity,
        float(q.l1_sensitivity),
        q.n_cells,
        q.rho,
        setup.n_min,
        len(setup.participants),
    )


@functools.lru_cache(maxsize=256)
def _distributed(
    l2: float, l1: float, dim: int, rho: Rho, n_min: int, n_max: int
) -> DistributedGaussian:
    # The same few parameters recur at every node of a round and in every round of a k-means
    # fit; the bisection behind the scale takes a few milliseconds each time.
    return DistributedGaussian.for_budget(l2, l1, dim, rho, n_min, n_max)
