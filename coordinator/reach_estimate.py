"""From a reach round's noisy sum to estimates per key and overlaps between keys.

The sum's layout is fixed by the query (``protocols/reach.py``): per key, ``buckets`` bucket
counts and one count of customers without a match key. The math is in ``privacy/reach.py``;
this module only cuts the vector up and names the pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privacy.reach import (
    Moments,
    Overlap,
    ReachEstimate,
    geometric_reach,
    moments,
    overlap,
    with_keyless,
)
from protocols.reach import ReachQuery


@dataclass(frozen=True, slots=True)
class KeyEstimate:
    key: str
    moments: Moments
    keyed: ReachEstimate  # people with a match key
    reach: ReachEstimate  # everyone, with the coverage correction
    keyless: float  # customers without a match key, counted once per institution (noisy)


def blocks(query: ReachQuery, total: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The sum as a (keys, buckets + 1) matrix."""
    values = np.asarray(total, dtype=np.float64)
    if values.size != query.n_cells:
        raise ValueError(f"the sum has {values.size} values, the query {query.n_cells}")
    return values.reshape(len(query.by.keys), query.width)


def key_estimates(query: ReachQuery, total: npt.ArrayLike, noise_var: float) -> list[KeyEstimate]:
    """Reach per key; ``noise_var``: the variance of the noise in each summed cell."""
    out = []
    for key, row in zip(query.by.keys, blocks(query, total), strict=True):
        mo = moments(row[: query.buckets], noise_var)
        keyed = geometric_reach(mo)
        keyless = float(row[query.buckets])
        out.append(KeyEstimate(key, mo, keyed, with_keyless(keyed, keyless, noise_var), keyless))
    return out


def key_overlaps(
    query: ReachQuery, total: npt.ArrayLike, noise_var: float
) -> dict[tuple[str, str], Overlap]:
    """People in both of every pair of keys (a before b in the key order)."""
    rows = blocks(query, total)[:, : query.buckets]
    keys = query.by.keys
    out = {}
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            out[(keys[i], keys[j])] = overlap(rows[i], rows[j], noise_var, noise_var)
    return out
