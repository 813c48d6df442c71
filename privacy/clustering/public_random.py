"""Reproducible public randomness for the structure of a federated k-means (never its noise).

The partition tree's directions and the k-means++ seeding on the private coreset are random
choices that depend on no one's data; they are published with the model. They come from a
ChaCha20 keystream under a seed the coordinator draws from the OS once per fit and keeps in its
run state, so a coordinator that restarts makes exactly the same choices again and the rounds
it already ran stay valid. Noise is another matter: it only ever comes from OpenDP
(``privacy.noise``) on the nodes.
"""

from __future__ import annotations

import hashlib
import math
import secrets

import numpy as np
import numpy.typing as npt

from privacy.secagg.prg import SEED_BYTES, mask_vector

_MANTISSA = 2.0**-53


def new_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


class PublicRandom:
    """A deterministic stream of uniforms and normals; one per purpose (``label``)."""

    def __init__(self, seed: bytes, label: str) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a seed is {SEED_BYTES} bytes, got {len(seed)}")
        self._key = hashlib.sha256(seed + b"publiek/kmeans/" + label.encode()).digest()
        self._counter = 0

    def _words(self, n: int) -> npt.NDArray[np.uint64]:
        # A fresh key per call (counter mixed in), so calls never reuse keystream.
        key = hashlib.sha256(self._key + self._counter.to_bytes(8, "little")).digest()
        self._counter += 1
        return mask_vector(key, n)

    def uniform(self, n: int) -> npt.NDArray[np.float64]:
        """n floats in [0, 1), 53 random bits each."""
        return np.asarray((self._words(n) >> np.uint64(11)).astype(np.float64) * _MANTISSA)

    def normal(self, n: int) -> npt.NDArray[np.float64]:
        """n standard normals (Box-Muller)."""
        half = (n + 1) // 2
        u1 = 1.0 - self.uniform(half)  # (0, 1]: log is finite
        u2 = self.uniform(half)
        r = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([r * np.cos(2 * math.pi * u2), r * np.sin(2 * math.pi * u2)])
        return np.asarray(z[:n], dtype=np.float64)

    def unit_vectors(self, n: int, dim: int) -> npt.NDArray[np.float64]:
        """n directions uniform on the sphere in ``dim`` dimensions."""
        v = self.normal(n * dim).reshape(n, dim)
        return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float64)

    def choice(self, weights: npt.ArrayLike) -> int:
        """An index drawn with probability proportional to ``weights`` (non-negative)."""
        w = np.asarray(weights, dtype=np.float64)
        total = float(w.sum())
        if not total > 0:
            return int(self.uniform(1)[0] * w.size)
        at = np.searchsorted(np.cumsum(w), self.uniform(1)[0] * total, side="right")
        return int(min(at, w.size - 1))
