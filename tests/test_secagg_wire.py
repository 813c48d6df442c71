"""What a node sends in secure mode looks uniformly random and never contains its vector.

A chi-square test of the byte frequencies and a Kolmogorov-Smirnov test of the 64-bit values of
every masked vector captured in its wire encoding, at significance ALPHA = 1e-6 each (false alarm
probability 2e-6 for this file). The same tests reject the plain vectors they would have been
without masks, so they can tell the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import stats

from privacy.secagg import ring
from protocols.messages import Task, TaskResult
from protocols.secagg import MaskedVector, SecAggResponse
from protocols.serde import decode_node_message, encode_node_message
from tests.secagg_harness import make_federation, run

ALPHA = 1e-6


def uniformity_p_values(data: bytes) -> tuple[float, float]:
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    chi = stats.chisquare(counts).pvalue
    values = np.frombuffer(data, dtype="<u8").astype(np.float64) / 2.0**64
    ks = stats.kstest(values, "uniform").pvalue
    return float(chi), float(ks)


def test_masked_inputs_are_uniform_and_hide_the_vector(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, 10, length=3000)
    rng = np.random.default_rng(1)
    # Realistic contributions: small non-negative counts, far from uniform bytes.
    fed.vectors = {i: rng.poisson(50, 3000).astype(np.int64) for i in fed.vectors}
    wire: list[bytes] = []
    for node in fed.vectors:
        inner = fed.handler(node)

        def tapped(task: Task, inner: Callable[[Task], TaskResult] = inner) -> TaskResult:
            result = inner(task)
            wire.append(encode_node_message(result))  # exactly what goes on the wire
            return result

        assert fed.transport is not None
        fed.transport._handlers[node] = tapped
    result = run(fed)
    assert np.array_equal(result.total, sum(fed.vectors.values()))

    masked: dict[int, bytes] = {}
    for blob in wire:
        msg = decode_node_message(blob)
        assert isinstance(msg, TaskResult) and isinstance(msg.outcome, SecAggResponse)
        if isinstance(msg.outcome.stage, MaskedVector):
            masked[len(masked)] = msg.outcome.stage.values
    assert len(masked) == 10
    sent = b"".join(masked.values())
    chi, ks = uniformity_p_values(sent)
    assert chi > ALPHA and ks > ALPHA

    plain = b"".join(ring.to_bytes(ring.to_ring(v)) for v in fed.vectors.values())
    chi_plain, ks_plain = uniformity_p_values(plain)
    assert chi_plain < ALPHA and ks_plain < ALPHA  # the test sees structure when it is there

    everything = b"".join(wire)
    for v in fed.vectors.values():
        encoded = ring.to_bytes(ring.to_ring(v))
        assert encoded not in everything
        assert encoded[:64] not in everything  # not even its first eight cells
