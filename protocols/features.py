"""The public customer features: names, bounds and scaling, shared by nodes and coordinator.

Nodes derive these per customer (``node.features``); the sector's segmentation works on them
scaled to [0, 1] (``customer_space``). Both sides must mean the same thing by every number, so
the definitions live in the contract, like the bands of ``protocols.bands``. All of it is fixed
before any data is seen: the bounds, the scaling and the bound on what one customer can add to
a k-means sum are public, so the sensitivity of every round is known in advance.

Long-tailed features (visits, euros, kilometres, days ahead) are scaled on a log scale: in the
segmentation, one visit against two counts about as much as five against ten, and a customer
who lives 10 km away is about halfway between next door and the other end of the country.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from privacy.clustering.space import Feature, FeatureSpace
from protocols.vocabulary import DISCIPLINES

CUSTOMER_FEATURE_SET: Final[str] = "customer/1"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    low: float
    high: float
    description: str
    transform: str = "linear"

    @property
    def feature(self) -> Feature:
        return Feature(self.name, self.low, self.high, self.transform)


NUMERIC_FEATURES: Final[tuple[FeatureSpec, ...]] = (
    FeatureSpec("frequency", 0, 24, "visits in the 12 months up to the as-of date", "log"),
    FeatureSpec("recency_days", 0, 1095, "days from the last visit to the as-of date"),
    FeatureSpec("spend_eur", 0, 2000, "euros paid for visits in those 12 months", "log"),
    FeatureSpec("distance_km", 0, 250, "mean distance from home to the venues visited", "log"),
    FeatureSpec("age", 0, 100, "age in years at the as-of date"),
    FeatureSpec("lead_time_days", 0, 180, "mean days between booking and performance", "log"),
    FeatureSpec("group_size", 1, 10, "mean tickets per booking"),
    FeatureSpec("online_share", 0, 1, "share of bookings made in the own web shop"),
    FeatureSpec("discount_share", 0, 1, "share of tickets at a price other than full"),
)
MIX_FEATURES: Final[tuple[FeatureSpec, ...]] = tuple(
    FeatureSpec(f"mix_{d}", 0, 1, f"share of visits in {d}") for d in DISCIPLINES
)
ALL_FEATURES: Final[tuple[FeatureSpec, ...]] = (*NUMERIC_FEATURES, *MIX_FEATURES)
# An unknown value (no birth year, no home location) is imputed at the middle of its scaled
# range: a public value that costs no privacy (50 years; about 15 km on the log scale).
IMPUTED: Final[float] = 0.5


def customer_space() -> FeatureSpace:
    """The segmentation's space: rows relative to the middle of the numeric features and to 0
    for the discipline shares. A numeric feature is then within 1/2 of its origin and the
    shares, which are non-negative and sum to 1, have norm at most 1, so every row lies within
    sqrt(9/4 + 1) of the origin: that radius is exact, and clipping to it never changes a row.
    """
    origin = tuple([0.5] * len(NUMERIC_FEATURES) + [0.0] * len(MIX_FEATURES))
    radius = math.sqrt(0.25 * len(NUMERIC_FEATURES) + 1.0)
    return FeatureSpace(tuple(f.feature for f in ALL_FEATURES), origin, radius)
