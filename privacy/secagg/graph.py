"""The neighbour graph of SecAgg+ (Bell et al. 2020): each node masks and shares with k others.

All-to-all SecAgg costs O(n^2); with k = O(log n) neighbours the cost per node is O(log n) and
the protocol still tolerates dropouts and a curious coordinator (Bell et al., Thm. 3.7, for a
random k-regular graph). We use the Harary graph H(k, n) on a pseudo-random ordering of the
participants: node i of the ordering neighbours the floor(k/2) nodes on either side of it on a
ring, and for odd k (which needs an even n) also the node opposite it.

The ordering is derived from public data only (SHA-256 of the round id and the sorted
participant list), so every node computes the same graph and a coordinator cannot hand-pick
anyone's neighbourhood.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType


def default_degree(n: int) -> int:
    """An even degree growing like 2 log2(n), capped by all-to-all for small federations."""
    if n <= 1:
        return 0
    k = 2 * math.ceil(math.log2(n))
    k += k % 2
    return min(k, n - 1)


def default_threshold(degree: int) -> int:
    """A strict majority of a node's neighbours must help to recover its secrets."""
    return degree // 2 + 1


def _ordering(round_id: str, participants: Sequence[str]) -> list[str]:
    def key(p: str) -> bytes:
        return hashlib.sha256(f"publiek-secagg-v1/order\x00{round_id}\x00{p}".encode()).digest()

    return sorted(participants, key=key)


def neighbours(
    round_id: str, participants: Sequence[str], degree: int
) -> Mapping[str, tuple[str, ...]]:
    """Each participant's neighbours (sorted); symmetric, no self-loops. Read-only."""
    people = sorted(set(participants))
    if len(people) != len(participants):
        raise ValueError("participants must be distinct")
    return _neighbours(round_id, tuple(people), degree)


@functools.lru_cache(maxsize=64)
def _neighbours(
    round_id: str, people: tuple[str, ...], degree: int
) -> Mapping[str, tuple[str, ...]]:
    # Every party of a round computes the same graph; in one process (tests, simulations)
    # it is computed once.
    n = len(people)
    if degree >= n - 1:
        return MappingProxyType({p: tuple(q for q in people if q != p) for p in people})
    if degree < 2 or (degree % 2 and n % 2):
        raise ValueError(
            f"degree must be at least 2, and even when n is odd (or n-1); got {degree} for n={n}"
        )
    ring = _ordering(round_id, people)
    half = degree // 2
    out: dict[str, set[str]] = {p: set() for p in people}
    for i, p in enumerate(ring):
        for step in range(1, half + 1):
            q = ring[(i + step) % n]
            out[p].add(q)
            out[q].add(p)
        if degree % 2:
            q = ring[(i + n // 2) % n]
            out[p].add(q)
            out[q].add(p)
    return MappingProxyType({p: tuple(sorted(qs)) for p, qs in out.items()})
