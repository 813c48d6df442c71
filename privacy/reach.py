"""Estimating de-duplicated reach from a noisy, securely summed count sketch (post-processing).

The sketch (``protocols/reach.py``): every node counts its people per bucket of a hash they all
share, so person i, seen at K_i institutions, adds K_i to one bucket of the sum T. The
coordinator sees S = T + noise, where the noise is discrete Gaussian with a known variance v
per bucket. Nothing here adds noise; it only reads the released sum.

Reach by inclusion-exclusion. For K >= 1, 1 = sum_{j>=1} (-1)^(j+1) C(K, j), so the number of
distinct people is U = S1 - S2 + S3 - ..., with S_j = sum_i C(K_i, j) (factorial moments). The
sum's first two moments pin S1 and S2 down:

- F1 = sum_b S_b = S1, error variance m v;
- F2 = sum_i K_i^2 = S1 + 2 S2, from sum_b S_b^2 after removing the noise's m v and the hash
  collisions' (F1^2 - F2) / m. Its error: the noise times the bucket counts' spread
  (4 v F2), the noise alone (2 m v^2) and which people the hash puts together (2 F2^2 / m:
  twice the collision term sum_{i<j} K_i K_j [same bucket]). The collisions shrink with m and
  the noise grows with it: m = F2 / v balances them, for a variance of about 8 v F2
  (docs/reach.md has the derivation).

S3 and beyond cannot be read: an unbiased S3 needs the third moment, whose noise term
(~ 6 m v^3 plus 9 v sum_b T_b^4) is orders of magnitude larger than S3 at any m at these
budgets. The tail (S3 - S4 + ...) is therefore taken from a one-parameter model fitted to S1
and S2: K - 1 geometric, P(K = k) = (1 - p) p^(k-1), for which S2 / S1 = p / (1 - p) and

    U = S1^2 / (S1 + S2),    p = S2 / (S1 + S2).

Its bias is measured against the synthetic sector's person-level truth (benchmarks/reach.py);
the intervals here cover the noise and the hashing, not the model.

Customers without a match key (no e-mail address) are counted once per institution in a cell of
their own (E). Each person-institution account is taken to hold an address independently with
probability r = F1 / (F1 + E) (binomial thinning). Thinning scales factorial moments exactly:
the keyed sketch's S_j is r^j times everyone's, so everyone's S1 = F1 + E and S2 = S2_keyed / r^2
(not "the keyless visit like the keyed and are different people", which double counts people
who have an address at one institution and none at another).

Overlap (S9) between keys a and b: people who visit both at one institution are counted by each
institution itself (the ``pairs`` layout, exact up to its noise), summed over institutions
(W_ab). People who see a at one institution and b at another cannot be counted per pair at
these budgets (an inner product of two noisy sketches has an error of several thousand people,
more than most pairs' overlap), so they are modelled: cross-institution pairs of the same
person (2 S2 ordered pairs, from the sector sketch) are taken to fall on keys in proportion to
how often each key is visited (F1_a / S1, F1_b / S1): cross_ab = 2 S2 F1_a F1_b / S1^2
("random mixing"). The same model removes from F1_a the people who see a at two institutions:
people_a = F1_a - S2 (F1_a / S1)^2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Moments:
    """F1 and F2 of one key's buckets, with the variance of each estimate."""

    buckets: int
    f1: float
    f1_var: float
    f2: float
    f2_var: float
    sum_squares: float  # unbiased estimate of sum_b T_b^2


def moments(counts: npt.ArrayLike, noise_var: float) -> Moments:
    """F1 and F2 from one key's noisy bucket counts (``noise_var``: noise variance per bucket)."""
    s = np.asarray(counts, dtype=np.float64)
    m = s.size
    if m < 2:
        raise ValueError("a sketch needs at least two buckets")
    v = float(noise_var)
    f1 = float(s.sum())
    sum_squares = float(np.dot(s, s)) - m * v
    f1_squared = f1 * f1 - m * v
    f2 = (sum_squares - f1_squared / m) / (1.0 - 1.0 / m)
    # The spread of the bucket counts around their mean (about F2): what the noise multiplies.
    spread = max(sum_squares - f1_squared / m, 0.0)
    f2_pos = max(f2, 0.0)
    f2_var = 4.0 * v * spread + 2.0 * m * v * v + 2.0 * f2_pos * f2_pos / m
    return Moments(m, f1, m * v, f2, f2_var, sum_squares)


@dataclass(frozen=True, slots=True)
class ReachEstimate:
    reach: float  # distinct people (everyone, the keyless included)
    reach_sd: float
    s1: float  # people counted once per institution (everyone)
    s1_var: float
    s2: float  # pairs of institutions the same person visited (everyone)
    s2_var: float
    coverage: float  # r: share of person-institution accounts with a match key

    @property
    def p(self) -> float:
        """The geometric parameter of K - 1."""
        total = self.s1 + self.s2
        return self.s2 / total if total > 0 else 0.0

    @property
    def p_sd(self) -> float:
        total = self.s1 + self.s2
        if total <= 0:
            return 0.5
        d1 = -self.s2 / (total * total)
        d2 = self.s1 / (total * total)
        return math.sqrt(d1 * d1 * self.s1_var + d2 * d2 * self.s2_var)

    @property
    def mean_institutions(self) -> float:
        return self.s1 / self.reach if self.reach > 0 else 0.0

    def half_width(self) -> float:
        return Z95 * self.reach_sd


