"""The simulation parameters of `simulation.yaml`, loaded into typed, validated, frozen objects.

`simulation.yaml` is a byte-identical copy of `../shared/domain/simulation.yaml` (a test checks
this). Every number of the domain notes that the generator uses is read from here, so changing
the sector means changing the YAML, not the code. Ranges in the YAML (e.g. `[0.80, 0.95]`) are
kept as ranges: the generator draws one value per institution inside them, because real
institutions differ in data quality.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import yaml

from protocols.vocabulary import CHANNELS, DISCIPLINES, INSTITUTION_TYPES, PRICE_TYPES

DEFAULT_PARAMS_PATH: Final[Path] = Path(__file__).with_name("simulation.yaml")

# The order of the four age bands of `age_band_shares_of_bookers`.
AGE_BANDS: Final[tuple[str, ...]] = ("18-34", "35-49", "50-64", "65+")
AGE_BAND_LOWER: Final[tuple[int, ...]] = (18, 35, 50, 65)

_SUM_TOLERANCE: Final[float] = 1e-6


@dataclass(frozen=True, slots=True)
class PmfBin:
    """One bin of a probability mass function over counts: `low..high` inclusive.

    `high` is None for an open bin such as ">10" (the generator decides how far it reaches).
    """

    low: int
    high: int | None
    probability: float

    def contains(self, value: int) -> bool:
        return value >= self.low and (self.high is None or value <= self.high)

    @property
    def label(self) -> str:
        if self.high is None:
            return f">{self.low - 1}"
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True, slots=True)
class Range:
    """A closed interval `[low, high]` of the YAML."""

    low: float
    high: float

    @property
    def mid(self) -> float:
        return (self.low + self.high) / 2.0


@dataclass(frozen=True, slots=True)
class InstitutionParams:
    count: Range
    type_mix: Mapping[str, float]
    tickets_per_year_median: Mapping[str, float]
    tickets_per_year_sigma_log: float
    performances_per_year_venue: tuple[int, int]
    occupancy_mean: float


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    share: float
    bookings_lambda: float


@dataclass(frozen=True, slots=True)
class PopulationParams:
    tiers: tuple[Tier, ...]
    latent_segments: int

    def tier(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class OrderParams:
    tickets_per_order: tuple[PmfBin, ...]
    channel_mix: Mapping[str, float]
    lead_time_median_single_days: float
    lead_time_median_season_launch_days: float
    share_sold_at_season_launch: float


@dataclass(frozen=True, slots=True)
class FrequencyParams:
    pmf: tuple[PmfBin, ...]
    yoy_retention: float


@dataclass(frozen=True, slots=True)
class CrossVisitingParams:
    share_single_venue_city_year: float
    mean_venues_per_booker_multi_year: float
    omnivore_share_3plus_venues: Range


@dataclass(frozen=True, slots=True)
class IdentityParams:
    email_present_online: Range
    email_present_box_office: Range
    birth_year_missing: Range
    duplicate_accounts_within_institution: float


@dataclass(frozen=True, slots=True)
class SimulationParams:
    institutions: InstitutionParams
    population: PopulationParams
    orders: OrderParams
    frequency: FrequencyParams
    cross_visiting: CrossVisitingParams
    identity: IdentityParams
    age_band_shares: Mapping[str, tuple[float, float, float, float]]
    distance_median_km: Mapping[str, float]
    distance_sigma_log: float
    price_mean_sd: Mapping[str, tuple[float, float]]
    price_type_mix: Mapping[str, float]
    genre_mix_general_theatre: Mapping[str, float]
    covid_index: Mapping[int, float]

    def activity_index(self, year: int) -> float:
        """Sector activity in `year` relative to 2019 (1.0 = 2019).

        Years before the table use its first entry and years after it its last one (114 for 2025
        onwards): the sector is assumed to stay at its latest known level.
        """
        years = sorted(self.covid_index)
        if year <= years[0]:
            return self.covid_index[years[0]] / 100.0
        if year >= years[-1]:
            return self.covid_index[years[-1]] / 100.0
        return self.covid_index[year] / 100.0


class ParamsError(ValueError):
    """simulation.yaml is missing a key or holds an inconsistent value."""


def _mapping(node: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(node, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(node).__name__}")
    return {str(k): v for k, v in node.items()}


def _float(node: Any, where: str) -> float:
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise ParamsError(f"{where}: expected a number, got {node!r}")
    return float(node)


def _range(node: Any, where: str) -> Range:
    if not isinstance(node, list) or len(node) != 2:
        raise ParamsError(f"{where}: expected [low, high], got {node!r}")
    low, high = _float(node[0], where), _float(node[1], where)
    if low > high:
        raise ParamsError(f"{where}: low {low} is above high {high}")
    return Range(low, high)


def _shares(node: Any, where: str, vocabulary: tuple[str, ...] | None) -> dict[str, float]:
    shares = {k: _float(v, f"{where}.{k}") for k, v in _mapping(node, where).items()}
    if vocabulary is not None:
        unknown = sorted(set(shares) - set(vocabulary))
        if unknown:
            raise ParamsError(f"{where}: unknown codes {unknown}")
    if any(v < 0 for v in shares.values()):
        raise ParamsError(f"{where}: negative share")
    total = sum(shares.values())
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ParamsError(f"{where}: shares sum to {total}, not 1")
    return shares


def _bin(key: str, probability: float, where: str) -> PmfBin:
    text = key.strip()
    try:
        if text.startswith(">"):
            return PmfBin(int(text[1:]) + 1, None, probability)
        if "-" in text:
            low, high = (int(part) for part in text.split("-", 1))
            if low > high:
                raise ParamsError(f"{where}: empty bin {key!r}")
            return PmfBin(low, high, probability)
        value = int(text)
    except ValueError as exc:
        raise ParamsError(f"{where}: cannot read bin {key!r}") from exc
    return PmfBin(value, value, probability)


def _pmf(node: Any, where: str) -> tuple[PmfBin, ...]:
    shares = _shares(node, where, None)
    bins = sorted((_bin(k, p, where) for k, p in shares.items()), key=lambda b: b.low)
    for before, after in itertools.pairwise(bins):
        if before.high is None or before.high >= after.low:
            raise ParamsError(f"{where}: bins {before.label} and {after.label} overlap")
    return tuple(bins)


def parse_params(raw: Any) -> SimulationParams:
    """Validate the parsed YAML document and turn it into `SimulationParams`."""
    doc = _mapping(raw, "simulation.yaml")
    try:
        inst = _mapping(doc["institutions"], "institutions")
        type_mix = _shares(inst["type_mix"], "institutions.type_mix", INSTITUTION_TYPES)
        if set(type_mix) != set(INSTITUTION_TYPES):
            raise ParamsError("institutions.type_mix must name every institution type")
        medians = {
            k: _float(v, f"institutions.tickets_per_year_lognormal_median.{k}")
            for k, v in _mapping(
                inst["tickets_per_year_lognormal_median"], "tickets_per_year_lognormal_median"
            ).items()
        }
        if set(medians) != set(INSTITUTION_TYPES):
            raise ParamsError("tickets_per_year_lognormal_median must name every type")
        perf = _range(inst["performances_per_year_venue"], "performances_per_year_venue")
        institutions = InstitutionParams(
            count=_range(inst["count"], "institutions.count"),
            type_mix=type_mix,
            tickets_per_year_median=medians,
            tickets_per_year_sigma_log=_float(
                inst["tickets_per_year_sigma_log"], "tickets_per_year_sigma_log"
            ),
            performances_per_year_venue=(int(perf.low), int(perf.high)),
            occupancy_mean=_float(inst["occupancy_mean"], "occupancy_mean"),
        )

        pop = _mapping(doc["population"], "population")
        tiers_raw = _mapping(pop["engagement_tiers"], "population.engagement_tiers")
        tiers = tuple(
            Tier(
                name=name,
                share=_float(_mapping(t, name)["share"], f"{name}.share"),
                bookings_lambda=_float(_mapping(t, name)["bookings_lambda"], f"{name}.lambda"),
            )
            for name, t in tiers_raw.items()
        )
        if abs(sum(t.share for t in tiers) - 1.0) > _SUM_TOLERANCE:
            raise ParamsError("population.engagement_tiers: shares do not sum to 1")
        population = PopulationParams(tiers=tiers, latent_segments=int(pop["latent_segments"]))

        orders_raw = _mapping(doc["orders"], "orders")
        lead = _mapping(orders_raw["lead_time_days_lognormal_median"], "lead_time")
        orders = OrderParams(
            tickets_per_order=_pmf(orders_raw["tickets_per_order_pmf"], "tickets_per_order_pmf"),
            channel_mix=_shares(orders_raw["channel"], "orders.channel", CHANNELS),
            lead_time_median_single_days=_float(lead["single"], "lead_time.single"),
            lead_time_median_season_launch_days=_float(lead["season_launch"], "season_launch"),
            share_sold_at_season_launch=_float(
                orders_raw["share_sold_at_season_launch"], "share_sold_at_season_launch"
            ),
        )

        freq_raw = _mapping(doc["frequency_per_institution_year"], "frequency")
        frequency = FrequencyParams(
            pmf=_pmf(freq_raw["pmf"], "frequency_per_institution_year.pmf"),
            yoy_retention=_float(freq_raw["yoy_retention"], "yoy_retention"),
        )

        cross_raw = _mapping(doc["cross_visiting"], "cross_visiting")
        cross = CrossVisitingParams(
            share_single_venue_city_year=_float(
                cross_raw["share_single_venue_city_year"], "share_single_venue_city_year"
            ),
            mean_venues_per_booker_multi_year=_float(
                cross_raw["mean_venues_per_booker_multi_year"], "mean_venues_per_booker"
            ),
            omnivore_share_3plus_venues=_range(
                cross_raw["omnivore_share_3plus_venues"], "omnivore_share_3plus_venues"
            ),
        )

        ident_raw = _mapping(doc["identity"], "identity")
        email = _mapping(ident_raw["email_present"], "identity.email_present")
        identity = IdentityParams(
            email_present_online=_range(email["online"], "email_present.online"),
            email_present_box_office=_range(email["box_office"], "email_present.box_office"),
            birth_year_missing=_range(ident_raw["birth_year_missing"], "birth_year_missing"),
            duplicate_accounts_within_institution=_float(
                ident_raw["duplicate_accounts_within_institution"], "duplicate_accounts"
            ),
        )

        ages: dict[str, tuple[float, float, float, float]] = {}
        for family, shares in _mapping(doc["age_band_shares_of_bookers"], "age_bands").items():
            if not isinstance(shares, list) or len(shares) != len(AGE_BANDS):
                raise ParamsError(f"age_band_shares_of_bookers.{family}: need 4 shares")
            values = [_float(v, f"age_band_shares_of_bookers.{family}") for v in shares]
            if abs(sum(values) - 1.0) > _SUM_TOLERANCE:
                raise ParamsError(f"age_band_shares_of_bookers.{family}: does not sum to 1")
            ages[family] = (values[0], values[1], values[2], values[3])

        prices: dict[str, tuple[float, float]] = {}
        for family, pair in _mapping(doc["price_eur_mean_sd"], "price_eur_mean_sd").items():
            if not isinstance(pair, list) or len(pair) != 2:
                raise ParamsError(f"price_eur_mean_sd.{family}: expected [mean, sd]")
            mean, sd = _float(pair[0], family), _float(pair[1], family)
            if mean <= 0 or sd < 0:
                raise ParamsError(f"price_eur_mean_sd.{family}: mean must be > 0 and sd >= 0")
            prices[family] = (mean, sd)

        covid = {
            int(year): _float(value, f"covid_index_vs_2019.{year}")
            for year, value in _mapping(doc["covid_index_vs_2019"], "covid_index").items()
        }
        if not covid or any(v <= 0 for v in covid.values()):
            raise ParamsError("covid_index_vs_2019: need positive values")

        return SimulationParams(
            institutions=institutions,
            population=population,
            orders=orders,
            frequency=frequency,
            cross_visiting=cross,
            identity=identity,
            age_band_shares=ages,
            distance_median_km={
                k: _float(v, f"distance_km_lognormal_median.{k}")
                for k, v in _mapping(doc["distance_km_lognormal_median"], "distance").items()
            },
            distance_sigma_log=_float(doc["distance_sigma_log"], "distance_sigma_log"),
            price_mean_sd=prices,
            price_type_mix=_shares(doc["price_type_mix"], "price_type_mix", PRICE_TYPES),
            genre_mix_general_theatre=_shares(
                doc["genre_mix_general_theatre"], "genre_mix_general_theatre", DISCIPLINES
            ),
            covid_index=covid,
        )
    except KeyError as exc:
        raise ParamsError(f"simulation.yaml: missing key {exc.args[0]!r}") from exc


def load_params(path: Path | None = None) -> SimulationParams:
    """Load and validate a simulation parameter file (the vendored copy by default)."""
    if path is None:
        return _default_params()
    with path.open(encoding="utf-8") as fh:
        return parse_params(yaml.safe_load(fh))


@lru_cache(maxsize=1)
def _default_params() -> SimulationParams:
    with DEFAULT_PARAMS_PATH.open(encoding="utf-8") as fh:
        return parse_params(yaml.safe_load(fh))
