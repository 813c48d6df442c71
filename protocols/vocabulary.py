"""The public vocabularies every party agrees on.

These are the key sets of sector tables (public, data-independent, so a histogram over them
leaks nothing through its shape) and the codes of the canonical `ticket_line` schema described in
`../shared/domain/README.md`. They live in `protocols/` because they are part of the contract:
a node and the coordinator must mean the same thing by "dans" or "2024Q3".
"""

from __future__ import annotations

import re
from typing import Final

DISCIPLINES: Final[tuple[str, ...]] = (
    "toneel",
    "cabaret_kleinkunst",
    "musical_operette",
    "opera_muziektheater",
    "dans",
    "klassieke_muziek",
    "populaire_muziek",
    "jeugd_familie",
    "amateur",
    "film",
    "museum_tentoonstelling",
    "erfgoed",
    "literatuur_lezing",
    "festival_multidisciplinair",
    "overig",
)

PRICE_TYPES: Final[tuple[str, ...]] = (
    "full",
    "youth",
    "senior",
    "social",  # sensitive: can reveal poverty; treated with higher thresholds
    "group",
    "subscription",
    "member_friend",
    "pass_flat",
    "complimentary",
    "other_discount",
)

ORDER_STATUSES: Final[tuple[str, ...]] = (
    "paid",
    "refunded",
    "cancelled",
    "exchanged",
    "reserved_unpaid",
)

# Statuses whose tickets count as attendance ("a visit is a distinct (customer, performance) with
# at least one paid or complimentary ticket"; complimentary is a price type of a paid order).
COUNTED_STATUSES: Final[tuple[str, ...]] = ("paid",)

CHANNELS: Final[tuple[str, ...]] = (
    "online_own",
    "box_office",
    "phone",
    "reseller",
    "group_sales",
    "school",
    "partner_pass",
)

INSTITUTION_TYPES: Final[tuple[str, ...]] = (
    "theatre",
    "concert_hall",
    "poppodium",
    "filmhuis",
    "museum",
    "festival",
    "be_cultural_centre",
)

REQUIRED_COLUMNS: Final[tuple[str, ...]] = (
    "ticket_id",
    "order_id",
    "customer_id",
    "order_datetime",
    "order_status",
    "channel",
    "performance_id",
    "performance_start",
    "venue_id",
    "discipline",
    "price_type",
    "price_paid_eur",
)

OPTIONAL_COLUMNS: Final[tuple[str, ...]] = (
    "attended",
    "is_subscription",
    "postcode",
    "country",
    "birth_year",
    "email",
    "pass_type",
    "membership_type",
    "genre_local",
    "price_zone",
)

# Fields that identify a person or a household. They may be read on the node to derive
# features, but they never appear in anything a node sends.
TRANSIENT_COLUMNS: Final[tuple[str, ...]] = ("email", "postcode", "birth_year")

_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")


def quarters(first_year: int, last_year: int) -> tuple[str, ...]:
    """Public quarter keys, e.g. ``quarters(2024, 2024) == ("2024Q1", ..., "2024Q4")``."""
    if last_year < first_year:
        raise ValueError(f"last_year {last_year} is before first_year {first_year}")
    return tuple(f"{y}Q{q}" for y in range(first_year, last_year + 1) for q in range(1, 5))


def is_quarter(key: str) -> bool:
    return _QUARTER.match(key) is not None
