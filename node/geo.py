"""Postcode to region, postcode area to location, and travel distance, as columnar expressions.

Regions come from the public contract (``protocols.geography``): the 4-digit area of a Dutch or
Belgian postcode decides the province. Distances need locations, and no gazetteer is downloaded
at run time, so the node takes a **PC4 centroid table**: a CSV with one row per postcode area
(``country,area,lat,lon``), such as CBS/PDOK publish for the Netherlands and Statbel for
Belgium. Configure it as ``[geography] pc4_centroids``; the synthetic sector's
``synthetic.geography.pc4_table()`` is the demo and test table. Without a table the node falls
back to region level: a customer is placed at the centroid of their province, which tells
"from another province" from "local" but cannot tell 5 km from 25 km within one. Every
distance says which of the two it came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Final

import polars as pl

from protocols.geography import BE_POSTCODE_RANGES, NL_POSTCODE_RANGES, REGIONS

EARTH_RADIUS_KM: Final[float] = 6371.0
# The area the sector lives in, generously: a centroid outside it is a typo in the table.
_LAT_RANGE: Final[tuple[float, float]] = (49.0, 54.5)
_LON_RANGE: Final[tuple[float, float]] = (2.0, 7.8)


class DistanceSource(StrEnum):
    PC4 = "postcode area"
    REGION = "region"


@lru_cache(maxsize=1)
def _area_regions() -> dict[int, str]:
    """Every 4-digit area and its region; Belgian areas offset by 10000 (one lookup per row)."""
    table = {a: code for first, last, code in NL_POSTCODE_RANGES for a in range(first, last + 1)}
    for first, last, code in BE_POSTCODE_RANGES:
        table.update({10_000 + a: code for a in range(first, last + 1)})
    return table


def region_of_area_expr(area: pl.Expr, country: pl.Expr) -> pl.Expr:
    """Region key from a 4-digit area (null when unknown) and a clean ISO country code."""
    key = area.cast(pl.Int64) + pl.when(country == "BE").then(10_000).otherwise(0)
    looked_up = key.replace_strict(_area_regions(), default="UNKNOWN", return_dtype=pl.String)
    return (
        pl.when(country.is_null() | (country == ""))
        .then(pl.lit("UNKNOWN"))
        .when(~country.is_in(["NL", "BE"]))
        .then(pl.lit("ABROAD"))
        .when(area.is_null())
        .then(pl.lit("UNKNOWN"))
        .otherwise(looked_up)
    )


def region_expr(postcode: pl.Expr, country: pl.Expr) -> pl.Expr:
    """Region key from a full postcode ("1234 AB", "2000") and an ISO country code.

    Only the 4-digit area is read; the letters of a Dutch postcode (which narrow it to a street)
    are never used.
    """
    area = postcode.str.extract(r"^\s*([1-9]\d{3})", 1).cast(pl.Int32, strict=False)
    return region_of_area_expr(area, country.str.strip_chars().str.to_uppercase())


def haversine_km(lat1: pl.Expr, lon1: pl.Expr, lat2: pl.Expr, lon2: pl.Expr) -> pl.Expr:
    """Great-circle distance; null when any coordinate is null."""
    rad = math.pi / 180.0
    dlat = (lat2 - lat1) * rad
    dlon = (lon2 - lon1) * rad
    a = (dlat / 2).sin().pow(2) + (lat1 * rad).cos() * (lat2 * rad).cos() * (dlon / 2).sin().pow(2)
    return 2 * EARTH_RADIUS_KM * a.sqrt().arcsin()


class GeographyError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def load_pc4_centroids(path: Path) -> pl.DataFrame:
    """A PC4 centroid table (country, area, lat, lon), checked; every problem at once."""
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except FileNotFoundError as err:
        raise GeographyError(str(path), ["file not found"]) from err
    except (pl.exceptions.PolarsError, OSError) as err:
        raise GeographyError(str(path), [f"not a readable CSV file: {err}"]) from err
    missing = [c for c in ("country", "area", "lat", "lon") if c not in raw.columns]
    if missing:
        raise GeographyError(str(path), [f"column {c!r} is missing" for c in missing])
    table = raw.select(
        pl.col("country").str.strip_chars().str.to_uppercase(),
        pl.col("area").str.strip_chars().cast(pl.Int32, strict=False),
        pl.col("lat").str.strip_chars().cast(pl.Float64, strict=False),
        pl.col("lon").str.strip_chars().cast(pl.Float64, strict=False),
    ).with_row_index("line", offset=2)
    problems: list[str] = []
    bad = table.filter(
        pl.any_horizontal(pl.col("area", "lat", "lon").is_null())
        | ~pl.col("country").is_in(["NL", "BE"])
        | ~pl.col("area").is_between(1000, 9999)
        | ~pl.col("lat").is_between(*_LAT_RANGE)
        | ~pl.col("lon").is_between(*_LON_RANGE)
    )
    if bad.height:
        lines = ", ".join(str(n) for n in bad["line"].head(10).to_list())
        problems.append(
            f"{bad.height} row(s) are not (NL|BE, 1000-9999, latitude, longitude) within the"
            f" Netherlands and Belgium (line {lines})"
        )
    dup = table.filter(pl.struct("country", "area").is_duplicated())
    if dup.height:
        lines = ", ".join(str(n) for n in dup["line"].head(10).to_list())
        problems.append(f"{dup.height} row(s) repeat a (country, area) pair (line {lines})")
    if table.height == 0:
        problems.append("the table has no rows")
    if problems:
        raise GeographyError(str(path), problems)
    return table.drop("line")


def region_centroids() -> pl.DataFrame:
    """Approximate centroid of each Dutch and Belgian region (the fallback locations)."""
    return pl.DataFrame(
        {
            "region": [r.code for r in REGIONS if r.country],
            "lat": [r.lat for r in REGIONS if r.country],
            "lon": [r.lon for r in REGIONS if r.country],
        }
    )


@dataclass(frozen=True, slots=True)
class Location:
    lat: float
    lon: float

    @classmethod
    def parse(cls, text: str) -> Location:
        """From "52.37, 4.90"; raises ValueError with a readable reason."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise ValueError(f"{text!r} is not 'latitude, longitude'")
        try:
            lat, lon = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"{text!r} is not 'latitude, longitude'") from None
        if not (_LAT_RANGE[0] <= lat <= _LAT_RANGE[1] and _LON_RANGE[0] <= lon <= _LON_RANGE[1]):
            raise ValueError(f"{text!r} is not in the Netherlands or Belgium")
        return cls(lat, lon)