def reach_from_sketches(
    copies: Sequence[Moments], keyless: Sequence[float], noise_var: float
) -> ReachEstimate:
    """Distinct people from one key's sketch copies (independent hashes, the same people).

    Each copy gives S1 and S2; their mean is used. S2 is held to [0, S1] (p at most 1/2), so a
    sketch drowned in noise gives a bounded answer with a wide interval rather than nonsense.
    """
    if not copies or len(copies) != len(keyless):
        raise ValueError("one keyless count per sketch copy")
    k = len(copies)
    f1 = sum(mo.f1 for mo in copies) / k
    f2 = sum(mo.f2 for mo in copies) / k
    e = max(sum(keyless) / k, 0.0)
    f1_var = sum(mo.f1_var for mo in copies) / (k * k)
    f2_var = sum(mo.f2_var for mo in copies) / (k * k)
    if f1 <= 0:
        return ReachEstimate(0.0, math.sqrt(f1_var), 0.0, f1_var, 0.0, 0.0, 1.0)
    s1 = f1 + e
    s1_var = f1_var + noise_var / k
    r = f1 / s1
    s2_keyed = min(max((f2 - f1) / 2.0, 0.0), f1)
    s2 = min(s2_keyed / (r * r), s1)
    # F2's error dominates S2's; F1's (a fraction of a percent) is left out of it.
    s2_var = (f2_var + f1_var) / (4.0 * r**4)
    total = s1 + s2
    reach = s1 * s1 / total
    d1 = (s1 * s1 + 2.0 * s1 * s2) / (total * total)
    d2 = -(s1 * s1) / (total * total)
    sd = math.sqrt(d1 * d1 * s1_var + d2 * d2 * s2_var)
    return ReachEstimate(reach, sd, s1, s1_var, s2, s2_var, r)


def frequency(est: ReachEstimate, top: int) -> list[tuple[float, float]]:
    """S10: people by institutions visited, 1 .. top-1 and 'top or more', with sds."""
    p, p_sd, u = est.p, est.p_sd, est.reach
    out = []
    for k in range(1, top + 1):
        share = (1.0 - p) * p ** (k - 1) if k < top else p ** (top - 1)
        # d share / d p, for the delta method on the share; reach's own error added in.
        if k < top:
            dshare = (k - 1) * p ** max(k - 2, 0) * (1.0 - p) - p ** (k - 1) if k > 1 else -1.0
        else:
            dshare = (top - 1) * p ** (top - 2)
        sd = math.sqrt((u * dshare * p_sd) ** 2 + (share * est.reach_sd) ** 2)
        out.append((u * share, sd))
    return out


@dataclass(frozen=True, slots=True)
class Overlap:
    both: float  # people visiting both keys
    sd: float  # noise of the within part and the sector's S2; not the mixing model


def mixing_people(f1_a: float, f1_a_var: float, sector: ReachEstimate) -> tuple[float, float]:
    """People of one key (counted once per institution: f1_a) seen once, under random mixing."""
    if sector.s1 <= 0:
        return max(f1_a, 0.0), math.sqrt(max(f1_a_var, 0.0))
    share = max(f1_a, 0.0) / sector.s1
    people = max(f1_a, 0.0) - sector.s2 * share * share
    d1 = 1.0 - 2.0 * sector.s2 * share / sector.s1
    var = d1 * d1 * f1_a_var + share**4 * sector.s2_var
    return people, math.sqrt(var)


def mixing_overlap(
    within: float,
    within_var: float,
    f1_a: float,
    f1_b: float,
    sector: ReachEstimate,
) -> Overlap:
    """People visiting both a and b: within one institution (counted) plus across institutions
    (random mixing of the sector's cross-institution pairs over keys)."""
    if sector.s1 <= 0:
        return Overlap(within, math.sqrt(max(within_var, 0.0)))
    fa, fb = max(f1_a, 0.0), max(f1_b, 0.0)
    cross = 2.0 * sector.s2 * fa * fb / (sector.s1 * sector.s1)
    var = within_var + (2.0 * fa * fb / sector.s1**2) ** 2 * sector.s2_var
    return Overlap(within + cross, math.sqrt(var))


def sector_buckets(units: float, noise_var: float, low: int, high: int) -> int:
    """Buckets for the sector sketch: the power of two nearest F2 / v.

    ``units``: a noisy count of people counted once per institution (everyone); F2 of the keyed
    sketch is taken as about that many (keyed ~ 80% of units, F2 ~ 1.3 F1 when a tenth of the
    people cross-visit); the variance is flat within a factor of two of the optimum.
    """
    target = max(units, 1.0) / max(noise_var, 1e-9)
    m = 2 ** round(math.log2(max(target, 1.0)))
    return int(min(max(m, low), high))


def interval(value: float, sd: float) -> tuple[float, float]:
    """A 95% interval, held at or above zero (a count cannot be negative)."""
    return max(0.0, value - Z95 * sd), max(0.0, value + Z95 * sd)
