"""A small generated sector: schema, vocabularies, identity columns, truth, determinism, I/O."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from protocols.geography import REGION_BY_CODE, postcode_area, region_of_area
from protocols.vocabulary import (
    CHANNELS,
    DISCIPLINES,
    INSTITUTION_TYPES,
    OPTIONAL_COLUMNS,
    ORDER_STATUSES,
    PRICE_TYPES,
    REQUIRED_COLUMNS,
)
from synthetic import Sector, SectorConfig, generate_sector, load_sector
from synthetic.schema import TICKET_LINE_COLUMNS, TICKET_LINE_SCHEMA, read_ticket_line_csv
from tests.conftest import num

CONFIG = SectorConfig(n_institutions=12, seed=7, years=(2023, 2024), scale=0.03)
FLEMISH = {"BE-BRU", "BE-VAN", "BE-VLI", "BE-VOV", "BE-VBR", "BE-VWV"}


@pytest.fixture(scope="module")
def sector() -> Sector:
    return generate_sector(CONFIG)


@pytest.fixture(scope="module")
def written(sector: Sector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sector")
    sector.write(out)
    return out


@pytest.fixture(scope="module")
def all_tickets(sector: Sector) -> pl.DataFrame:
    return sector.truth.tickets


# --- institutions -------------------------------------------------------------------------


def test_institutions_have_ids_types_and_places(sector: Sector):
    ids = [i.institution_id for i in sector.institutions]
    assert ids == [f"inst-{k:02d}" for k in range(1, 13)]
    for inst in sector.institutions:
        assert inst.type in INSTITUTION_TYPES
        assert REGION_BY_CODE[inst.region].country == inst.country
        assert inst.country in ("NL", "BE")
        assert 49.9 < inst.lat < 53.8
        assert 2.3 < inst.lon < 7.5
        assert inst.venue_ids
        assert all(v.startswith(inst.institution_id) for v in inst.venue_ids)
        if inst.type == "be_cultural_centre":
            assert inst.region in FLEMISH
    types = [i.type for i in sector.institutions]
    assert types.count("theatre") == 4  # largest remainder of 35% of 12
    assert sum(i.country == "NL" for i in sector.institutions) >= 6  # a mostly-Dutch sector


def test_unknown_institution_is_a_key_error(sector: Sector):
    with pytest.raises(KeyError, match="inst-99"):
        sector.tickets("inst-99")


# --- schema and vocabularies --------------------------------------------------------------


def test_ticket_tables_have_exactly_the_canonical_columns_and_types(sector: Sector):
    expected = [*REQUIRED_COLUMNS, *[c for c in OPTIONAL_COLUMNS if c != "genre_local"]]
    assert list(TICKET_LINE_COLUMNS) == expected
    for inst in sector.institutions:
        frame = sector.tickets(inst.institution_id)
        assert frame.columns == expected
        assert frame.schema == TICKET_LINE_SCHEMA
        assert frame.height > 0


def test_codes_come_from_the_contract_vocabularies(all_tickets: pl.DataFrame):
    for column, vocabulary in (
        ("order_status", ORDER_STATUSES),
        ("channel", CHANNELS),
        ("discipline", DISCIPLINES),
        ("price_type", PRICE_TYPES),
    ):
        assert set(all_tickets[column].unique().to_list()) <= set(vocabulary), column
    assert all_tickets["order_status"].null_count() == 0
    # Every status and most channels and price types actually occur.
    assert set(all_tickets["order_status"].unique()) == set(ORDER_STATUSES)


def test_ids_times_and_prices_are_well_formed(sector: Sector, all_tickets: pl.DataFrame):
    years = set(range(CONFIG.years[0], CONFIG.years[1] + 1))
    for inst in sector.institutions:
        frame = sector.tickets(inst.institution_id)
        assert frame["ticket_id"].is_unique().all()
        assert set(frame["venue_id"].unique()) <= set(inst.venue_ids)
        # One order: one customer, one performance, one time, one status.
        per_order = frame.group_by("order_id").agg(
            pl.col(c).n_unique()
            for c in ("customer_id", "performance_id", "order_datetime", "order_status")
        )
        assert (per_order.drop("order_id").max().row(0)) == (1, 1, 1, 1)
    assert (all_tickets["order_datetime"] < all_tickets["performance_start"]).all()
    assert set(all_tickets["performance_start"].dt.year().unique()) <= years
    price = all_tickets["price_paid_eur"]
    assert (price >= 0).all()
    assert ((price * 100).round(6) == (price * 100).round(0)).all()  # whole cents
    complimentary = all_tickets.filter(pl.col("price_type") == "complimentary")
    assert complimentary.height > 0
    assert (complimentary["price_paid_eur"] == 0).all()
    subscription = all_tickets["is_subscription"] == (all_tickets["price_type"] == "subscription")
    assert subscription.all()


def test_attendance_only_for_paid_tickets_and_mostly_true(all_tickets: pl.DataFrame):
    paid = all_tickets.filter(pl.col("order_status") == "paid")
    assert 0.85 < num(paid["attended"].mean()) < 0.95
    assert not all_tickets.filter(pl.col("order_status") != "paid")["attended"].any()


def test_iso_datetimes_in_the_csv(written: Path):
    text = (written / "inst-01" / "ticket_line.csv").read_text(encoding="utf-8").splitlines()
    header = text[0].split(",")
    first = dict(zip(header, text[1].split(","), strict=True))
    iso = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
    assert iso.match(first["order_datetime"])
    assert iso.match(first["performance_start"])
    assert re.match(r"^\d+\.\d{2}$", first["price_paid_eur"])


# --- identity columns ---------------------------------------------------------------------


def test_walk_ins_are_anonymous_box_office_orders(all_tickets: pl.DataFrame):
    anonymous = all_tickets.filter(pl.col("customer_id").is_null())
    assert anonymous.height > 0
    assert set(anonymous["channel"].unique()) == {"box_office"}
    assert anonymous["person_id"].null_count() == anonymous.height
    for column in ("email", "postcode", "birth_year", "country"):
        assert anonymous[column].null_count() == anonymous.height
    identified = all_tickets.filter(pl.col("customer_id").is_not_null())
    assert identified["person_id"].null_count() == 0
    assert identified["customer_id"].str.contains(r"^C\d{7}$").all()


def test_postcodes_are_real_formats_in_the_home_region(sector: Sector, all_tickets: pl.DataFrame):
    rows = all_tickets.filter(pl.col("postcode").is_not_null()).join(
        sector.truth.people.select("person_id", "home_region", "home_postcode_area"),
        on="person_id",
    )
    assert rows.height > 0
    nl = rows.filter(pl.col("country") == "NL")["postcode"]
    be = rows.filter(pl.col("country") == "BE")["postcode"]
    assert nl.str.contains(r"^[1-9]\d{3} ?[A-Z]{2}$").all()
    # Both Dutch styles occur ("1234 AB" and "1234AB").
    assert nl.str.contains(" ").any()
    assert (~nl.str.contains(" ")).any()
    assert be.str.contains(r"^[1-9]\d{3}$").all()
    for postcode, country, home, area in (
        rows.select("postcode", "country", "home_region", "home_postcode_area").unique().iter_rows()
    ):
        assert postcode_area(postcode, country) == area
        assert region_of_area(area, country) == home


def test_people_truth_is_consistent(sector: Sector):
    people = sector.truth.people
    assert people["person_id"].is_unique().all()
    assert set(people["latent_segment"].unique()) <= set(range(11))
    assert set(people["engagement_tier"].unique()) <= {"intensive", "medium", "light"}
    for area, country, home in people.select(
        "home_postcode_area", "country", "home_region"
    ).iter_rows():
        assert region_of_area(area, country) == home
    emails = people["email"].drop_nulls()
    assert emails.is_unique().all()
    assert emails.str.contains(r"^[a-z0-9._+-]+@[a-z0-9.-]+\.[a-z]+$").all()
    assert 0 < people["email"].null_count() < people.height * 0.2


def test_the_same_person_has_the_same_address_everywhere(sector: Sector, all_tickets: pl.DataFrame):
    stored = (
        all_tickets.filter(pl.col("email").is_not_null())
        .select("person_id", "institution_id", "email")
        .unique()
        .join(
            sector.truth.people.select("person_id", pl.col("email").alias("true")), on="person_id"
        )
    )
    normalised = stored["email"].str.to_lowercase().str.replace(r"\+tickets@", "@")
    assert (normalised == stored["true"]).all()
    # Case variations exist, as in real exports.
    assert (stored["email"] != stored["email"].str.to_lowercase()).any()
    # The same person is known at several institutions under the same address.
    per_person = stored.group_by("person_id").agg(pl.col("institution_id").n_unique())
    assert (per_person["institution_id"] >= 2).any()


def test_accounts_map_customers_to_people(sector: Sector, all_tickets: pl.DataFrame):
    accounts = sector.truth.accounts
    assert accounts.select("institution_id", "customer_id").is_unique().all()
    used = (
        all_tickets.filter(pl.col("customer_id").is_not_null())
        .select("institution_id", "customer_id", "person_id")
        .unique()
    )
    joined = used.join(accounts, on=["institution_id", "customer_id"], suffix="_account")
    assert joined.height == used.height
    assert (joined["person_id"] == joined["person_id_account"]).all()
    # Some people have two accounts at one institution (YAML: 3%).
    two = accounts.group_by("institution_id", "person_id").len().filter(pl.col("len") == 2)
    assert two.height > 0
    # Customer ids are institution-specific: a person's ids differ between institutions.
    across = accounts.join(accounts, on="person_id").filter(
        pl.col("institution_id") < pl.col("institution_id_right")
    )
    assert across.height > 0
    assert num((across["customer_id"] == across["customer_id_right"]).mean()) < 0.01


def test_birth_year_is_often_missing_but_true_when_present(
    sector: Sector, all_tickets: pl.DataFrame
):
    identified = all_tickets.filter(pl.col("customer_id").is_not_null())
    missing = identified["birth_year"].null_count() / identified.height
    assert 0.2 < missing < 0.7  # YAML: 30-60% per institution
    present = identified.filter(pl.col("birth_year").is_not_null()).join(
        sector.truth.people.select("person_id", pl.col("birth_year").alias("true")), on="person_id"
    )
    assert (present["birth_year"] == present["true"]).all()


# --- truth helpers ------------------------------------------------------------------------


def test_counted_tickets_are_the_paid_ones(sector: Sector, all_tickets: pl.DataFrame):
    counted = sector.truth.counted_tickets()
    assert set(counted["order_status"].unique()) == {"paid"}
    assert counted.height == all_tickets.filter(pl.col("order_status") == "paid").height
    assert counted.height < all_tickets.height


def test_tickets_by_derived_columns_partition_the_counted_tickets(sector: Sector):
    truth = sector.truth
    total = truth.counted_tickets().height
    table = truth.tickets_by("discipline", "quarter", "institution_region")
    assert table["tickets"].sum() == total
    assert table["quarter"].str.contains(r"^202[34]Q[1-4]$").all()
    assert table.select("discipline", "quarter", "institution_region").is_unique().all()
    by_home = truth.tickets_by("home_region", "institution_type", "age_band", "engagement_tier")
    assert by_home["tickets"].sum() == total
    assert "UNKNOWN" in by_home["home_region"].to_list()  # walk-ins
    with pytest.raises(ValueError, match="unknown columns"):
        truth.tickets_by("favourite_colour")
    with pytest.raises(ValueError, match="at least one"):
        truth.tickets_by()


def test_reach_and_institutions_per_person(sector: Sector):
    truth = sector.truth
    counted = truth.counted_tickets().filter(pl.col("person_id").is_not_null())
    for year in CONFIG.year_list:
        in_year = counted.filter(pl.col("performance_start").dt.year() == year)
        assert truth.reach(year) == in_year["person_id"].n_unique()
        per_person = truth.institutions_per_person(year)
        assert per_person.height == truth.reach(year)
        expected = in_year.group_by("person_id").agg(pl.col("institution_id").n_unique())
        assert per_person["institutions"].sum() == expected["institution_id"].sum()
        assert num(per_person["institutions"].min()) >= 1
    assert truth.reach() >= max(truth.reach(y) for y in CONFIG.year_list)
    assert truth.reach(1999) == 0


def test_performances_have_capacities_where_seats_make_sense(sector: Sector):
    perf = sector.truth.performances
    types = {i.institution_id: i.type for i in sector.institutions}
    with_type = perf.with_columns(type=pl.col("institution_id").replace_strict(types))
    stage = with_type.filter(
        pl.col("type").is_in(["theatre", "concert_hall", "poppodium", "be_cultural_centre"])
    )
    assert stage["capacity"].null_count() == 0
    other = with_type.filter(pl.col("type").is_in(["filmhuis", "museum", "festival"]))
    assert other["capacity"].null_count() == other.height
    assert perf.select("institution_id", "performance_id").is_unique().all()


# --- determinism and I/O ------------------------------------------------------------------


def test_same_config_same_sector_other_seed_other_sector(sector: Sector):
    again = generate_sector(CONFIG)
    assert again.truth.equals(sector.truth)
    assert again.institutions == sector.institutions
    other = generate_sector(SectorConfig(12, 8, CONFIG.years, CONFIG.scale))
    assert not other.truth.tickets.equals(sector.truth.tickets)
    assert other.institutions != sector.institutions


def test_written_csvs_are_byte_identical_across_runs(written: Path, tmp_path: Path):
    generate_sector(CONFIG).write(tmp_path)
    for inst_dir in sorted(p for p in written.iterdir() if p.name.startswith("inst-")):
        original = (inst_dir / "ticket_line.csv").read_bytes()
        assert (tmp_path / inst_dir.name / "ticket_line.csv").read_bytes() == original
    for name in ("institutions.json", "sector.json"):
        assert (tmp_path / name).read_bytes() == (written / name).read_bytes()


def test_write_then_load_round_trips(sector: Sector, written: Path):
    for name in ("people", "accounts", "tickets", "performances"):
        assert (written / "truth" / f"{name}.parquet").is_file()
    loaded = load_sector(written)
    assert loaded.config == sector.config
    assert loaded.institutions == sector.institutions
    assert loaded.truth.equals(sector.truth)
    for inst in sector.institutions:
        from_csv = read_ticket_line_csv(written / inst.institution_id / "ticket_line.csv")
        assert from_csv.equals(sector.tickets(inst.institution_id)), inst.institution_id


def test_truth_counts_agree_with_the_csv_files(sector: Sector, written: Path):
    frames = [
        read_ticket_line_csv(written / inst.institution_id / "ticket_line.csv").with_columns(
            institution_id=pl.lit(inst.institution_id)
        )
        for inst in sector.institutions
    ]
    from_files = (
        pl.concat(frames)
        .filter(pl.col("order_status") == "paid")
        .with_columns(
            quarter=pl.concat_str(
                pl.col("performance_start").dt.year().cast(pl.String),
                pl.lit("Q"),
                pl.col("performance_start").dt.quarter().cast(pl.String),
            )
        )
        .group_by("institution_id", "discipline", "quarter")
        .agg(tickets=pl.len().cast(pl.Int64))
        .sort("institution_id", "discipline", "quarter")
    )
    assert from_files.equals(sector.truth.tickets_by("institution_id", "discipline", "quarter"))


def test_load_refuses_a_directory_without_a_sector(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"sector\.json"):
        load_sector(tmp_path)
