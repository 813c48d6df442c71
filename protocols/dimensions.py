"""The public dimensions a table may be broken down by, and their key sets.

A node only answers over dimensions it knows and key sets drawn from the public vocabularies:
a coordinator cannot sneak a customer id or an e-mail address in as a "key" to test whether a
person is in an institution's data.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from protocols import bands
from protocols.geography import REGION_CODES
from protocols.vocabulary import (
    CHANNELS,
    DISCIPLINES,
    INSTITUTION_TYPES,
    PRICE_TYPES,
    quarters,
)

_YEAR = re.compile(r"^(19|20)\d{2}$")
_QUARTER = re.compile(r"^(19|20)\d{2}Q[1-4]$")

MAX_KEYS_PER_DIMENSION: Final[int] = 1000
# The segments of the sector's segmentation (S12), numbered from 1; a model of k segments uses
# the first k. Only k-means rounds count by segment (``protocols.kmeans.SegmentCounts``).
SEGMENT_KEYS: Final[tuple[str, ...]] = tuple(f"segment_{i:02d}" for i in range(1, 65))


@dataclass(frozen=True, slots=True)
class DimensionSpec:
    name: str
    description: str
    vocabulary: tuple[str, ...] | None  # None: keys follow a pattern (periods)
    pattern: re.Pattern[str] | None = None

    def is_key(self, key: str) -> bool:
        if self.vocabulary is not None:
            return key in self.vocabulary
        return self.pattern is not None and self.pattern.match(key) is not None


PUBLIC_DIMENSIONS: Final[dict[str, DimensionSpec]] = {
    d.name: d
    for d in (
        DimensionSpec("discipline", "artistic discipline of the performance", DISCIPLINES),
        DimensionSpec(
            "quarter", "calendar quarter of the performance, e.g. 2024Q3", None, _QUARTER
        ),
        DimensionSpec("year", "calendar year of the performance", None, _YEAR),
        DimensionSpec(
            "region", "home region of the customer (from the postcode area)", REGION_CODES
        ),
        DimensionSpec("institution_type", "type of the answering institution", INSTITUTION_TYPES),
        DimensionSpec("price_type", "price type of the ticket", PRICE_TYPES),
        DimensionSpec("channel", "sales channel of the order", CHANNELS),
        DimensionSpec(
            "institution_region", "region of the answering institution itself", REGION_CODES
        ),
        DimensionSpec(
            "lead_time_band",
            "days between the order and the performance",
            bands.keys(bands.LEAD_TIME_BANDS),
        ),
        DimensionSpec(
            "order_size_band", "counted tickets in the order", bands.keys(bands.ORDER_SIZE_BANDS)
        ),
        DimensionSpec(
            "distance_band",
            "the customer's mean distance from home to the venues visited",
            bands.keys(bands.DISTANCE_BANDS, unknown=True),
        ),
        DimensionSpec(
            "age_band",
            "the customer's age in the year of the cell (from the birth year)",
            bands.keys(bands.AGE_BANDS, unknown=True),
        ),
        DimensionSpec(
            "frequency_band",
            "the customer's visits to this institution in the year of the cell",
            bands.keys(bands.FREQUENCY_BANDS),
        ),
        DimensionSpec(
            "returning",
            "whether the customer also booked at this institution the year before",
            bands.RETURNING_KEYS,
        ),
    )
}


# The segment of a customer is not a key the histogram engine can compute: it needs a fitted
# model. Only the segmentation's own rounds count by it (``protocols.kmeans.SegmentCounts``),
# and S12's released tables are keyed by it; a plan's [[analysis]] cannot ask for it.
SEGMENT_DIMENSION: Final[DimensionSpec] = DimensionSpec(
    "segment", "the customer's segment in the sector's shared segmentation (S12)", SEGMENT_KEYS
)


def dimension_problems(name: str, keys: tuple[str, ...]) -> list[str]:
    """Everything wrong with a dimension and its key set (empty when it is fine)."""
    return list(_dimension_problems(name, keys))


@functools.lru_cache(maxsize=256)
def _dimension_problems(name: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    # Key sets repeat across every task of a plan (and every stage of a round): check once.
    spec = SEGMENT_DIMENSION if name == SEGMENT_DIMENSION.name else PUBLIC_DIMENSIONS.get(name)
    if spec is None:
        known = ", ".join(sorted(PUBLIC_DIMENSIONS))
        return (f"unknown dimension {name[:40]!r} (known: {known})",)
    problems = []
    if not keys:
        problems.append(f"dimension {name!r} has no keys")
    if len(keys) > MAX_KEYS_PER_DIMENSION:
        problems.append(
            f"dimension {name!r} has {len(keys)} keys (at most {MAX_KEYS_PER_DIMENSION})"
        )
    if len(set(keys)) != len(keys):
        problems.append(f"dimension {name!r} repeats keys")
    bad = [k for k in keys if not spec.is_key(k)]
    if bad:
        shown = ", ".join(repr(k[:40]) for k in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        problems.append(f"dimension {name!r} has keys outside its public vocabulary: {shown}{more}")
    return tuple(problems)


def public_keys(name: str, first_year: int, last_year: int) -> tuple[str, ...]:
    """The full public key set of a dimension over a period of years."""
    if name == "quarter":
        return quarters(first_year, last_year)
    if name == "year":
        return tuple(str(y) for y in range(first_year, last_year + 1))
    spec = PUBLIC_DIMENSIONS.get(name)
    if spec is None or spec.vocabulary is None:
        raise KeyError(f"unknown dimension {name!r}")
    return spec.vocabulary
