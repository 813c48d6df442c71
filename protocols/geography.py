"""Public geography: the regions of sector tables and how a postcode area maps onto them.

Regions are the twelve Dutch provinces (ISO 3166-2:NL), the five Flemish provinces and Brussels
(ISO 3166-2:BE), plus Wallonia, abroad and unknown, so that every customer falls in exactly one
key. The Dutch postcode ranges below follow the PTT's 1978 allocation by two- and three-digit
prefix; they are right for the bulk of each province but blur a few border municipalities. A
production deployment can swap in CBS's postcode-to-municipality table without changing the key
set, which is what the contract fixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    name: str
    country: str  # "NL", "BE" or "" for the catch-all keys
    lat: float  # approximate centroid, for synthetic data and rough distance bands
    lon: float


REGIONS: Final[tuple[Region, ...]] = (
    Region("NL-GR", "Groningen", "NL", 53.22, 6.74),
    Region("NL-FR", "Fryslân", "NL", 53.11, 5.85),
    Region("NL-DR", "Drenthe", "NL", 52.86, 6.62),
    Region("NL-OV", "Overijssel", "NL", 52.44, 6.45),
    Region("NL-FL", "Flevoland", "NL", 52.53, 5.60),
    Region("NL-GE", "Gelderland", "NL", 52.06, 5.95),
    Region("NL-UT", "Utrecht", "NL", 52.08, 5.17),
    Region("NL-NH", "Noord-Holland", "NL", 52.52, 4.79),
    Region("NL-ZH", "Zuid-Holland", "NL", 51.99, 4.48),
    Region("NL-ZE", "Zeeland", "NL", 51.49, 3.85),
    Region("NL-NB", "Noord-Brabant", "NL", 51.56, 5.20),
    Region("NL-LI", "Limburg (NL)", "NL", 51.21, 5.94),
    Region("BE-BRU", "Brussel", "BE", 50.85, 4.36),
    Region("BE-VAN", "Antwerpen", "BE", 51.22, 4.60),
    Region("BE-VLI", "Limburg (BE)", "BE", 50.96, 5.42),
    Region("BE-VOV", "Oost-Vlaanderen", "BE", 51.04, 3.80),
    Region("BE-VBR", "Vlaams-Brabant", "BE", 50.88, 4.55),
    Region("BE-VWV", "West-Vlaanderen", "BE", 51.05, 3.10),
    Region("BE-WAL", "Wallonië", "BE", 50.45, 4.85),
    Region("ABROAD", "Buitenland", "", 0.0, 0.0),
    Region("UNKNOWN", "Onbekend", "", 0.0, 0.0),
)

REGION_CODES: Final[tuple[str, ...]] = tuple(r.code for r in REGIONS)
REGION_BY_CODE: Final[dict[str, Region]] = {r.code: r for r in REGIONS}

# (first, last, region) over the numeric part of a postcode, inclusive. Ordered, non-overlapping,
# and covering 1000..9999 for each country (checked by the tests).
NL_POSTCODE_RANGES: Final[tuple[tuple[int, int, str], ...]] = (
    (1000, 1299, "NL-NH"),
    (1300, 1379, "NL-FL"),
    (1380, 2199, "NL-NH"),
    (2200, 3399, "NL-ZH"),
    (3400, 3999, "NL-UT"),
    (4000, 4119, "NL-GE"),
    (4120, 4299, "NL-ZH"),
    (4300, 4599, "NL-ZE"),
    (4600, 5799, "NL-NB"),
    (5800, 6499, "NL-LI"),
    (6500, 7399, "NL-GE"),
    (7400, 7799, "NL-OV"),
    (7800, 7999, "NL-DR"),
    (8000, 8199, "NL-OV"),
    (8200, 8399, "NL-FL"),
    (8400, 9299, "NL-FR"),
    (9300, 9499, "NL-DR"),
    (9500, 9999, "NL-GR"),
)

BE_POSTCODE_RANGES: Final[tuple[tuple[int, int, str], ...]] = (
    (1000, 1299, "BE-BRU"),
    (1300, 1499, "BE-WAL"),
    (1500, 1999, "BE-VBR"),
    (2000, 2999, "BE-VAN"),
    (3000, 3499, "BE-VBR"),
    (3500, 3999, "BE-VLI"),
    (4000, 7999, "BE-WAL"),
    (8000, 8999, "BE-VWV"),
    (9000, 9999, "BE-VOV"),
)

_RANGES_BY_COUNTRY: Final[dict[str, tuple[tuple[int, int, str], ...]]] = {
    "NL": NL_POSTCODE_RANGES,
    "BE": BE_POSTCODE_RANGES,
}

_NL_POSTCODE = re.compile(r"^\s*([1-9]\d{3})\s*([A-Za-z]{2})?\s*$")
_BE_POSTCODE = re.compile(r"^\s*([1-9]\d{3})\s*$")


def postcode_area(postcode: str, country: str) -> int | None:
    """The 4-digit postcode area of a full postcode, or None when it is not a valid one.

    A full Dutch postcode ("1234 AB") identifies a street segment: only the area leaves the
    reading step, as the domain notes require.
    """
    pattern = _NL_POSTCODE if country == "NL" else _BE_POSTCODE if country == "BE" else None
    if pattern is None:
        return None
    m = pattern.match(postcode)
    return int(m.group(1)) if m else None


def region_of_area(area: int | None, country: str) -> str:
    """Region key of a 4-digit postcode area; ABROAD for other countries, UNKNOWN if missing."""
    if country not in ("NL", "BE", ""):
        return "ABROAD"
    if area is None or not country:
        return "UNKNOWN"
    for first, last, code in _RANGES_BY_COUNTRY[country]:
        if first <= area <= last:
            return code
    return "UNKNOWN"


def postcode_ranges(region: str) -> tuple[tuple[int, int], ...]:
    """The postcode-area ranges that map to a region (empty for the catch-all keys)."""
    country = REGION_BY_CODE[region].country
    if not country:
        return ()
    return tuple((a, b) for a, b, code in _RANGES_BY_COUNTRY[country] if code == region)
