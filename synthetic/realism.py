"""Measuring a generated sector against the targets of simulation.yaml and the domain notes.

`realism_report` computes, from the ground truth, the statistics the generator was calibrated
to (frequency per institution-year, retention, cross-visiting, age skews, order habits, identity
completeness, travel distances, occupancy), each next to its target. The tests assert on these
numbers and `python -m synthetic report DIR` prints them.

Frequencies count orders with paid tickets of identified people (walk-ins have no person), per
institution and calendar year of the performance, which is how an institution would count its
bookers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl

from synthetic.geography import to_xy
from synthetic.identity import ONLINE_CHANNELS
from synthetic.params import AGE_BAND_LOWER, AGE_BANDS, SimulationParams
from synthetic.sector import Sector

# A "city" booker for the cross-visiting statistics lives within this distance of two or more
# institutions of the sector: the domain notes' 85% single-venue share is about such people.
CITY_RADIUS_KM: Final[float] = 10.0

# Disciplines whose bookers each of the YAML's age families describes.
AGE_FAMILY_DISCIPLINES: Final[dict[str, tuple[str, ...]]] = {
    "classical_opera": ("klassieke_muziek", "opera_muziektheater"),
    "toneel_cabaret_musical": ("toneel", "cabaret_kleinkunst", "musical_operette"),
    "popular_music": ("populaire_muziek",),
    "film": ("film",),
    "museum": ("museum_tentoonstelling", "erfgoed"),
}

# The institution type each of the YAML's distance keys describes (theatres are split into
# city and regional ones, which the report does not try to separate).
DISTANCE_KEY_OF_TYPE: Final[dict[str, str]] = {
    "concert_hall": "concert_hall",
    "museum": "museum_large",
    "festival": "festival",
    "filmhuis": "filmhuis",
}


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    measured: float
    target: float | None
    note: str = ""


def _num(value: object) -> float:
    """A polars scalar as a float (NaN when empty)."""
    if isinstance(value, bool | int | float):
        return float(value)
    return float("nan")


def frequency_pmf(sector: Sector, params: SimulationParams) -> dict[str, float]:
    """Share of (institution, person, year) bookers in each of the YAML's frequency bins."""
    orders = sector.truth.visits_per_person_institution()["orders"].to_numpy()
    out = {}
    for b in params.frequency.pmf:
        high = np.inf if b.high is None else b.high
        inside = (orders >= b.low) & (orders <= high)
        out[b.label] = float(inside.mean()) if len(orders) else float("nan")
    return out


