"""Ordinary weighted k-means on the private coreset: post-processing, so it costs no privacy.

The coreset is the tree's leaves: each a noisy mean with a noisy count as its weight. Because
nothing here touches the data again, it can afford what a private algorithm cannot: k-means++
seeding (Arthur & Vassilvitskii 2007) with many restarts, each run to convergence, keeping the
lowest weighted cost, as scikit-learn's ``n_init`` does on real data.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from privacy.clustering.public_random import PublicRandom
from privacy.clustering.space import FloatMatrix
from privacy.clustering.steps import nearest


def weighted_cost(points: FloatMatrix, weights: npt.ArrayLike, centres: FloatMatrix) -> float:
    w = np.asarray(weights, dtype=np.float64)
    d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    return float((w * d2).sum())


def _seed(
    points: FloatMatrix, w: npt.NDArray[np.float64], k: int, rng: PublicRandom
) -> FloatMatrix:
    chosen = [rng.choice(w)]
    d2 = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, k):
        chosen.append(rng.choice(w * d2))
        d2 = np.minimum(d2, ((points - points[chosen[-1]]) ** 2).sum(axis=1))
    return np.asarray(points[chosen], dtype=np.float64)


def _lloyd(
    points: FloatMatrix, w: npt.NDArray[np.float64], centres: FloatMatrix, iterations: int
) -> FloatMatrix:
    c = centres.copy()
    for _ in range(iterations):
        label = nearest(points, c)
        mass = np.bincount(label, weights=w, minlength=c.shape[0])
        sums = np.zeros_like(c)
        np.add.at(sums, label, points * w[:, None])
        moved = c.copy()
        has = mass > 0
        moved[has] = sums[has] / mass[has, None]  # an empty centre stays where it is
        if np.allclose(moved, c, rtol=0.0, atol=1e-10):
            return moved
        c = moved
    return c


def weighted_kmeans(
    points: FloatMatrix,
    weights: npt.ArrayLike,
    k: int,
    rng: PublicRandom,
    restarts: int = 50,
    iterations: int = 100,
) -> FloatMatrix:
    """The best of ``restarts`` k-means++ runs on weighted points (negative weights as 0)."""
    p = np.asarray(points, dtype=np.float64)
    w = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    if p.ndim != 2 or p.shape[0] != w.size:
        raise ValueError("points and weights do not match")
    if p.shape[0] < k:
        # Too few leaves (little data, little budget): every leaf is a centre and the rest are
        # drawn from the public box; Lloyd rounds move them or leave them empty.
        extra = rng.uniform((k - p.shape[0]) * p.shape[1]).reshape(-1, p.shape[1])
        return np.asarray(np.vstack([p, extra]), dtype=np.float64)
    best: FloatMatrix | None = None
    best_cost = np.inf
    for _ in range(restarts):
        c = _lloyd(p, w, _seed(p, w, k, rng), iterations)
        cost = weighted_cost(p, w, c)
        if cost < best_cost:
            best, best_cost = c, cost
    assert best is not None
    return best
