"""Secure aggregation: exact sums, dropouts at every stage, and primitives that must hold."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.secure import SecureParams, SecureRoundFailed
from privacy.secagg import channel, graph, keys, prg, ring, shamir
from tests.secagg_harness import STAGES, make_federation, run


@pytest.mark.parametrize("n", [3, 10, 50])
def test_exact_sum_of_integer_vectors(tmp_path: Path, n: int) -> None:
    fed = make_federation(tmp_path, n, length=40, seed=n)
    result = run(fed)
    assert result.survivors == tuple(sorted(fed.vectors))
    assert np.array_equal(result.total, sum(fed.vectors.values()))
    assert result.dropped == {}


# A vanishing node costs the round its deadline (the coordinator waits for it to reconnect), and
# the deadline bounds the honest nodes' work too: 600 ms made healthy nodes miss it on a loaded
# 2-core machine (40 nodes on a few threads); 3 s keeps the tests quick with 5x headroom.
DEADLINE_MS = 3_000


@pytest.mark.parametrize("stage", STAGES)
def test_dropouts_at_every_stage_still_give_the_exact_sum(tmp_path: Path, stage: str) -> None:
    fed = make_federation(tmp_path, 12, length=30, seed=3)
    gone = ["inst-002", "inst-007"]
    fed.vanish_at = dict.fromkeys(gone, stage)
    result = run(fed, timeout_ms=DEADLINE_MS)
    if stage in ("setup", "share keys", "masked input"):
        # They never delivered a masked input: the sum is over everyone else.
        expected_in = [i for i in sorted(fed.vectors) if i not in gone]
    else:
        # Their masked inputs arrived; their masks are rebuilt from their neighbours' shares.
        expected_in = sorted(fed.vectors)
    assert list(result.survivors) == expected_in
    assert np.array_equal(result.total, sum(fed.vectors[i] for i in expected_in))
    assert set(result.dropped) == set(gone)
    assert all(reason.startswith(stage) for reason in result.dropped.values())


def test_too_many_dropouts_fail_loudly_and_name_who_was_charged(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, 10, length=10, seed=4)
    # After the masked input, 6 of 10 vanish: their neighbours cannot all be recovered.
    fed.vanish_at = {f"inst-00{i}": "consistency check" for i in range(6)}
    with pytest.raises(SecureRoundFailed, match="nothing released") as err:
        run(fed, SecureParams(n_min=3, degree=4, threshold=3), timeout_ms=DEADLINE_MS)
    assert err.value.charged == tuple(sorted(fed.vectors))  # all sent masked inputs
    assert sorted(fed.contributed) == sorted(fed.vectors)


def test_fewer_survivors_than_n_min_release_nothing(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, 6, length=10, seed=5)
    fed.vanish_at = {"inst-000": "setup", "inst-001": "share keys", "inst-002": "masked input"}
    with pytest.raises(SecureRoundFailed, match="needs 4 for its privacy guarantee"):
        run(fed, SecureParams(n_min=4, degree=5, threshold=3), timeout_ms=DEADLINE_MS)


def test_sparse_graph_for_large_federations(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, 40, length=8, seed=6)
    params = SecureParams.default(40, n_min=20)
    assert params.degree == 12 and params.threshold == 7  # 2 * ceil(log2 40), majority
    fed.vanish_at = {"inst-005": "masked input", "inst-017": "unmasking"}
    result = run(fed, params, timeout_ms=DEADLINE_MS, measure_bytes=True)
    expected = [i for i in sorted(fed.vectors) if i != "inst-005"]
    assert np.array_equal(result.total, sum(fed.vectors[i] for i in expected))
    # Each node talks to its neighbours only: far fewer bytes than all-to-all.
    assert max(result.bytes_from_node.values()) < 40 * 2 * 300


# --- primitives -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(2, 12), st.data())
def test_shamir_any_threshold_subset_reconstructs(
    secret: bytes, n: int, data: st.DataObject
) -> None:
    t = data.draw(st.integers(1, n))
    shares = list(shamir.split(secret, t, list(range(1, n + 1))).values())
    subset = data.draw(st.permutations(shares))[:t]
    assert shamir.combine(subset, t) == secret


def test_shamir_fewer_shares_are_refused_and_wrong_ones_do_not_reconstruct() -> None:
    secret = os.urandom(32)
    shares = list(shamir.split(secret, 3, [1, 2, 3, 4]).values())
    with pytest.raises(ValueError, match="need 3"):
        shamir.combine(shares[:2], 3)
    # A lying share holder yields another value (caught later by the seed's commitment).
    tampered = [shares[0], shares[1], shamir.Share(shares[2].x, (shares[2].y + 1) % shamir.PRIME)]
    assert shamir.combine(tampered, 3) != secret


def test_pairwise_masks_cancel_and_are_bound_to_the_round() -> None:
    a, b = keys.KeyPair.generate(), keys.KeyPair.generate()
    ab = keys.mask_seed(a.shared(b.public), "r1", "inst-a", "inst-b")
    ba = keys.mask_seed(b.shared(a.public), "r1", "inst-b", "inst-a")
    assert ab == ba
    assert keys.mask_seed(a.shared(b.public), "r2", "inst-a", "inst-b") != ab
    x = ring.to_ring(np.array([5, -7, 2**62], dtype=np.int64))
    m = prg.mask_vector(ab, 3)
    assert np.array_equal(ring.from_ring((x + m) - m), ring.from_ring(x))


def test_channel_refuses_tampered_or_misrouted_shares() -> None:
    key = os.urandom(32)
    sealed = channel.seal(key, "r1", "inst-a", "inst-b", b"share")
    assert channel.open_sealed(key, "r1", "inst-a", "inst-b", sealed) == b"share"
    with pytest.raises(channel.ChannelError):
        channel.open_sealed(key, "r1", "inst-a", "inst-c", sealed)  # redirected
    with pytest.raises(channel.ChannelError):
        channel.open_sealed(key, "r2", "inst-a", "inst-b", sealed)  # replayed in another round
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(channel.ChannelError):
        channel.open_sealed(key, "r1", "inst-a", "inst-b", flipped)


@pytest.mark.parametrize("n", [5, 21, 100, 1000])
def test_neighbour_graph_is_symmetric_regular_and_public(n: int) -> None:
    people = [f"p{i}" for i in range(n)]
    k = graph.default_degree(n)
    g = graph.neighbours("round-1", people, k)
    assert all(len(v) == k for v in g.values())
    assert all(p in g[q] for p, qs in g.items() for q in qs)
    assert all(p not in qs for p, qs in g.items())
    assert g == graph.neighbours("round-1", list(reversed(people)), k)  # order-free
    if n > k + 1:
        assert g != graph.neighbours("round-2", people, k)  # a fresh graph per round
    assert k <= 2 * (n.bit_length() + 1)  # O(log n)


def test_odd_degree_for_an_even_number_of_nodes() -> None:
    people = [f"p{i}" for i in range(100)]
    g = graph.neighbours("r", people, 11)  # Flower's default-style share count
    assert all(len(v) == 11 for v in g.values())
    assert all(p in g[q] for p, qs in g.items() for q in qs)
    with pytest.raises(ValueError, match="even when n is odd"):
        graph.neighbours("r", people[:99], 11)


def test_low_order_x25519_keys_are_refused() -> None:
    a = keys.KeyPair.generate()
    # OpenSSL refuses the all-zero shared secret itself; our own check backs it up.
    with pytest.raises(ValueError, match=r"shared key|all-zero secret"):
        keys.agree(a.private, b"\x00" * 32, b"info")
