"""The programme: every performance, screening, museum timeslot and festival show of each year.

From simulation.yaml: 200-240 performances per stage venue and year
(`performances_per_year_venue`), the occupancy mean (used as the mean of each performance's
popularity, so sold/capacity lands near it), prices (`pricing.py`) and the activity index of the
year (fewer performances in a year below 2019's level). Assumptions of this module: the season
(few stage performances in July and August), weekday and time-of-day patterns, how many screens
a film house and how many timeslots a museum has, and festival editions of two to four days in
early summer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

from protocols.vocabulary import DISCIPLINES, INSTITUTION_TYPES
from synthetic.institutions import EDITION, SCREENINGS, STAGE, TIMESLOTS, InstitutionPlan
from synthetic.params import SimulationParams
from synthetic.pricing import draw_base_prices

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Every venue gets at least this many performances a year, so that even a tiny (scaled-down)
# sector has a programme spread over the year.
MIN_PERFORMANCES_PER_VENUE_YEAR: Final[int] = 12

# Month weights (January first) and weekday weights (Monday first) of each format.
_MONTHS: Final[dict[str, tuple[float, ...]]] = {
    STAGE: (0.10, 0.10, 0.11, 0.10, 0.08, 0.05, 0.01, 0.02, 0.08, 0.12, 0.12, 0.11),
    SCREENINGS: (1.0, 1.0, 1.0, 0.9, 0.8, 0.8, 0.9, 0.9, 1.0, 1.1, 1.1, 1.1),
    TIMESLOTS: (0.8, 0.8, 0.9, 1.0, 1.0, 1.0, 1.3, 1.3, 0.9, 1.0, 0.9, 1.1),
}
_WEEKDAYS: Final[dict[str, tuple[float, ...]]] = {
    STAGE: (0.3, 0.6, 0.9, 1.2, 1.5, 1.6, 0.9),
    SCREENINGS: (0.8, 0.8, 0.9, 1.0, 1.2, 1.3, 1.2),
    TIMESLOTS: (0.0, 0.9, 0.9, 0.9, 0.9, 1.4, 1.5),  # closed on Mondays
}
# Start times in minutes after midnight, with weights.
_EVENING: Final[tuple[tuple[int, ...], tuple[float, ...]]] = ((1170, 1200, 1215), (0.25, 0.35, 0.4))
_MATINEE: Final[tuple[tuple[int, ...], tuple[float, ...]]] = ((840, 870, 900), (0.3, 0.4, 0.3))
_FAMILY: Final[tuple[tuple[int, ...], tuple[float, ...]]] = ((870, 960), (0.5, 0.5))
_SCREENING_TIMES: Final[tuple[tuple[int, ...], tuple[float, ...]]] = (
    (660, 810, 960, 1140, 1290),
    (0.05, 0.15, 0.2, 0.35, 0.25),
)
_TIMESLOT_TIMES: Final[tuple[int, ...]] = tuple(range(600, 1000, 30))  # 10:00 .. 16:30
_FESTIVAL_TIMES: Final[tuple[int, ...]] = tuple(range(720, 1380, 30))  # 12:00 .. 22:30
_SUNDAY_MATINEE_SHARE: Final[float] = 0.5

_SCREENS_PER_VENUE: Final[tuple[int, int]] = (2, 4)
_SCREENINGS_PER_SCREEN_DAY: Final[int] = 4
_OPEN_DAYS: Final[int] = 360
_TIMESLOT_OPEN_DAYS: Final[int] = 310
_FESTIVAL_DAYS: Final[tuple[int, int]] = (2, 4)
_FESTIVAL_SHOWS_PER_DAY: Final[tuple[int, int]] = (8, 16)
_FESTIVAL_SEASON: Final[tuple[tuple[int, int], tuple[int, int]]] = ((5, 15), (8, 31))
# Popularity of a performance: Beta with the YAML's occupancy mean and this concentration.
POPULARITY_CONCENTRATION: Final[float] = 4.0
# Share of a two-venue institution's performances in its main venue.
_MAIN_VENUE_SHARE: Final[float] = 0.65

_EPOCH: Final[dt.date] = dt.date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Programme:
    """All performances of all institutions, one row per performance (sorted by institution,
    then start time)."""

    institution: IntArray
    year: IntArray  # index into the config's years
    venue: IntArray  # index into the institution's venue_ids
    discipline: IntArray  # index into DISCIPLINES
    start: IntArray  # seconds since 1970-01-01T00:00, local time
    popularity: FloatArray  # relative demand; mean = the YAML's occupancy mean
    base_price: FloatArray  # full price of a standard seat, EUR
    is_stage: npt.NDArray[np.bool_]  # a stage performance: seats, hence a capacity
    has_zones: npt.NDArray[np.bool_]  # seated halls of season institutions sell price zones
    number: IntArray  # performance number within its institution (for performance_id)

    def __len__(self) -> int:
        return len(self.institution)


def _day_number(year: int, month: int = 1, day: int = 1) -> int:
    return (dt.date(year, month, day) - _EPOCH).days


def _allocate_disciplines(mix: FloatArray, n: int, rng: np.random.Generator) -> IntArray:
    """Disciplines of `n` performances: counts by largest remainder, at least one of each
    discipline of the mix when `n` allows it (so every discipline can be booked every year)."""
    present = np.flatnonzero(mix > 0)
    quota = mix[present] * n
    counts = np.floor(quota).astype(np.int64)
    if n >= len(present):
        counts = np.maximum(counts, 1)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    k = 0
    while counts.sum() < n:
        counts[order[k % len(order)]] += 1
        k += 1
    while counts.sum() > n:
        largest = int(np.argmax(counts))
        counts[largest] -= 1
    out = np.repeat(present, counts)
    return out[rng.permutation(len(out))]


def _pick(
    options: tuple[int, ...], weights: tuple[float, ...] | None, n: int, rng: np.random.Generator
) -> IntArray:
    w = None if weights is None else np.asarray(weights) / sum(weights)
    return np.asarray(options, dtype=np.int64)[rng.choice(len(options), size=n, p=w)]


def _days(year: int, fmt: str, n: int, rng: np.random.Generator) -> IntArray:
    days, weights = _day_weights(year, fmt)
    return days[rng.choice(len(days), size=n, p=weights)]


@lru_cache(maxsize=256)
def _day_weights(year: int, fmt: str) -> tuple[IntArray, FloatArray]:
    first = _day_number(year)
    n_days = _day_number(year + 1) - first
    day = np.arange(first, first + n_days, dtype=np.int64)
    month = np.asarray([(_EPOCH + dt.timedelta(days=int(d))).month for d in day], dtype=np.int64)
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    w = np.asarray(_MONTHS[fmt])[month - 1] * np.asarray(_WEEKDAYS[fmt])[weekday]
    return day, w / w.sum()


def _stage_times(day: IntArray, discipline: IntArray, rng: np.random.Generator) -> IntArray:
    n = len(day)
    minutes = _pick(*_EVENING, n, rng)
    sunday = (day + 3) % 7 == 6
    matinee = sunday & (rng.random(n) < _SUNDAY_MATINEE_SHARE)
    minutes = np.where(matinee, _pick(*_MATINEE, n, rng), minutes)
    family = discipline == DISCIPLINES.index("jeugd_familie")
    return np.where(family, _pick(*_FAMILY, n, rng), minutes)


def _count(
    plan: InstitutionPlan,
    activity: float,
    scale: float,
    params: SimulationParams,
    rng: np.random.Generator,
) -> int:
    if plan.format == STAGE:
        low, high = params.institutions.performances_per_year_venue
        base = float(rng.integers(low, high + 1))
    elif plan.format == SCREENINGS:
        screens = int(rng.integers(_SCREENS_PER_VENUE[0], _SCREENS_PER_VENUE[1] + 1))
        base = float(screens * _SCREENINGS_PER_SCREEN_DAY * _OPEN_DAYS)
    elif plan.format == TIMESLOTS:
        base = float(len(_TIMESLOT_TIMES) * _TIMESLOT_OPEN_DAYS)
    else:
        raise ValueError(plan.format)
    return max(MIN_PERFORMANCES_PER_VENUE_YEAR, round(base * scale * min(1.0, activity)))


def _festival(
    year: int, scale: float, activity: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """(day, minutes) of the shows of one festival edition."""
    (m1, d1), (m2, d2) = _FESTIVAL_SEASON
    n_days = int(rng.integers(_FESTIVAL_DAYS[0], _FESTIVAL_DAYS[1] + 1))
    first = _day_number(year, m1, d1) + int(
        rng.integers(0, _day_number(year, m2, d2) - _day_number(year, m1, d1) - n_days + 2)
    )
    per_day = int(rng.integers(_FESTIVAL_SHOWS_PER_DAY[0], _FESTIVAL_SHOWS_PER_DAY[1] + 1))
    n = max(MIN_PERFORMANCES_PER_VENUE_YEAR, round(n_days * per_day * scale * min(1.0, activity)))
    day = first + rng.integers(0, n_days, size=n)
    minutes = _pick(_FESTIVAL_TIMES, None, n, rng)
    return day.astype(np.int64), minutes


def build_programme(
    plans: tuple[InstitutionPlan, ...],
    years: tuple[int, ...],
    scale: float,
    params: SimulationParams,
    rng: np.random.Generator,
) -> Programme:
    parts: dict[str, list[npt.NDArray[np.generic]]] = {
        k: [] for k in ("institution", "year", "venue", "discipline", "start", "stage", "zones")
    }
    for plan in plans:
        n_venues = len(plan.institution.venue_ids)
        for yi, year in enumerate(years):
            activity = params.activity_index(year)
            if plan.format == EDITION:
                day, minutes = _festival(year, scale, activity, rng)
                venue = np.zeros(len(day), dtype=np.int64)
            else:
                counts = [_count(plan, activity, scale, params, rng) for _ in range(n_venues)]
                venue = np.repeat(np.arange(n_venues, dtype=np.int64), counts)
                day = _days(year, plan.format, len(venue), rng)
                minutes = np.zeros(len(venue), dtype=np.int64)  # filled in below
            n = len(day)
            discipline = _allocate_disciplines(plan.discipline_mix, n, rng)
            if plan.format == STAGE:
                minutes = _stage_times(day, discipline, rng)
            elif plan.format == SCREENINGS:
                minutes = _pick(*_SCREENING_TIMES, n, rng)
            elif plan.format == TIMESLOTS:
                minutes = _pick(_TIMESLOT_TIMES, None, n, rng)
            if n_venues > 1 and plan.format != EDITION:
                # Main venue gets most of the programme; redistribute the venue labels.
                venue = np.where(
                    rng.random(n) < _MAIN_VENUE_SHARE, 0, 1 + rng.integers(0, n_venues - 1, n)
                )
            parts["institution"].append(np.full(n, plan.index, dtype=np.int64))
            parts["year"].append(np.full(n, yi, dtype=np.int64))
            parts["venue"].append(venue.astype(np.int64))
            parts["discipline"].append(discipline)
            parts["start"].append(day * 86400 + minutes * 60)
            parts["stage"].append(np.full(n, plan.format == STAGE))
            parts["zones"].append(np.full(n, plan.format == STAGE and plan.sells_season))

    institution = np.concatenate(parts["institution"]).astype(np.int64)
    start = np.concatenate(parts["start"]).astype(np.int64)
    order = np.lexsort((start, institution))
    institution = institution[order]
    start = start[order]
    discipline = np.concatenate(parts["discipline"]).astype(np.int64)[order]
    n_total = len(order)
    occupancy = params.institutions.occupancy_mean
    popularity = rng.beta(
        POPULARITY_CONCENTRATION * occupancy, POPULARITY_CONCENTRATION * (1.0 - occupancy), n_total
    )
    type_codes = np.asarray([INSTITUTION_TYPES.index(p.institution.type) for p in plans])
    base_price = draw_base_prices(discipline, type_codes[institution], params, rng)
    # Film houses and museums charge one price per institution, not per screening or slot.
    for plan in plans:
        if plan.format in (SCREENINGS, TIMESLOTS):
            mine = institution == plan.index
            if mine.any():
                base_price[mine] = base_price[np.flatnonzero(mine)[0]]
    first_of_institution = np.searchsorted(institution, institution, side="left")
    return Programme(
        institution=institution,
        year=np.concatenate(parts["year"]).astype(np.int64)[order],
        venue=np.concatenate(parts["venue"]).astype(np.int64)[order],
        discipline=discipline,
        start=start,
        popularity=popularity,
        base_price=base_price,
        is_stage=np.concatenate(parts["stage"]).astype(np.bool_)[order],
        has_zones=np.concatenate(parts["zones"]).astype(np.bool_)[order],
        number=np.arange(n_total, dtype=np.int64) - first_of_institution + 1,
    )