def top_decile_share(sector: Sector) -> float:
    """Share of orders made by the top 10% of (institution, person, year) bookers."""
    orders = np.sort(sector.truth.visits_per_person_institution()["orders"].to_numpy())[::-1]
    if len(orders) == 0:
        return float("nan")
    return float(orders[: max(1, len(orders) // 10)].sum() / orders.sum())


def retention(sector: Sector) -> float:
    """Share of a year's (institution, person) bookers who book there again the next year,
    pooled over institutions and consecutive configured years."""
    years = sector.config.year_list
    if len(years) < 2:
        return float("nan")
    visits = sector.truth.visits_per_person_institution().select(
        "institution_id", "person_id", "year"
    )
    following = visits.with_columns(year=pl.col("year") - 1, returned=pl.lit(True))
    joined = visits.filter(pl.col("year") < years[-1]).join(
        following, on=["institution_id", "person_id", "year"], how="left"
    )
    return _num(joined["returned"].fill_null(False).mean())


def city_people(sector: Sector) -> pl.DataFrame:
    """person_id and whether the person lives within CITY_RADIUS_KM of 2+ institutions."""
    people = sector.truth.people
    px, py = to_xy(people["lat"].to_numpy(), people["lon"].to_numpy())
    near = np.zeros(len(px), dtype=np.int64)
    for inst in sector.institutions:
        ix, iy = to_xy(inst.lat, inst.lon)
        near += np.hypot(px - ix, py - iy) <= CITY_RADIUS_KM
    return people.select("person_id").with_columns(city=pl.Series(near >= 2))


def cross_visiting(sector: Sector) -> dict[str, float]:
    """Venue use per person: in a year (all bookers and city bookers) and over all years."""
    truth = sector.truth
    city = city_people(sector)
    single, single_city = [], []
    for year in sector.config.year_list:
        venues = truth.venues_per_person(year).join(city, on="person_id", how="left")
        if venues.height:
            single.append(_num((venues["venues"] == 1).mean()))
            in_city = venues.filter(pl.col("city"))
            if in_city.height:
                single_city.append(_num((in_city["venues"] == 1).mean()))
    every = truth.venues_per_person().join(city, on="person_id", how="left")
    every_city = every.filter(pl.col("city"))
    nan = float("nan")
    return {
        "single_venue_share_year": float(np.mean(single)) if single else nan,
        "single_venue_share_year_city": float(np.mean(single_city)) if single_city else nan,
        "omnivore_share_all_years": _num((every["venues"] >= 3).mean()),
        "omnivore_share_all_years_city": _num((every_city["venues"] >= 3).mean()),
        "mean_venues_all_years_city": _num(every_city["venues"].mean()),
        "mean_institutions_all_years": _num(truth.institutions_per_person()["institutions"].mean()),
    }


def age_shares(sector: Sector) -> dict[str, list[float]]:
    """Age-band shares of distinct bookers (age in the first configured year) by age family."""
    truth = sector.truth
    first_year = sector.config.years[0]
    bookings = truth.bookings()
    birth = truth.people.select("person_id", "birth_year")
    upper = [*AGE_BAND_LOWER[1:], 10_000]
    out = {}
    for family, disciplines in AGE_FAMILY_DISCIPLINES.items():
        people = (
            bookings.filter(pl.col("discipline").is_in(list(disciplines)))
            .select("person_id")
            .unique()
            .join(birth, on="person_id")
        )
        age = first_year - people["birth_year"].to_numpy()
        if len(age):
            out[family] = [
                float(np.mean((age >= lo) & (age < hi)))
                for lo, hi in zip(AGE_BAND_LOWER, upper, strict=True)
            ]
    return out


def distance_medians(sector: Sector) -> dict[str, float]:
    """Median home-to-institution distance (km) of bookers, by institution type."""
    truth = sector.truth
    pairs = (
        truth.bookings()
        .select("institution_id", "person_id")
        .unique()
        .join(truth.people.select("person_id", "lat", "lon"), on="person_id")
        .join(
            truth.institutions.select(
                "institution_id", "type", pl.col("lat").alias("ilat"), pl.col("lon").alias("ilon")
            ),
            on="institution_id",
        )
    )
    px, py = to_xy(pairs["lat"].to_numpy(), pairs["lon"].to_numpy())
    ix, iy = to_xy(pairs["ilat"].to_numpy(), pairs["ilon"].to_numpy())
    frame = pairs.select("type").with_columns(km=pl.Series(np.hypot(px - ix, py - iy)))
    medians = frame.group_by("type").agg(pl.col("km").median()).sort("type")
    return {str(t): _num(m) for t, m in medians.iter_rows()}


def occupancy(sector: Sector) -> float:
    """Mean sold/capacity over performances that have a capacity (stage venues)."""
    truth = sector.truth
    sold = truth.counted_tickets().group_by("institution_id", "performance_id").agg(sold=pl.len())
    perf = truth.performances.filter(pl.col("capacity").is_not_null()).join(
        sold, on=["institution_id", "performance_id"], how="left"
    )
    if perf.height == 0:
        return float("nan")
    return _num((perf["sold"].fill_null(0) / perf["capacity"]).mean())


def _behaviour_metrics(sector: Sector, params: SimulationParams) -> list[Metric]:
    metrics = []
    pmf = frequency_pmf(sector, params)
    for b in params.frequency.pmf:
        name = f"frequency per institution-year: {b.label}"
        metrics.append(Metric(name, pmf[b.label], b.probability))
    metrics.append(
        Metric("top 10% bookers' share of orders", top_decile_share(sector), 0.5, "notes: ~half")
    )
    metrics.append(
        Metric("year-on-year retention", retention(sector), params.frequency.yoy_retention)
    )
    cv = cross_visiting(sector)
    cross = params.cross_visiting
    omni = cross.omnivore_share_3plus_venues
    metrics += [
        Metric("single venue in a year, all bookers", cv["single_venue_share_year"], None),
        Metric(
            "single venue in a year, city bookers",
            cv["single_venue_share_year_city"],
            cross.share_single_venue_city_year,
        ),
        Metric("3+ venues over all years, all bookers", cv["omnivore_share_all_years"], None),
        Metric(
            "3+ venues over all years, city bookers",
            cv["omnivore_share_all_years_city"],
            omni.mid,
            f"range {omni.low}-{omni.high}",
        ),
        Metric(
            "mean venues over all years, city bookers",
            cv["mean_venues_all_years_city"],
            cross.mean_venues_per_booker_multi_year,
        ),
        Metric("mean institutions over all years", cv["mean_institutions_all_years"], None),
    ]
    for family, shares in age_shares(sector).items():
        target = params.age_band_shares.get(family)
        for k, band in enumerate(AGE_BANDS):
            name = f"age {band} share of {family} bookers"
            metrics.append(Metric(name, shares[k], None if target is None else target[k]))
    return metrics


def _order_metrics(sector: Sector, params: SimulationParams) -> list[Metric]:
    tickets = sector.truth.tickets
    orders = tickets.group_by("institution_id", "order_id").agg(
        n=pl.len(), channel=pl.col("channel").first()
    )
    metrics = [Metric("mean tickets per order", _num(orders["n"].mean()), 2.5, "notes: ~2.5")]
    for channel, share in orders["channel"].value_counts(normalize=True).sort("channel").rows():
        target = params.orders.channel_mix.get(str(channel))
        metrics.append(Metric(f"channel share: {channel}", _num(share), target))
    # "group" (orders above ten tickets) is not in the YAML's mix: compare the others among
    # themselves.
    in_mix = tickets.filter(pl.col("price_type").is_in(list(params.price_type_mix)))
    shares = in_mix["price_type"].value_counts(normalize=True).sort("price_type").rows()
    for price_type, share in shares:
        target = params.price_type_mix.get(str(price_type))
        metrics.append(Metric(f"price type share (YAML types): {price_type}", _num(share), target))
    lead = (tickets["performance_start"] - tickets["order_datetime"]).dt.total_seconds() / 86400
    metrics.append(Metric("median lead time in days, all tickets", _num(lead.median()), None))
    return metrics


def account_completeness(sector: Sector) -> pl.DataFrame:
    """Per account: institution, the channel class of its first order ("online" or
    "box_office", as in the YAML's identity section), and whether it holds an e-mail address and
    a birth year."""
    online = list(ONLINE_CHANNELS)
    return (
        sector.truth.tickets.filter(pl.col("customer_id").is_not_null())
        .sort("order_datetime")
        .group_by("institution_id", "customer_id")
        .agg(
            channel=pl.col("channel").first(),
            has_email=pl.col("email").first().is_not_null(),
            has_birth_year=pl.col("birth_year").first().is_not_null(),
        )
        .with_columns(
            channel_class=pl.when(pl.col("channel").is_in(online))
            .then(pl.lit("online"))
            .otherwise(pl.lit("box_office"))
        )
        .sort("institution_id", "customer_id")
    )


def _identity_metrics(sector: Sector, params: SimulationParams) -> list[Metric]:
    truth = sector.truth
    accounts = truth.accounts
    complete = account_completeness(sector)
    duplicates = _num(accounts["is_duplicate"].sum())
    first_accounts = accounts.filter(~pl.col("is_duplicate")).height
    paid = truth.tickets.filter(pl.col("order_status") == "paid")
    ident = params.identity
    email = {
        str(k): _num(v)
        for k, v in complete.group_by("channel_class").agg(pl.col("has_email").mean()).rows()
    }
    return [
        Metric(
            "accounts with e-mail, first order online",
            email.get("online", float("nan")),
            ident.email_present_online.mid,
            f"range {ident.email_present_online.low}-{ident.email_present_online.high}",
        ),
        Metric(
            "accounts with e-mail, first order at the desk",
            email.get("box_office", float("nan")),
            ident.email_present_box_office.mid,
            f"range {ident.email_present_box_office.low}-{ident.email_present_box_office.high}",
        ),
        Metric(
            "accounts without birth year",
            1.0 - _num(complete["has_birth_year"].mean()),
            ident.birth_year_missing.mid,
            f"range {ident.birth_year_missing.low}-{ident.birth_year_missing.high}",
        ),
        Metric(
            "people with a second account",
            duplicates / max(1, first_accounts),
            params.identity.duplicate_accounts_within_institution,
        ),
        Metric("attended share of paid tickets", _num(paid["attended"].mean()), None),
    ]


def realism_report(sector: Sector, params: SimulationParams) -> list[Metric]:
    """All measured statistics next to their targets (None where the YAML gives none)."""
    metrics = _behaviour_metrics(sector, params)
    metrics += _order_metrics(sector, params)
    metrics += _identity_metrics(sector, params)
    for type_, median in distance_medians(sector).items():
        key = DISTANCE_KEY_OF_TYPE.get(type_)
        target = None if key is None else params.distance_median_km[key]
        metrics.append(Metric(f"median distance to a {type_} in km", median, target))
    metrics.append(
        Metric(
            "mean occupancy of stage performances",
            occupancy(sector),
            params.institutions.occupancy_mean,
        )
    )
    return metrics


def format_report(metrics: list[Metric]) -> str:
    width = max(len(m.name) for m in metrics)
    lines = [f"{'statistic':<{width}}  measured    target"]
    for m in metrics:
        target = "" if m.target is None else f"{m.target:8.3f}"
        note = f"  ({m.note})" if m.note else ""
        lines.append(f"{m.name:<{width}}  {m.measured:8.3f}  {target:>8}{note}")
    return "\n".join(lines)
