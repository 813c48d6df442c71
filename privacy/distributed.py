"""Distributed discrete Gaussian noise: each node adds a share, the secure sum carries the whole.

In secure mode the coordinator sees only the sum over nodes, so no node has to add the full
noise: each adds an independent discrete Gaussian share N_Z(0, s^2) to its encoded vector before
masking. A sum of discrete Gaussians is not exactly a discrete Gaussian, but it is close, and the
loss is bounded by Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation" (ICML 2021), Theorem 1 with Proposition 14:

    with k independent shares of scale s, sigma_k = sqrt(k) * s and
    tau_k = 10 * sum_{j=1}^{k-1} exp(-2 pi^2 s^2 j / (j + 1)),
    the sum is rho_k-zCDP for a query of L2 sensitivity D2, L1 sensitivity D1, dimension d, with
    rho_k = 1/2 * min( (D2/sigma_k)^2 + 2 (D1/sigma_k) tau_k + tau_k^2 d,
                       (D2/sigma_k + sqrt(d) tau_k)^2 ).

(Their Proposition 14 has a third, smaller term with an additive tau*d that is Renyi-DP but not
of zCDP form; we leave it out, which only makes our bound more conservative.)

The guarantee, as the plan states it with n_min:
- ``for_budget`` picks the smallest share scale s such that rho_k <= rho for *every* k from
  n_min up to the number of participants, so if at least n_min honest nodes' shares are in the
  sum, the release costs at most the declared rho, as if one trusted party had added noise of
  scale sqrt(n_min) * s once.
- With fewer than n_min shares the loss is ``rho_bound(k)`` > rho (roughly rho * n_min / k):
  a round must then release nothing. Nodes that collude with the coordinator count as dropped:
  their shares are known to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privacy.budget import InvalidBudget, Rho
from privacy.intervals import sum_half_width
from privacy.noise import DiscreteGaussian

MAX_NODES = 100_000


def _tau(share_scale: float, k_max: int) -> np.ndarray:
    """tau_k for k = 1..k_max (index k-1)."""
    j = np.arange(1, max(k_max, 1), dtype=np.float64)
    terms = np.exp(-2.0 * math.pi**2 * share_scale**2 * j / (j + 1.0))
    return 10.0 * np.concatenate(([0.0], np.cumsum(terms)))


def _rho_bounds(
    share_scale: float, l2: float, l1: float, dim: int, k_from: int, k_to: int
) -> np.ndarray:
    tau = _tau(share_scale, k_to)[k_from - 1 : k_to]
    k = np.arange(k_from, k_to + 1, dtype=np.float64)
    sigma = np.sqrt(k) * share_scale
    a = (l2 / sigma) ** 2 + 2.0 * (l1 / sigma) * tau + tau**2 * dim
    b = (l2 / sigma + math.sqrt(dim) * tau) ** 2
    return np.asarray(0.5 * np.minimum(a, b))


@dataclass(frozen=True, slots=True)
class DistributedGaussian:
    l2_sensitivity: float
    l1_sensitivity: float
    dim: int
    n_min: int
    n_max: int
    share_scale: float

    def __post_init__(self) -> None:
        if not (1 <= self.n_min <= self.n_max <= MAX_NODES):
            raise InvalidBudget(
                f"need 1 <= n_min <= n_max <= {MAX_NODES}, got {self.n_min}, {self.n_max}"
            )
        if not (self.share_scale > 0 and math.isfinite(self.share_scale)):
            raise InvalidBudget(f"share scale must be positive, got {self.share_scale}")

    @classmethod
    def for_budget(
        cls, l2: float, l1: float, dim: int, rho: Rho, n_min: int, n_max: int
    ) -> DistributedGaussian:
        """Smallest share scale whose sum over any n_min..n_max shares costs at most rho."""
        if rho.is_zero():
            raise InvalidBudget("a release at rho = 0 would need infinite noise")
        if not (l2 > 0 and l1 > 0 and dim >= 1):
            raise InvalidBudget("sensitivities must be positive and dim at least 1")
        target = float(rho)
        central = l2 / math.sqrt(2.0 * target)

        def worst(s: float) -> float:
            return float(_rho_bounds(s, l2, l1, dim, n_min, n_max).max())

        lo = central / math.sqrt(n_min)  # the ideal share: never enough once tau > 0
        hi = lo * 1.01
        while worst(hi) > target:
            hi *= 2.0
        for _ in range(100):  # bisect to float precision, keeping hi feasible
            mid = (lo + hi) / 2.0
            if mid in (lo, hi):
                break
            if worst(mid) > target:
                lo = mid
            else:
                hi = mid
        return cls(l2, l1, dim, n_min, n_max, hi)

    def rho_bound(self, survivors: int) -> float:
        """zCDP loss of the sum when exactly ``survivors`` honest shares are in it."""
        if survivors < 1:
            return math.inf
        return float(
            _rho_bounds(
                self.share_scale,
                self.l2_sensitivity,
                self.l1_sensitivity,
                self.dim,
                survivors,
                survivors,
            )[0]
        )

    @property
    def share(self) -> DiscreteGaussian:
        """The sampler each node adds with (OpenDP's discrete Gaussian at the share scale)."""
        return DiscreteGaussian(self.share_scale)

    def total_scale(self, survivors: int) -> float:
        return math.sqrt(survivors) * self.share_scale

    def half_width(self, survivors: int, confidence: float = 0.95) -> float:
        return sum_half_width([self.share_scale**2] * survivors, confidence)
