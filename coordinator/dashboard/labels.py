"""What a person reads instead of a code: dimensions, keys, measures and numbers.

Only display: tables and downloads keep the release's own keys (``klassieke_muziek``,
``NL-NH``), so that a reader can match a chart to the CSV. Anything not listed here (a dimension
added after this file, such as ``segment``) gets a readable form of its own name.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Final

from protocols.geography import REGION_BY_CODE

DIMENSIONS: Final[dict[str, str]] = {
    "discipline": "Discipline",
    "quarter": "Quarter",
    "year": "Year",
    "region": "Home region",
    "institution_type": "Institution type",
    "institution_region": "Region of the institution",
    "price_type": "Price type",
    "channel": "Sales channel",
    "lead_time_band": "Days booked ahead",
    "order_size_band": "Tickets per order",
    "distance_band": "Distance from home",
    "age_band": "Age",
    "frequency_band": "Visits in the year",
    "returning": "New or returning",
    "segment": "Audience segment",
}

# Dimensions whose keys are regions: shown on the region map too.
REGION_DIMENSIONS: Final[frozenset[str]] = frozenset({"region", "institution_region"})

# Periods keep their order and read as a timeline.
PERIOD_DIMENSIONS: Final[frozenset[str]] = frozenset({"quarter", "year"})

_KEYS: Final[dict[str, dict[str, str]]] = {
    "discipline": {
        "toneel": "Toneel (theatre)",
        "cabaret_kleinkunst": "Cabaret, kleinkunst (cabaret, song)",
        "musical_operette": "Musical, operette (musicals, operetta)",
        "opera_muziektheater": "Opera, muziektheater (opera, music theatre)",
        "dans": "Dans (dance)",
        "klassieke_muziek": "Klassieke muziek (classical music)",
        "populaire_muziek": "Populaire muziek (popular music)",
        "jeugd_familie": "Jeugd, familie (children, family)",
        "amateur": "Amateur (amateur arts)",
        "film": "Film",
        "museum_tentoonstelling": "Museum, tentoonstelling (museums, exhibitions)",
        "erfgoed": "Erfgoed (heritage)",
        "literatuur_lezing": "Literatuur, lezing (literature, talks)",
        "festival_multidisciplinair": "Festival, multidisciplinair (festivals)",
        "overig": "Overig (other)",
    },
    "institution_type": {
        "theatre": "Theatre",
        "concert_hall": "Concert hall",
        "poppodium": "Pop venue",
        "filmhuis": "Film house",
        "museum": "Museum",
        "festival": "Festival",
        "be_cultural_centre": "Cultural centre (BE)",
    },
    "price_type": {
        "full": "Full price",
        "youth": "Youth",
        "senior": "Senior",
        "social": "Social tariff",
        "group": "Group",
        "subscription": "Subscription",
        "member_friend": "Member, friend",
        "pass_flat": "Pass (flat rate)",
        "complimentary": "Complimentary",
        "other_discount": "Other discount",
    },
    "channel": {
        "online_own": "Own website",
        "box_office": "Box office",
        "phone": "Phone",
        "reseller": "Reseller",
        "group_sales": "Group sales",
        "school": "School",
        "partner_pass": "Partner pass",
    },
    "returning": {"new": "New", "returning": "Returning"},
}

# (label, what one customer adds to a cell, unit divisor): revenue is stored in cents and shown
# in euros; the division is exact and only for display.
_MEASURES: Final[dict[str, tuple[str, str, int]]] = {
    "tickets": ("Tickets", "tickets of paid orders, complimentary tickets included", 1),
    "visits": ("Visits", "distinct visits (a customer at a performance)", 1),
    "orders": ("Orders", "distinct orders", 1),
    "bookers": ("Bookers", "people with at least one counted ticket in the cell", 1),
    "revenue_cents": ("Revenue (€)", "euros paid for those tickets", 100),
}


def _readable(code: str) -> str:
    text = code.replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else code


def dimension_label(name: str) -> str:
    return DIMENSIONS.get(name, _readable(name))


# Regions keep their own names (provinces are proper names); these get a gloss.
_REGION_GLOSS: Final[dict[str, str]] = {
    "BE-BRU": "Brussel (Brussels)",
    "BE-WAL": "Wallonië (Wallonia)",
    "ABROAD": "Buitenland (abroad)",
    "UNKNOWN": "Onbekend (unknown)",
}


def key_label(dimension: str, key: str) -> str:
    """A key as a reader of the English dashboard reads it: Dutch sector terms with an English
    gloss, as the sector uses them; provinces by their own names."""
    if dimension in REGION_DIMENSIONS and key in REGION_BY_CODE:
        return _REGION_GLOSS.get(key, REGION_BY_CODE[key].name)
    known = _KEYS.get(dimension, {})
    if key in known:
        return known[key]
    if dimension in PERIOD_DIMENSIONS or dimension.endswith("_band"):
        return key
    return _readable(key)


def measure_label(measure: str) -> str:
    return _MEASURES.get(measure, (_readable(measure), "", 1))[0]


def unit_word(measure: str) -> str:
    """The measure as the unit in a sentence: "an sd of 12 tickets", "of 7,745.97 euros"."""
    if measure == "revenue_cents":
        return "euros"
    return measure_label(measure).lower()


def measure_meaning(measure: str) -> str:
    """What one customer adds to a cell, in a few words (empty for an unknown measure)."""
    return _MEASURES.get(measure, ("", "", 1))[1]


def unit_divisor(measure: str) -> int:
    return _MEASURES.get(measure, ("", "", 1))[2]


def number(value: float, divisor: int = 1) -> str:
    """A stored value as a person reads it: thousands separated, euros with cents."""
    if divisor == 1:
        return f"{round(value):,}"
    return f"{value / divisor:,.2f}"


def short_number(value: float) -> str:
    """An axis tick: 1.2k, 3.4M; whole numbers below 10,000 in full."""
    magnitude = abs(value)
    if magnitude >= 1e9:
        return f"{value / 1e9:.3g}G"
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if magnitude == 0 or magnitude >= 1:
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    return f"{value:.2g}"


def rho(value: str | float) -> str:
    """How a privacy cost reads: "ρ = 0.03", or "ρ ≈ 0.00336" for a value the release keeps
    exactly (201871/60000000). Three significant digits are what a reader compares; the
    release file keeps every digit."""
    try:
        exact = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return f"ρ = {value}"
    shown = f"{float(exact):.3g}"
    return f"ρ = {shown}" if Fraction(shown) == exact else f"ρ ≈ {shown}"


def epsilon(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.2f}"
