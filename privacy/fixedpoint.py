"""Fixed-point encoding of reals into integers, for integer noise and modular secure sums.

Discrete noise and secure aggregation both work on integers. A real x in [-bound, bound] becomes
round(x * scale). Rounding moves each coordinate by at most 1/2, so an encoded d-vector has L2
norm at most ``scale * ||x|| + sqrt(d) / 2``: the sensitivity after encoding is known in advance
(``privacy.mechanisms`` uses exactly this).

Every encode checks that values are finite and inside the bound, and ``check_headroom`` checks
that a sum of many encoded vectors plus noise cannot overflow int64: an overflow would silently
wrap and corrupt a release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

INT64_LIMIT = 2**63 - 1
# Noise tails beyond this many standard deviations have probability < 1e-30; we keep them
# inside the integer range anyway.
_NOISE_SIGMAS = 12


class FixedPointOverflow(OverflowError):
    pass


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """``scale`` integer steps per unit; values must satisfy |x| <= ``bound``."""

    scale: int
    bound: float

    def __post_init__(self) -> None:
        if not (isinstance(self.scale, int) and 1 <= self.scale <= 2**40):
            raise ValueError(f"scale must be an integer in [1, 2^40], got {self.scale!r}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"bound must be positive and finite, got {self.bound}")
        if self.bound * self.scale >= 2**52:
            raise ValueError("bound * scale exceeds the exactly representable float range")

    def encode(self, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        x = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise FixedPointOverflow("cannot encode NaN or infinite values")
        worst = float(np.max(np.abs(x))) if x.size else 0.0
        if worst > self.bound:
            raise FixedPointOverflow(
                f"value {worst:.6g} is outside the public bound {self.bound:.6g}; clip first"
            )
        return np.rint(x * self.scale).astype(np.int64)

    def decode(self, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.asarray(values, dtype=np.float64) / self.scale

    def check_headroom(self, summands: int, noise_sigma: float = 0.0) -> None:
        """Raise if a sum of ``summands`` encoded values plus noise could leave int64."""
        worst = summands * self.bound * self.scale + _NOISE_SIGMAS * noise_sigma + summands
        if worst >= INT64_LIMIT / 2:
            raise FixedPointOverflow(
                f"a sum of {summands} values bounded by {self.bound} at scale {self.scale}"
                " could overflow 64-bit integers; lower the scale or the bound"
            )
