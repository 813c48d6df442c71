"""Public bands: the key sets of banded dimensions, fixed before any data is seen.

A band is a label and the lower edge (inclusive) of the interval it covers; the next band's edge
is the upper bound. Values below the first edge are not banded (they fall outside the table),
missing values go to ``unknown`` where a band set has it. Nodes map their data onto these keys;
the coordinator and every reader of a release see the same labels.
"""

from __future__ import annotations

from typing import Final

Band = tuple[str, float]

UNKNOWN: Final[str] = "unknown"

# Mean distance from home to the venues a customer visited (km).
DISTANCE_BANDS: Final[tuple[Band, ...]] = (
    ("0-5 km", 0),
    ("5-15 km", 5),
    ("15-30 km", 15),
    ("30-60 km", 30),
    ("60+ km", 60),
)
# Age in years: in the year of the performance for tables, at the as-of date for the features.
AGE_BANDS: Final[tuple[Band, ...]] = (
    ("0-17", 0),
    ("18-34", 18),
    ("35-49", 35),
    ("50-64", 50),
    ("65+", 65),
)
# Visits in the year, at one institution (the domain's frequency pmf bins).
FREQUENCY_BANDS: Final[tuple[Band, ...]] = (
    ("1", 1),
    ("2", 2),
    ("3-5", 3),
    ("6-10", 6),
    ("11+", 11),
)
# Days between the order and the performance.
LEAD_TIME_BANDS: Final[tuple[Band, ...]] = (
    ("0-1 d", 0),
    ("2-7 d", 2),
    ("8-30 d", 8),
    ("31-90 d", 31),
    ("91+ d", 91),
)
# Counted tickets in one order.
ORDER_SIZE_BANDS: Final[tuple[Band, ...]] = (
    ("1", 1),
    ("2", 2),
    ("3-4", 3),
    ("5-10", 5),
    ("11+", 11),
)
# Whether a booker of the year also booked at the same institution the year before.
RETURNING_KEYS: Final[tuple[str, ...]] = ("new", "returning")


def keys(bands: tuple[Band, ...], unknown: bool = False) -> tuple[str, ...]:
    labels = tuple(label for label, _ in bands)
    return (*labels, UNKNOWN) if unknown else labels
