"""The public feature space a federated k-means works in: bounds, scaling, centre and radius.

Every quantity that decides the sensitivity of a k-means round is fixed here before any data is
seen. A raw feature value is clipped to its public bounds ``[low, high]`` and scaled to [0, 1]
(linearly, or on a log scale for long-tailed counts such as visits or euros, which makes
"frequent" and "once" differ as much as "close" and "far" do). A scaled row is then taken
relative to a public ``origin`` and clipped to the L2 ball of radius ``radius`` around it: the
largest vector one customer can add to any sum is known in advance, whatever the data.

For a box [0, 1]^d centred at 0.5 the radius ``0.5 * sqrt(d)`` makes the clipping a no-op; a
feature set with more structure can declare a smaller radius (the customer features' discipline
shares sum to 1, so their part of a row has norm at most 1). Rows outside the ball are scaled
onto it (direction kept), so a too-small radius costs accuracy, never privacy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float64]

TRANSFORMS: Final[tuple[str, ...]] = ("linear", "log")
MAX_FEATURES: Final[int] = 256
MAX_NAME_CHARS: Final[int] = 64


class InvalidSpace(ValueError):
    """A feature space whose bounds, centre or radius make no sense."""


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    low: float
    high: float
    transform: str = "linear"  # "log": log(1 + v - low) / log(1 + high - low)

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_NAME_CHARS or not self.name.isprintable():
            raise InvalidSpace(f"feature name {self.name[:40]!r} is empty, too long or unprintable")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise InvalidSpace(
                f"feature {self.name!r}: bounds must be finite with low < high,"
                f" got {self.low}..{self.high}"
            )
        if self.transform not in TRANSFORMS:
            raise InvalidSpace(
                f"feature {self.name!r}: transform must be one of {', '.join(TRANSFORMS)}"
            )

    def scale(self, raw: npt.ArrayLike) -> npt.NDArray[np.float64]:
        v = np.clip(np.asarray(raw, dtype=np.float64), self.low, self.high) - self.low
        if self.transform == "log":
            return np.asarray(np.log1p(v) / math.log1p(self.high - self.low), dtype=np.float64)
        return np.asarray(v / (self.high - self.low), dtype=np.float64)

    def unscale(self, scaled: npt.ArrayLike) -> npt.NDArray[np.float64]:
        s = np.clip(np.asarray(scaled, dtype=np.float64), 0.0, 1.0)
        if self.transform == "log":
            return np.asarray(np.expm1(s * math.log1p(self.high - self.low)) + self.low)
        return np.asarray(s * (self.high - self.low) + self.low, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class FeatureSpace:
    features: tuple[Feature, ...]
    origin: tuple[float, ...]  # in scaled coordinates
    radius: float  # L2 bound on (scaled row - origin)

    def __post_init__(self) -> None:
        if not 1 <= len(self.features) <= MAX_FEATURES:
            raise InvalidSpace(f"a feature space has 1 to {MAX_FEATURES} features")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise InvalidSpace("a feature appears twice")
        if len(self.origin) != len(self.features):
            raise InvalidSpace(
                f"the origin has {len(self.origin)} coordinates, the space {self.dim} features"
            )
        if not all(math.isfinite(o) and 0.0 <= o <= 1.0 for o in self.origin):
            raise InvalidSpace("the origin must lie in the scaled box [0, 1]^d")
        if not (math.isfinite(self.radius) and 0.0 < self.radius <= math.sqrt(self.dim)):
            raise InvalidSpace(
                f"the radius must be positive and at most sqrt(d) = {math.sqrt(self.dim):.4g}"
            )

    @classmethod
    def box(cls, features: tuple[Feature, ...]) -> FeatureSpace:
        """Centred in the box, with the radius that makes clipping a no-op."""
        return cls(features, (0.5,) * len(features), 0.5 * math.sqrt(len(features)))

    @property
    def dim(self) -> int:
        return len(self.features)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def scale(self, raw: npt.ArrayLike) -> FloatMatrix:
        """Raw rows (n x d, finite) to the scaled box [0, 1]^d."""
        x = _matrix(raw, self.dim)
        out = np.empty_like(x)
        for j, f in enumerate(self.features):
            out[:, j] = f.scale(x[:, j])
        return out

    def unscale(self, scaled: npt.ArrayLike) -> FloatMatrix:
        """Scaled rows (e.g. centres) back to the features' own units."""
        x = _matrix(scaled, self.dim)
        out = np.empty_like(x)
        for j, f in enumerate(self.features):
            out[:, j] = f.unscale(x[:, j])
        return out

    def centred(self, scaled: npt.ArrayLike) -> FloatMatrix:
        """(row - origin), scaled onto the ball of ``radius`` where it lies outside."""
        x = _matrix(scaled, self.dim) - np.asarray(self.origin)
        norms = np.linalg.norm(x, axis=1)
        factor = np.minimum(1.0, self.radius / np.maximum(norms, 1e-300))
        return np.asarray(x * factor[:, None], dtype=np.float64)

    def clip_to_box(self, scaled: npt.ArrayLike) -> FloatMatrix:
        """Post-processing: noisy centres projected onto the public box."""
        return np.clip(_matrix(scaled, self.dim), 0.0, 1.0)


def _matrix(values: npt.ArrayLike, dim: int) -> FloatMatrix:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1 and x.size == dim:
        x = x.reshape(1, dim)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected rows of {dim} features, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("rows contain NaN or infinite values (impute unknowns first)")
    return x