@dataclass(frozen=True, slots=True)
class Geography:
    """Where the institution's venues are and how customers' homes are located."""

    location: Location | None = None  # the institution's main location
    venues: tuple[tuple[str, Location], ...] = ()  # per venue_id, where it differs
    pc4: pl.DataFrame | None = None  # country, area, lat, lon

    @property
    def distance_source(self) -> DistanceSource | None:
        if self.location is None and not self.venues:
            return None
        return DistanceSource.PC4 if self.pc4 is not None else DistanceSource.REGION

    def venue_table(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "venue_id": [v for v, _ in self.venues],
                "venue_lat": [loc.lat for _, loc in self.venues],
                "venue_lon": [loc.lon for _, loc in self.venues],
            },
            schema={"venue_id": pl.String, "venue_lat": pl.Float64, "venue_lon": pl.Float64},
        )

    def home_locations(self, homes: pl.DataFrame) -> pl.DataFrame:
        """``homes`` (unit, home_country, home_area, home_region) plus home_lat and home_lon."""
        if self.pc4 is not None:
            pc4 = self.pc4.rename({"country": "home_country", "area": "home_area"}).rename(
                {"lat": "home_lat", "lon": "home_lon"}
            )
            return homes.join(pc4, on=["home_country", "home_area"], how="left")
        cent = region_centroids().rename(
            {"region": "home_region", "lat": "home_lat", "lon": "home_lon"}
        )
        return homes.join(cent, on="home_region", how="left")
