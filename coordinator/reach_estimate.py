"""From a reach round's noisy sum to estimates per key and overlaps between keys.

The sum's layout is fixed by the query (``protocols/reach.py``): a sketch holds, per copy and
key, ``buckets`` bucket counts and one count of customers without a match key; the ``pairs``
layout holds each pair of keys' within-institution people and a last cell of people. The math
is in ``privacy/reach.py``; this module only cuts the vector up and names the pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privacy.reach import (
    Moments,
    Overlap,
    ReachEstimate,
    mixing_overlap,
    mixing_people,
    moments,
    reach_from_sketches,
)
from protocols.reach import ReachQuery, pair_cells


@dataclass(frozen=True, slots=True)
class KeyEstimate:
    key: str
    moments: tuple[Moments, ...]  # one per copy of the sketch
    reach: ReachEstimate  # everyone, the keyless included
    keyless: float  # customers without a match key, counted once per institution (noisy)


def blocks(query: ReachQuery, total: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """A sketch's sum as a (copies, keys, buckets + 1) array."""
    values = np.asarray(total, dtype=np.float64)
    if query.layout != "sketch":
        raise ValueError("only a sketch has buckets")
    if values.size != query.n_cells:
        raise ValueError(f"the sum has {values.size} values, the query {query.n_cells}")
    return values.reshape(query.copies, len(query.by.keys), query.width)


def key_estimates(query: ReachQuery, total: npt.ArrayLike, noise_var: float) -> list[KeyEstimate]:
    """Reach per key; ``noise_var``: the variance of the noise in each summed cell."""
    cube = blocks(query, total)
    out = []
    for i, key in enumerate(query.by.keys):
        rows = cube[:, i, :]
        mos = tuple(moments(row[: query.buckets], noise_var) for row in rows)
        keyless = [float(row[query.buckets]) for row in rows]
        est = reach_from_sketches(mos, keyless, noise_var)
        out.append(KeyEstimate(key, mos, est, sum(keyless) / len(keyless)))
    return out


@dataclass(frozen=True, slots=True)
class PairCounts:
    """A ``pairs`` round's sum: within-institution people per pair, per key, and in all."""

    keys: tuple[str, ...]
    within: dict[tuple[str, str], float]  # a != b, both orders
    per_key: dict[str, float]  # people counted once per institution where they saw the key
    units: float  # people counted once per institution (everyone in the round)
    noise_var: float


def pair_counts(query: ReachQuery, total: npt.ArrayLike, noise_var: float) -> PairCounts:
    values = np.asarray(total, dtype=np.float64)
    if query.layout != "pairs" or values.size != query.n_cells:
        raise ValueError(f"the sum has {values.size} values, the pairs query {query.n_cells}")
    keys = query.by.keys
    within: dict[tuple[str, str], float] = {}
    per_key: dict[str, float] = {}
    for value, (a, b) in zip(values[:-1], pair_cells(len(keys)), strict=True):
        if a == b:
            per_key[keys[a]] = float(value)
        else:
            within[(keys[a], keys[b])] = within[(keys[b], keys[a])] = float(value)
    return PairCounts(keys, within, per_key, float(values[-1]), noise_var)


def pair_people(pairs: PairCounts, sector: ReachEstimate) -> dict[str, tuple[float, float]]:
    """Distinct people per key (and sd), under random mixing of the sector's cross-visits."""
    return {k: mixing_people(f, pairs.noise_var, sector) for k, f in pairs.per_key.items()}


def pair_overlaps(pairs: PairCounts, sector: ReachEstimate) -> dict[tuple[str, str], Overlap]:
    """People visiting both of every ordered pair of distinct keys."""
    return {
        (a, b): mixing_overlap(value, pairs.noise_var, pairs.per_key[a], pairs.per_key[b], sector)
        for (a, b), value in pairs.within.items()
    }


def type_overlaps(
    per_key: list[KeyEstimate], sector: ReachEstimate
) -> dict[tuple[str, str], Overlap]:
    """People visiting two institution types: nobody sees two types at one institution, so all
    of it is cross-institution pairs under random mixing (each type's F1 from its sketch)."""
    out = {}
    for a in per_key:
        for b in per_key:
            if a.key != b.key:
                out[(a.key, b.key)] = mixing_overlap(0.0, 0.0, a.reach.s1, b.reach.s1, sector)
    return out
