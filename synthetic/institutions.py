"""The institutions of a synthetic sector: type, place, size, programme format and discipline mix.

From simulation.yaml: the type mix (`institutions.type_mix`, allocated by largest remainder so a
sector of 12 still has a sensible mix), annual tickets (lognormal with the median of the type and
`tickets_per_year_sigma_log`, times `covid_index_vs_2019` of the year), the genre mix of general
theatres, and the travel-distance medians. Assumptions of this module (not in the YAML): the
discipline mix of the other types, which types run a season with subscriptions, how many venues
an institution has, and that the sector is mostly Dutch (Flemish regions weigh `BE_WEIGHT` of
their population when placing anything but a Flemish cultural centre).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from protocols.vocabulary import DISCIPLINES, INSTITUTION_TYPES
from synthetic.geography import (
    CITIES,
    COUNTRY_OF_REGION,
    REGION_POPULATION_M,
    City,
    to_latlon,
    to_xy,
)
from synthetic.params import SimulationParams

FloatArray = npt.NDArray[np.float64]

# Programme formats: what a "performance" is at each type.
STAGE, SCREENINGS, TIMESLOTS, EDITION = "stage", "screenings", "timeslots", "edition"
FORMAT_OF_TYPE: Final[dict[str, str]] = {
    "theatre": STAGE,
    "concert_hall": STAGE,
    "poppodium": STAGE,
    "be_cultural_centre": STAGE,
    "filmhuis": SCREENINGS,
    "museum": TIMESLOTS,
    "festival": EDITION,
}

# Types that sell a season (subscriptions, a season launch); the YAML's season-launch share and
# subscription price type apply only to them.
SEASON_TYPES: Final[frozenset[str]] = frozenset({"theatre", "concert_hall", "be_cultural_centre"})

# Discipline mixes (ticket shares) of the types other than the general theatre, whose mix comes
# from the YAML. Assumptions chosen to match the domain notes' descriptions.
_TYPE_DISCIPLINE_MIX: Final[dict[str, dict[str, float]]] = {
    "concert_hall": {
        "klassieke_muziek": 0.62,
        "opera_muziektheater": 0.08,
        "populaire_muziek": 0.14,
        "jeugd_familie": 0.04,
        "dans": 0.04,
        "literatuur_lezing": 0.03,
        "overig": 0.05,
    },
    "poppodium": {
        "populaire_muziek": 0.90,
        "cabaret_kleinkunst": 0.03,
        "dans": 0.02,
        "overig": 0.05,
    },
    "filmhuis": {"film": 0.97, "literatuur_lezing": 0.03},
    "museum": {
        "museum_tentoonstelling": 0.75,
        "erfgoed": 0.20,
        "literatuur_lezing": 0.03,
        "jeugd_familie": 0.02,
    },
    "festival": {"festival_multidisciplinair": 0.60, "populaire_muziek": 0.40},
    "be_cultural_centre": {
        "toneel": 0.15,
        "cabaret_kleinkunst": 0.14,
        "populaire_muziek": 0.16,
        "klassieke_muziek": 0.08,
        "jeugd_familie": 0.12,
        "dans": 0.07,
        "film": 0.08,
        "literatuur_lezing": 0.05,
        "amateur": 0.07,
        "musical_operette": 0.04,
        "overig": 0.04,
    },
}

# Which `distance_km_lognormal_median` key describes each type's catchment. Theatres in cities
# of at least CITY_THEATRE_MIN_K thousand inhabitants are city theatres, others regional ones.
# Poppodia and Flemish cultural centres have no key of their own: a poppodium draws like a
# regional theatre, a cultural centre serves its municipality like a city theatre.
CITY_THEATRE_MIN_K: Final[int] = 150
_DISTANCE_KEY: Final[dict[str, str]] = {
    "concert_hall": "concert_hall",
    "poppodium": "regional_theatre",
    "filmhuis": "filmhuis",
    "museum": "museum_large",
    "festival": "festival",
    "be_cultural_centre": "city_theatre",
}

# Share of institutions with a second venue (a second stage building, a second museum site).
_SECOND_VENUE_SHARE: Final[dict[str, float]] = {"theatre": 0.25, "museum": 0.20}

# Weight of a Flemish/Brussels region relative to its population when placing institutions
# other than Flemish cultural centres: the federation is mostly Dutch.
BE_WEIGHT: Final[float] = 0.35
_FLEMISH: Final[frozenset[str]] = frozenset(
    {"BE-BRU", "BE-VAN", "BE-VLI", "BE-VOV", "BE-VBR", "BE-VWV"}
)

_NAME_TEMPLATES: Final[dict[str, tuple[str, ...]]] = {
    "theatre": ("Stadsschouwburg {city}", "Theater {city}", "Schouwburg {city}"),
    "concert_hall": ("Concertgebouw {city}", "Muziekcentrum {city}"),
    "poppodium": ("Poppodium {city}", "Muziekpodium {city}"),
    "filmhuis": ("Filmhuis {city}", "Filmtheater {city}"),
    "museum": ("Museum {city}", "Stedelijk Museum {city}", "Kunstmuseum {city}"),
    "festival": ("Festival {city}", "Zomerfestival {city}"),
    "be_cultural_centre": ("CC {city}", "Cultuurcentrum {city}"),
}

# Annual tickets are lognormal; draws beyond this many standard deviations are redrawn. The
# tail beyond it is national institutions (a Rijksmuseum, a Concertgebouw), which would
# otherwise land in a provincial town and dwarf a small synthetic sector.
SIZE_TRUNCATION_SD: Final[float] = 2.0

# Random jitter (km) of an institution around its city's centre, so two venues in one city are
# not on the same spot.
_CITY_JITTER_KM: Final[float] = 1.0


@dataclass(frozen=True, slots=True)
class Institution:
    """Public metadata of one institution (what institutions.json lists)."""

    institution_id: str
    name: str
    type: str
    region: str
    country: str
    lat: float
    lon: float
    venue_ids: tuple[str, ...]
    city: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "institution_id": self.institution_id,
            "name": self.name,
            "type": self.type,
            "region": self.region,
            "country": self.country,
            "city": self.city,
            "lat": self.lat,
            "lon": self.lon,
            "venue_ids": list(self.venue_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Institution:
        return cls(
            institution_id=str(data["institution_id"]),
            name=str(data["name"]),
            type=str(data["type"]),
            region=str(data["region"]),
            country=str(data["country"]),
            lat=float(data["lat"]),
            lon=float(data["lon"]),
            venue_ids=tuple(str(v) for v in data["venue_ids"]),
            city=str(data.get("city", "")),
        )


@dataclass(frozen=True, slots=True)
class InstitutionPlan:
    """Everything the generator needs about one institution beyond its public metadata."""

    index: int
    institution: Institution
    format: str
    sells_season: bool
    discipline_mix: FloatArray  # over DISCIPLINES, sums to 1
    distance_median_km: float
    x: float
    y: float
    tickets_by_year: Mapping[int, float]  # expected tickets (all statuses) per calendar year


def discipline_mix(institution_type: str, params: SimulationParams) -> FloatArray:
    shares = (
        params.genre_mix_general_theatre
        if institution_type == "theatre"
        else _TYPE_DISCIPLINE_MIX[institution_type]
    )
    mix = np.zeros(len(DISCIPLINES))
    for discipline, share in shares.items():
        mix[DISCIPLINES.index(discipline)] = share
    return np.asarray(mix / mix.sum(), dtype=np.float64)


def allocate_largest_remainder(
    shares: Mapping[str, float], n: int, rng: np.random.Generator
) -> dict[str, int]:
    """Split `n` items over `shares` so every count is the floor or ceiling of its quota.

    Ties between equal remainders are broken at random (seeded), not by dictionary order.
    """
    keys = list(shares)
    quota = np.asarray([shares[k] for k in keys]) * n
    counts = np.floor(quota).astype(np.int64)
    remainder = quota - counts
    tiebreak = rng.random(len(keys))
    order = np.lexsort((tiebreak, -remainder))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    return {k: int(c) for k, c in zip(keys, counts, strict=True)}


def _distance_median(institution_type: str, city: City, params: SimulationParams) -> float:
    if institution_type == "theatre":
        key = "city_theatre" if city.population_k >= CITY_THEATRE_MIN_K else "regional_theatre"
    else:
        key = _DISTANCE_KEY[institution_type]
    return params.distance_median_km[key]


def _choose_city(institution_type: str, rng: np.random.Generator) -> City:
    if institution_type == "be_cultural_centre":
        weights = {r: REGION_POPULATION_M[r] for r in _FLEMISH}
    else:
        weights = {
            r: p * (BE_WEIGHT if r in _FLEMISH else 1.0)
            for r, p in REGION_POPULATION_M.items()
            if COUNTRY_OF_REGION[r] == "NL" or r in _FLEMISH
        }
    regions = sorted(weights)
    w = np.asarray([weights[r] for r in regions])
    region = regions[int(rng.choice(len(regions), p=w / w.sum()))]
    cities = [c for c in CITIES if c.region == region]
    cw = np.asarray([c.population_k for c in cities], dtype=np.float64)
    return cities[int(rng.choice(len(cities), p=cw / cw.sum()))]


def build_institutions(
    n: int, years: tuple[int, ...], scale: float, params: SimulationParams, rng: np.random.Generator
) -> tuple[InstitutionPlan, ...]:
    counts = allocate_largest_remainder(params.institutions.type_mix, n, rng)
    types = [t for t in INSTITUTION_TYPES for _ in range(counts[t])]
    types = [types[i] for i in rng.permutation(len(types))]
    width = max(2, len(str(n)))
    sigma = params.institutions.tickets_per_year_sigma_log
    used_names: set[str] = set()
    plans = []
    for index, institution_type in enumerate(types):
        institution_id = f"inst-{index + 1:0{width}d}"
        city = _choose_city(institution_type, rng)
        cx, cy = to_xy(city.lat, city.lon)
        x = float(cx) + float(rng.normal(0.0, _CITY_JITTER_KM))
        y = float(cy) + float(rng.normal(0.0, _CITY_JITTER_KM))
        lat, lon = to_latlon(x, y)
        n_venues = 2 if rng.random() < _SECOND_VENUE_SHARE.get(institution_type, 0.0) else 1
        base = params.institutions.tickets_per_year_median[institution_type] * float(
            np.exp(sigma * _truncated_normal(rng))
        )
        name = _unique_name(institution_type, city.name, used_names)
        institution = Institution(
            institution_id=institution_id,
            name=name,
            type=institution_type,
            region=city.region,
            country=COUNTRY_OF_REGION[city.region],
            lat=round(float(lat), 5),
            lon=round(float(lon), 5),
            venue_ids=tuple(f"{institution_id}-v{k + 1}" for k in range(n_venues)),
            city=city.name,
        )
        plans.append(
            InstitutionPlan(
                index=index,
                institution=institution,
                format=FORMAT_OF_TYPE[institution_type],
                sells_season=institution_type in SEASON_TYPES,
                discipline_mix=discipline_mix(institution_type, params),
                distance_median_km=_distance_median(institution_type, city, params),
                x=x,
                y=y,
                tickets_by_year={y_: base * scale * params.activity_index(y_) for y_ in years},
            )
        )
    return tuple(plans)


def _truncated_normal(rng: np.random.Generator) -> float:
    """A standard normal draw redrawn until it lies within `SIZE_TRUNCATION_SD`."""
    while True:
        z = float(rng.normal())
        if abs(z) <= SIZE_TRUNCATION_SD:
            return z


def _unique_name(institution_type: str, city: str, used: set[str]) -> str:
    for template in _NAME_TEMPLATES[institution_type]:
        name = template.format(city=city)
        if name not in used:
            used.add(name)
            return name
    k = 2
    while True:
        name = f"{_NAME_TEMPLATES[institution_type][0].format(city=city)} {k}"
        if name not in used:
            used.add(name)
            return name
        k += 1
