"""Does a generated sector look like the domain notes and simulation.yaml say it should?

The fast tests use a sector of 12 institutions at a tenth of realistic size (about 40,000
institution-year bookers), the slow test a full-size one. Tolerances are set from two sources of
error: sampling (for a share p over n bookers the standard error is sqrt(p(1-p)/n), below 0.003
at this size) and the model's own calibration error, which the realism report of several seeds
puts at up to about 0.015 for the frequency bins and 0.02 for retention. Age shares are
directional at the fast size: a discipline's audience mixes several segments, and the YAML's
shares are reproduced roughly (within 0.1), which the slow test checks.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from synthetic import Sector, SectorConfig, generate_sector
from synthetic.params import load_params
from synthetic.realism import (
    account_completeness,
    age_shares,
    cross_visiting,
    distance_medians,
    format_report,
    frequency_pmf,
    occupancy,
    realism_report,
    retention,
    top_decile_share,
)
from tests.conftest import num

PARAMS = load_params()


@pytest.fixture(scope="module")
def sector() -> Sector:
    return generate_sector(SectorConfig(n_institutions=12, seed=1, years=(2023, 2024), scale=0.1))


def test_frequency_per_institution_year_follows_the_pmf(sector: Sector):
    measured = frequency_pmf(sector, PARAMS)
    for b in PARAMS.frequency.pmf:
        tolerance = 0.03 if b.low == 1 else 0.02
        assert measured[b.label] == pytest.approx(b.probability, abs=tolerance), b.label
    # Heavy users carry a large part of the visits (domain notes: the top 10% about half).
    assert 0.35 < top_decile_share(sector) < 0.6


def test_about_a_third_of_a_years_bookers_return_the_next_year(sector: Sector):
    assert retention(sector) == pytest.approx(PARAMS.frequency.yoy_retention, abs=0.05)


def test_most_bookers_use_one_venue_and_a_few_are_omnivores(sector: Sector):
    cv = cross_visiting(sector)
    assert 0.8 < cv["single_venue_share_year"] < 0.99
    assert 0.7 < cv["single_venue_share_year_city"] < 0.95
    # Omnivores exist but are rare: a few percent use 3+ venues over the two years.
    assert 0.003 < cv["omnivore_share_all_years"] < 0.1
    assert cv["single_venue_share_year_city"] < cv["single_venue_share_year"]
    per_person = sector.truth.institutions_per_person()
    assert num(per_person["institutions"].max()) >= 3


def test_age_composition_skews_by_discipline(sector: Sector):
    shares = age_shares(sector)
    classical, pop = shares["classical_opera"], shares["popular_music"]
    assert classical[3] > pop[3] + 0.2  # 65+: classical audiences are much older
    assert pop[0] > classical[0] + 0.15  # 18-34: pop audiences are much younger
    assert 0.4 < classical[3] < 0.6  # YAML: 0.50
    assert 0.3 < pop[0] < 0.5  # YAML: 0.40


def test_orders_follow_the_yaml_mixes(sector: Sector):
    tickets = sector.truth.tickets
    orders = tickets.group_by("institution_id", "order_id").agg(
        n=pl.len(), channel=pl.col("channel").first()
    )
    assert 2.3 < num(orders["n"].mean()) < 2.9  # notes: mostly 2, mean about 2.5
    assert (orders["n"] == 2).mean() == pytest.approx(0.5, abs=0.05)
    channel = dict(orders["channel"].value_counts(normalize=True).rows())
    for name, share in PARAMS.orders.channel_mix.items():
        assert channel[name] == pytest.approx(share, abs=0.015), name
    in_mix = tickets.filter(pl.col("price_type").is_in(list(PARAMS.price_type_mix)))
    price_types = dict(in_mix["price_type"].value_counts(normalize=True).rows())
    for name, share in PARAMS.price_type_mix.items():
        assert price_types[name] == pytest.approx(share, abs=0.015), name


def test_lead_times_and_season_launch(sector: Sector):
    tickets = sector.truth.tickets.join(
        sector.truth.institutions.select("institution_id", "type"), on="institution_id"
    ).with_columns(
        lead=(pl.col("performance_start") - pl.col("order_datetime")).dt.total_seconds() / 86400
    )
    theatre = tickets.filter(pl.col("type") == "theatre")
    # A third of a season institution's tickets go at the season launch, months ahead.
    early = num((theatre["lead"] > 75).mean())
    assert 0.25 < early < 0.5
    walk_ins = tickets.filter(pl.col("customer_id").is_null())
    assert (walk_ins["lead"] < 0.1).all()
    film = tickets.filter(pl.col("type") == "filmhuis")
    if film.height:
        assert num(film["lead"].median()) < 7


def test_identity_completeness_is_within_the_yaml_ranges(sector: Sector):
    complete = account_completeness(sector)
    ident = PARAMS.identity
    rates = complete.group_by("institution_id", "channel_class").agg(
        n=pl.len(), email=pl.col("has_email").mean()
    )
    ranges = {"online": ident.email_present_online, "box_office": ident.email_present_box_office}
    for cls, rng in ranges.items():
        for n, rate in rates.filter(pl.col("channel_class") == cls).select("n", "email").rows():
            if n >= 200:
                margin = 3 * np.sqrt(0.25 / n)
                assert rng.low - margin <= rate <= rng.high + margin, (cls, n, rate)
    missing = complete.group_by("institution_id").agg(
        n=pl.len(), missing=1 - pl.col("has_birth_year").mean()
    )
    lo, hi = ident.birth_year_missing.low, ident.birth_year_missing.high
    for n, rate in missing.select("n", "missing").rows():
        if n >= 200:
            margin = 3 * np.sqrt(0.25 / n)
            assert lo - margin <= rate <= hi + margin
    accounts = sector.truth.accounts
    share = accounts["is_duplicate"].sum() / accounts.filter(~pl.col("is_duplicate")).height
    assert share == pytest.approx(ident.duplicate_accounts_within_institution, abs=0.01)


def test_distances_occupancy_and_volume_growth(sector: Sector):
    medians = distance_medians(sector)
    for type_, key in (("filmhuis", "filmhuis"), ("concert_hall", "concert_hall")):
        if type_ in medians:
            target = PARAMS.distance_median_km[key]
            assert target / 1.6 < medians[type_] < target * 1.6, type_
    assert medians.get("filmhuis", 0) < medians.get("festival", np.inf)
    assert occupancy(sector) == pytest.approx(PARAMS.institutions.occupancy_mean, abs=0.03)
    by_year = dict(sector.truth.tickets_by("year").rows())
    expected = PARAMS.activity_index(2024) / PARAMS.activity_index(2023)
    assert by_year[2024] / by_year[2023] == pytest.approx(expected, rel=0.08)


def test_report_lists_every_target(sector: Sector):
    metrics = realism_report(sector, PARAMS)
    names = [m.name for m in metrics]
    assert len(names) == len(set(names))
    assert any(n.startswith("frequency per institution-year") for n in names)
    text = format_report(metrics)
    assert "year-on-year retention" in text
    assert all(np.isfinite(m.measured) for m in metrics if m.target is not None)


@pytest.mark.slow
def test_full_size_sector_is_realistic():
    """Twelve institutions at realistic size (about two to three million tickets)."""
    sector = generate_sector(SectorConfig(n_institutions=12, seed=7, years=(2023, 2024)))
    tickets = sector.truth.tickets.height
    assert 1_000_000 < tickets < 5_000_000
    pmf = frequency_pmf(sector, PARAMS)
    for b in PARAMS.frequency.pmf:
        assert pmf[b.label] == pytest.approx(b.probability, abs=0.025), b.label
    assert retention(sector) == pytest.approx(PARAMS.frequency.yoy_retention, abs=0.03)
    cv = cross_visiting(sector)
    assert 0.8 < cv["single_venue_share_year_city"] < 0.93
    assert cv["omnivore_share_all_years_city"] > 0.01
    for family, shares in age_shares(sector).items():
        for measured, target in zip(shares, PARAMS.age_band_shares[family], strict=True):
            assert measured == pytest.approx(target, abs=0.1), family
    assert occupancy(sector) == pytest.approx(PARAMS.institutions.occupancy_mean, abs=0.02)
    test_identity_completeness_is_within_the_yaml_ranges(sector)
    test_orders_follow_the_yaml_mixes(sector)
