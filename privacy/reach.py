"""Estimating de-duplicated reach from a noisy, securely summed count sketch (post-processing).

The sketch (``protocols/reach.py``): every node counts its people per bucket of a hash they all
share, so person i, seen at K_i institutions, adds K_i to one bucket of the sum T. The
coordinator sees S = T + noise, where the noise is discrete Gaussian with a known variance v
per bucket. Nothing here adds noise; it only reads the released sum.

Why moments. No estimator can tell, bucket by bucket, whether a bucket's count is 0 or 1: that
would reveal one person at one institution, which the noise is there to hide. What the noisy sum
does pin down, over many buckets, are its low moments:

- F1 = sum_i K_i (people counted once per institution) = sum_b S_b, error variance m v;
- F2 = sum_i K_i^2 from sum_b S_b^2 after removing the noise's m v and the hash collisions'
  (F1^2 - F2) / m; error from the noise (2 m v^2 + 4 v sum T^2) and from which people the
  hash happens to put together (about F2^2 / m). The two pull ``buckets`` in opposite ways:
  m near F1 / (sqrt(2) v) balances them, and the error then grows only like sqrt(F1): a few
  percent of a regional audience, under a percent of a national one.

Reach U = sum_i 1 is not a moment, so it needs a model of K (how many institutions a person
visits): here K - 1 is geometric (P(K = k) = (1 - p) p^(k-1)), which has the long, thin tail the
sector shows (most people at one institution, a few omnivores at many). Then
E[K(K-1)] / E[K] = 2p / (1 - p), so p and U follow from F1 and F2 alone:

    U = 2 F1^2 / (F1 + F2),   p = (F2 - F1) / (F2 + F1).

The fitted distribution is S10. The model is the price of summing: its bias is measured
against the synthetic sector's person-level truth in ``benchmarks/reach.py`` and stated in
docs/reach.md; the intervals here cover the noise and the hashing, not the model.

Overlap between two populations a and b (two disciplines) sketched in the same round with the
same hash: sum_b S_a S_b is unbiased for sum_i K_ia K_ib plus collisions (the two noises are
independent), which counts people in both, weighted by how many institutions they saw each at.
"""

from __future__ import annotations

import math
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
    sum_squares: float  # unbiased estimate of sum_b T_b^2 (for cross-term variances)


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
    t2 = max(sum_squares, 0.0)
    f2_pos = max(f2, 0.0)
    f2_var = 2.0 * m * v * v + 4.0 * v * t2 + f2_pos * f2_pos / m
    return Moments(m, f1, m * v, f2, f2_var, sum_squares)


@dataclass(frozen=True, slots=True)
class ReachEstimate:
    reach: float  # distinct people
    reach_sd: float
    f1: float  # people counted once per institution
    p: float  # geometric parameter of K - 1
    p_sd: float

    @property
    def mean_institutions(self) -> float:
        return 1.0 / (1.0 - self.p) if self.p < 1 else math.inf

    def half_width(self) -> float:
        return Z95 * self.reach_sd


def geometric_reach(mo: Moments) -> ReachEstimate:
    """Distinct people from F1 and F2 under the geometric model of K - 1.

    F2 is held to [F1, 3 F1] (K >= 1 gives F2 >= F1; p is held below 1/2), so a sketch drowned
    in noise gives a bounded answer with a wide interval rather than nonsense.
    """
    f1 = max(mo.f1, 0.0)
    if f1 <= 0:
        return ReachEstimate(0.0, math.sqrt(mo.f1_var), 0.0, 0.0, 0.5)
    f2 = min(max(mo.f2, f1), 3.0 * f1)
    total = f1 + f2
    reach = 2.0 * f1 * f1 / total
    # Delta method (F1's error is small beside F2's; their covariance is left out).
    d1 = (4.0 * f1 * total - 2.0 * f1 * f1) / (total * total)
    d2 = -2.0 * f1 * f1 / (total * total)
    sd = math.sqrt(d1 * d1 * mo.f1_var + d2 * d2 * mo.f2_var)
    p = (f2 - f1) / total
    dp1 = -2.0 * f2 / (total * total)
    dp2 = 2.0 * f1 / (total * total)
    p_sd = math.sqrt(dp1 * dp1 * mo.f1_var + dp2 * dp2 * mo.f2_var)
    return ReachEstimate(reach, sd, f1, p, p_sd)


def with_keyless(est: ReachEstimate, keyless: float, keyless_var: float) -> ReachEstimate:
    """Reach including customers without a match key (no e-mail address).

    They are counted once per institution (the last cell of each key); assuming they visit as
    many institutions as the people with a key, reach grows by the same factor as F1 does:
    U * (F1 + E) / F1. The added uncertainty of E (noise) is carried into the interval.
    """
    if est.f1 <= 0:
        return est
    e = max(keyless, 0.0)
    factor = (est.f1 + e) / est.f1
    ratio = est.reach / est.f1
    sd = math.sqrt((est.reach_sd * factor) ** 2 + ratio * ratio * keyless_var)
    return ReachEstimate(est.reach * factor, sd, est.f1 + e, est.p, est.p_sd)


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
    both: float  # sum_i K_ia K_ib: people in both, weighted by institutions seen
    sd: float


def overlap(a: npt.ArrayLike, b: npt.ArrayLike, var_a: float, var_b: float) -> Overlap:
    """People in both of two populations sketched with the same hash, independent noise."""
    sa = np.asarray(a, dtype=np.float64)
    sb = np.asarray(b, dtype=np.float64)
    if sa.shape != sb.shape or sa.size < 2:
        raise ValueError("overlap needs two sketches of the same length (at least 2 buckets)")
    m = sa.size
    fa, fb = float(sa.sum()), float(sb.sum())
    cross = float(np.dot(sa, sb))
    both = (cross - fa * fb / m) / (1.0 - 1.0 / m)
    ta = max(float(np.dot(sa, sa)) - m * var_a, 0.0)
    tb = max(float(np.dot(sb, sb)) - m * var_b, 0.0)
    var = m * var_a * var_b + var_a * tb + var_b * ta + (ta / m) * (tb / m) * m
    return Overlap(both, math.sqrt(var))


def interval(value: float, sd: float) -> tuple[float, float]:
    """A 95% interval, held at or above zero (a count cannot be negative)."""
    return max(0.0, value - Z95 * sd), max(0.0, value + Z95 * sd)
