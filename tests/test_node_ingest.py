"""Reading real exports: other layouts, encodings and sources give the same minimal tables.

Every test writes a real file (or a real SQLite database) and reads it through the node's own
loader. The house exports are derived from one synthetic institution, so the canonical CSV is
the reference: a mapped, semicolon-separated, Windows-1252 or Parquet copy must produce exactly
the same ticket table and customer features.
"""

from __future__ import annotations

import csv
import hmac
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from node.data import LoadedData, load, load_ticket_lines
from node.geo import Geography, Location
from node.ingest.mapping import MappingError, load_mapping, parse_mapping
from node.ingest.matchkey import MatchKeyError, MatchKeySecret, derive_match_keys
from node.ingest.pipeline import IngestSettings, check_source
from node.ingest.problems import DataError
from node.ingest.sources import SqlQuery, file_source
from node.ingest.validate import MAX_TICKET_PRICE_EUR
from synthetic import SectorConfig, generate_sector
from synthetic.schema import TICKET_LINE_COLUMNS, write_ticket_line_csv
from tests.conftest import ticket_row, write_tickets

TODAY = date(2026, 11, 21)
KEY = bytes(range(32))

# A Dutch house export: its own column names, codes, day-first dates and decimal commas.
HOUSE_COLUMNS = {
    "ticket_id": "Ticketnummer",
    "order_id": "Ordernummer",
    "customer_id": "Klantnummer",
    "order_datetime": "Besteldatum",
    "order_status": "Status",
    "channel": "Verkoopkanaal",
    "performance_id": "Voorstelling",
    "performance_start": "Aanvang",
    "venue_id": "Zaal",
    "discipline": "Genre",
    "price_type": "Tarief",
    "price_paid_eur": "Prijs",
    "postcode": "Postcode",
    "country": "Land",
    "birth_year": "Geboortejaar",
    "email": "E-mailadres",
}
HOUSE_CODES = {
    "order_status": {"paid": "Betaald", "refunded": "Terugbetaald", "cancelled": "Geannuleerd"},
    "channel": {"online_own": "Website", "box_office": "Kassa", "phone": "Telefonisch"},
    "price_type": {"full": "Volle prijs", "youth": "CJP", "senior": "65+"},
}
HOUSE_MAPPING = """
[source]
delimiter = ";"

[columns]
{columns}

[formats]
datetime = "%d-%m-%Y %H:%M:%S"

[values.order_status]
"Betaald" = "paid"
"Terugbetaald" = "refunded"
"Geannuleerd" = "cancelled"

[values.channel]
"Website" = "online_own"
"Kassa" = "box_office"
"Telefonisch" = "phone"
"*" = "reseller"

[values.price_type]
"Volle prijs" = "full"
"CJP" = "youth"
"65+" = "senior"
"*" = "other_discount"

[values.discipline]
"Comédie" = "{accented}"
"""


@pytest.fixture(scope="module")
def institution(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """A few thousand canonical ticket lines of one synthetic institution."""
    sector = generate_sector(
        SectorConfig(n_institutions=2, seed=11, years=(2024, 2024), scale=0.03)
    )
    biggest = max(sector.institutions, key=lambda i: sector.tickets(i.institution_id).height)
    return sector.tickets(biggest.institution_id).head(3000)


def canonical_csv(frame: pl.DataFrame, path: Path) -> Path:
    write_ticket_line_csv(frame, path)
    return path


def accented(frame: pl.DataFrame) -> str:
    """The discipline the house export calls "Comédie" (the institution's commonest)."""
    return str(frame["discipline"].mode().sort()[0])


def house_export(frame: pl.DataFrame) -> list[dict[str, str]]:
    """The same tickets the way a Dutch ticketing system might export them."""
    comedie = accented(frame)
    rows = []
    for r in frame.iter_rows(named=True):
        row: dict[str, str] = {}
        for canonical, house in HOUSE_COLUMNS.items():
            value = r[canonical]
            if canonical in ("order_datetime", "performance_start"):
                text = value.strftime("%d-%m-%Y %H:%M:%S")
            elif canonical == "price_paid_eur":
                text = f"{value:.2f}".replace(".", ",")
            elif canonical in HOUSE_CODES:
                text = HOUSE_CODES[canonical].get(value, value.upper())
            elif canonical == "discipline" and value == comedie:
                text = "Comédie"
            else:
                text = "" if value is None else str(value)
            row[house] = text
        rows.append(row)
    return rows


def write_house(rows: list[dict[str, str]], path: Path, encoding: str, bom: bool = False) -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        if bom:
            fh.write("\ufeff")
        writer = csv.DictWriter(fh, fieldnames=list(HOUSE_COLUMNS.values()), delimiter=";")
        writer.writeheader()
        writer.writerows(rows)
    return path


def house_mapping(tmp_path: Path, frame: pl.DataFrame) -> Path:
    columns = "\n".join(f'{c} = "{h}"' for c, h in HOUSE_COLUMNS.items())
    path = tmp_path / "mapping.toml"
    text = HOUSE_MAPPING.format(columns=columns, accented=accented(frame))
    path.write_text(text, encoding="utf-8")
    return path


def load_with(path: Path, mapping: Path | None = None, **kw: Any) -> LoadedData:
    m = load_mapping(mapping) if mapping else None
    settings = IngestSettings(
        mapping=m or IngestSettings().mapping, today=TODAY, match_key=kw.pop("key", None)
    )
    source = file_source(
        path,
        encoding=settings.mapping.encoding,
        delimiter=settings.mapping.delimiter,
        fmt=kw.pop("fmt", None),
    )
    return load(source, settings, kw.pop("geography", None), kw.pop("as_of", None))


def same_tables(a: LoadedData, b: LoadedData) -> None:
    key = ["unit", "quarter", "discipline", "price_type", "channel", "order_status", "region"]
    assert_frame_equal(a.table.frame.sort(key), b.table.frame.sort(key))
    # Sums of floats may be added in another order: equal to the last few bits.
    assert_frame_equal(a.features.frame, b.features.frame, check_exact=False, rel_tol=1e-12)


def test_house_export_with_mapping_reads_like_the_canonical_file(
    institution: pl.DataFrame, tmp_path: Path
) -> None:
    reference = load_with(canonical_csv(institution, tmp_path / "canonical.csv"))
    rows = house_export(institution)
    house = write_house(rows, tmp_path / "export.csv", "utf-8", bom=True)
    loaded = load_with(house, house_mapping(tmp_path, institution))
    assert loaded.report.quarantined == 0
    assert "UTF-8" in loaded.report.description and "';'" in loaded.report.description
    same_tables(reference, loaded)


def test_synthetic_prices_get_no_implausible_price_warning_and_cents_do(tmp_path: Path) -> None:
    """The demo's twelve institutions (seed 7, small): their dearest ticket is far below the
    ceiling (EUR 165 over the full demo's 3.1 million tickets). The same export in cents is
    flagged on every ticket above EUR 25, and nothing is quarantined for it."""
    sector = generate_sector(
        SectorConfig(n_institutions=12, seed=7, years=(2024, 2024), scale=0.05)
    )
    tickets = pl.concat(
        sector.tickets(i.institution_id).with_columns(
            (pl.lit(f"{i.institution_id}-") + pl.col("ticket_id")).alias("ticket_id")
        )
        for i in sector.institutions
    )
    settings = IngestSettings(today=TODAY)

    def check(frame: pl.DataFrame, name: str) -> Any:
        return check_source(file_source(canonical_csv(frame, tmp_path / name)), settings).report

    euros = check(tickets, "euros.csv")
    assert euros.quarantined == 0
    assert "implausible price" not in set(euros.problems["kind"])
    cents = tickets.with_columns(pl.col("price_paid_eur") * 100)
    report = check(cents, "cents.csv")
    flagged = report.problems.filter(pl.col("kind") == "implausible price")
    assert report.quarantined == 0 and set(flagged["severity"]) == {"warning"}
    above = int((cents["price_paid_eur"].round(2) > MAX_TICKET_PRICE_EUR).sum())
    assert flagged.height == above > len(tickets) // 10


def test_windows_1252_export(institution: pl.DataFrame, tmp_path: Path) -> None:
    reference = load_with(canonical_csv(institution, tmp_path / "canonical.csv"))
    rows = house_export(institution)
    assert any(r["Genre"] == "Comédie" for r in rows), "the test needs an accented code"
    legacy = write_house(rows, tmp_path / "export.csv", "cp1252")
    assert b"Com\xe9die" in legacy.read_bytes()
    loaded = load_with(legacy, house_mapping(tmp_path, institution))
    assert any("Windows-1252" in n for n in loaded.report.notices)
    same_tables(reference, loaded)


def test_utf16_export(institution: pl.DataFrame, tmp_path: Path) -> None:
    reference = load_with(canonical_csv(institution, tmp_path / "canonical.csv"))
    utf16 = write_house(house_export(institution), tmp_path / "export.csv", "utf-16")
    loaded = load_with(utf16, house_mapping(tmp_path, institution))
    same_tables(reference, loaded)


def test_parquet_with_native_types_reads_like_csv(
    institution: pl.DataFrame, tmp_path: Path
) -> None:
    reference = load_with(canonical_csv(institution, tmp_path / "canonical.csv"))
    parquet = tmp_path / "tickets.parquet"
    institution.write_parquet(parquet)  # real datetimes, floats, integers and booleans
    loaded = load_with(parquet)
    assert loaded.report.description == "Parquet"
    same_tables(reference, loaded)


def _sqlite(path: Path, frame: pl.DataFrame, table: str = "ticket_export") -> Path:
    con = sqlite3.connect(path)
    cols = ", ".join(f'"{c}"' for c in TICKET_LINE_COLUMNS)
    con.execute(f"CREATE TABLE {table} ({cols})")
    rows = [
        tuple(v.isoformat(sep=" ") if hasattr(v, "isoformat") else v for v in r)
        for r in frame.select(TICKET_LINE_COLUMNS).iter_rows()
    ]
    marks = ", ".join("?" for _ in TICKET_LINE_COLUMNS)
    con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    con.commit()
    con.close()
    return path


def test_sqlite_query_reads_like_csv(institution: pl.DataFrame, tmp_path: Path) -> None:
    reference = load_with(canonical_csv(institution, tmp_path / "canonical.csv"))
    db = _sqlite(tmp_path / "tickets.sqlite", institution)
    source = SqlQuery(f"sqlite:///{db}", "SELECT * FROM ticket_export")
    loaded = load(source, IngestSettings(today=TODAY))
    assert loaded.report.description == "SQL query"
    same_tables(reference, loaded)


def test_sqlite_query_with_house_names_and_a_mapping(
    institution: pl.DataFrame, tmp_path: Path
) -> None:
    reference = load_with(canonical_csv(institution, tmp_path / "canonical.csv"))
    db = _sqlite(tmp_path / "tickets.sqlite", institution)
    select = ", ".join(f'{c} AS "{h}"' for c, h in HOUSE_COLUMNS.items() if c != "discipline")
    query = f"SELECT {select}, discipline AS Genre FROM ticket_export"
    mapping = parse_mapping({"columns": dict(HOUSE_COLUMNS)})
    loaded = load(SqlQuery(f"sqlite:///{db}", query), IngestSettings(mapping=mapping, today=TODAY))
    same_tables(reference, loaded)


@pytest.mark.parametrize(
    ("url", "query", "expected"),
    [
        ("sqlite:///{db}", "SELECT * FROM no_such_table", "the query failed: no such table"),
        ("nosuchdb://user:secret@host/db", "SELECT 1", "no database dialect"),
        ("not a url", "SELECT 1", "not a database URL"),
        ("postgresql+psycopg://user:secret@127.0.0.1:1/db", "SELECT 1", "the query failed"),
    ],
)
def test_sql_problems_are_clear_and_hide_passwords(
    tmp_path: Path, url: str, query: str, expected: str
) -> None:
    db = _sqlite(tmp_path / "t.sqlite", pl.DataFrame(schema=dict.fromkeys(TICKET_LINE_COLUMNS)))
    with pytest.raises(DataError) as err:
        load(SqlQuery(url.format(db=db), query), IngestSettings(today=TODAY))
    text = str(err.value)
    assert expected in text
    assert "secret" not in text


def test_mapping_problems_are_reported_together(tmp_path: Path) -> None:
    raw = {
        "columns": {"ticket_id": "Nr", "shoe_size": "Maat", "order_id": ""},
        "values": {"discipline": {"Klassiek": "classical"}, "venue_id": {"a": "b"}},
        "formats": {"datetime": "dd-mm-yyyy"},
        "source": {"delimiter": "#", "encoding": "ebcdic"},
        "colums": {},
    }
    with pytest.raises(MappingError) as err:
        parse_mapping(raw)
    text = " | ".join(err.value.problems)
    for expected in (
        "'shoe_size' is not a ticket_line field",
        "order_id must be a non-empty text",
        "'classical' is not one of",
        "codes can be mapped for",
        "strftime pattern",
        "delimiter must be",
        "encoding must be one of",
        "unknown section or key 'colums'",
    ):
        assert expected in text
    bad_toml = tmp_path / "m.toml"
    bad_toml.write_text("[columns\n")
    with pytest.raises(MappingError, match="not valid TOML"):
        load_mapping(bad_toml)


def test_forbidden_columns_are_refused_by_name_and_never_read_when_ignored(
    tickets_file: Any, tmp_path: Path
) -> None:
    columns = [*ticket_row().keys(), "Voornaam", "Telefoonnummer", "IBAN", "Stoel", "Opmerking"]
    rows = [ticket_row(Voornaam="Anna", Telefoonnummer="0612345678", IBAN="NL91", Stoel="12")]
    path = write_tickets(tmp_path / "t.csv", rows, columns=columns)
    checking = check_source(file_source(path), IngestSettings(today=TODAY))
    assert not checking.report.passed
    text = " ".join(checking.report.file_errors)
    for name, why in (
        ("Voornaam", "a name"),
        ("Telefoonnummer", "a phone number"),
        ("IBAN", "payment details"),
        ("Stoel", "a seat"),
        ("Opmerking", "free text"),
    ):
        assert f"'{name}' ({why})" in text
    mapping = parse_mapping(
        {"source": {"ignore": ["Voornaam", "Telefoonnummer", "IBAN", "Stoel", "Opmerking"]}}
    )
    loaded = load(file_source(path), IngestSettings(mapping=mapping, today=TODAY))
    assert loaded.table.rows == 1
    everything = " ".join(str(v) for v in loaded.lines.row(0))
    assert "Anna" not in everything and "0612345678" not in everything


def _expected_key(email: str) -> bytes:
    return hmac.new(KEY, email.strip().lower().encode(), "sha256").digest()


def test_email_becomes_a_keyed_match_key_and_is_dropped(tmp_path: Path) -> None:
    secret = MatchKeySecret(KEY, tmp_path / "k")
    rows = [
        ticket_row(ticket_id="T1", customer_id="C1", email="  Anna.Jansen@Example.NL "),
        ticket_row(ticket_id="T2", customer_id="C2", email="piet@example.nl"),
        ticket_row(ticket_id="T3", customer_id="C3", email=""),
    ]
    a = load_with(write_tickets(tmp_path / "a.csv", rows), key=secret)
    assert a.match_keys is not None and len(a.match_keys) == 2
    got = set(a.match_keys.frame["match_key"].to_list())
    assert got == {_expected_key("anna.jansen@example.nl"), _expected_key("piet@example.nl")}
    assert "match_key" not in repr(a.match_keys) and "Anna" not in repr(a.match_keys)
    # Another institution, another customer number, the same person: the same match key.
    other = [ticket_row(ticket_id="X9", customer_id="K-77", email="anna.jansen@example.nl")]
    b = load_with(write_tickets(tmp_path / "b.csv", other), key=secret)
    assert b.match_keys is not None
    assert b.match_keys.frame["match_key"].to_list() == [_expected_key("anna.jansen@example.nl")]
    # Without a key the address is not even read, and the report says what that costs.
    c = load_with(
        write_tickets(
            tmp_path / "c.csv", [*rows, ticket_row(ticket_id="T4", email="not-an-address")]
        )
    )
    assert c.match_keys is None
    assert any("no match key file" in n and "'email' is not read" in n for n in c.report.notices)
    assert c.report.problems.is_empty()  # an address that is not read is not checked either


def test_match_keys_are_hmac_sha256_for_every_key_length(tmp_path: Path) -> None:
    # derive_match_keys hashes the key's padded blocks once instead of per address; the result
    # must be RFC 2104 HMAC exactly, also for a key longer than SHA-256's block (hashed first).
    emails = ["a@example.nl", " B.Jansen@Example.BE ", "x" * 200 + "@example.nl", "é@voorbeeld.nl"]
    unit = pl.Series(range(len(emails)), dtype=pl.Int64)
    for size in (32, 63, 64, 65, 200):
        key = bytes(range(size))
        keys = derive_match_keys(unit, pl.Series(emails), MatchKeySecret(key, tmp_path / "k"))
        expected = [hmac.digest(key, e.strip().lower().encode(), "sha256") for e in emails]
        assert keys.frame["match_key"].to_list() == expected, size


def test_key_file_is_checked(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("abcd")
    with pytest.raises(MatchKeyError, match="at least 64 hexadecimal"):
        MatchKeySecret.load(short)
    with pytest.raises(MatchKeyError, match="not found"):
        MatchKeySecret.load(tmp_path / "none.key")
    good = tmp_path / "good.key"
    good.write_text(KEY.hex() + "\n")
    good.chmod(0o644)
    secret = MatchKeySecret.load(good)
    assert secret.key == KEY
    assert secret.warnings and "chmod 600" in secret.warnings[0]
    assert KEY.hex() not in repr(secret)
    good.chmod(0o600)
    assert MatchKeySecret.load(good).warnings == ()


def test_nothing_identifying_is_left_in_any_table(tmp_path: Path) -> None:
    rows = [
        ticket_row(
            ticket_id=f"TK{i:04d}",
            order_id=f"ORD{i // 2:04d}",
            customer_id=f"CUST{i // 3:04d}",
            postcode=f"10{i % 10}2 AB",
            email=f"person{i // 3}@example.nl",
            birth_year=str(1950 + i % 40),
        )
        for i in range(60)
    ]
    loaded = load_with(write_tickets(tmp_path / "t.csv", rows), key=MatchKeySecret(KEY, tmp_path))
    identifying = {v for r in rows for k, v in r.items() if k in ("customer_id", "email")}
    identifying |= {r["postcode"] for r in rows} | {r["ticket_id"] for r in rows}
    identifying |= {r["order_id"] for r in rows} | {r["postcode"].replace(" ", "") for r in rows}
    tables = (loaded.table.frame, loaded.table.customers, loaded.lines, loaded.features.frame)
    for frame in tables:
        strings = {str(v) for col in frame.columns for v in frame[col].cast(pl.String).unique()}
        assert not (strings & identifying), f"identifiers left in {frame.columns}"
    assert set(loaded.table.frame.columns) == {
        "unit", "has_account", "order", "performance", "order_status", "channel", "discipline",
        "price_type", "year", "quarter", "region", "price_cents", "lead_time_band",
        "order_size_band",
    }  # fmt: skip
    for frame in (loaded.lines, loaded.features.frame):
        assert not {"email", "postcode", "customer_id", "birth_year", "birth_date"} & set(
            frame.columns
        )


def test_postcode_becomes_an_area_and_birth_date_a_year(tmp_path: Path) -> None:
    columns = [c for c in ticket_row() if c != "birth_year"] + ["geboren"]
    rows = [
        ticket_row(ticket_id="T1", customer_id="C1", postcode="1012 AB", geboren="17-05-1970"),
        ticket_row(ticket_id="T2", customer_id="C2", postcode="9711ab", geboren="01-01-2001"),
        ticket_row(ticket_id="T3", customer_id="C3", postcode="2000", country="BE", geboren=""),
    ]
    path = write_tickets(tmp_path / "t.csv", rows, columns=columns)
    mapping = parse_mapping(
        {"columns": {"birth_date": "geboren"}, "formats": {"birth_date": "%d-%m-%Y"}}
    )
    source = file_source(path)
    from node.ingest.pipeline import ingest

    ingested = ingest(source, IngestSettings(mapping=mapping, today=TODAY))
    homes = ingested.homes.sort("birth_year", nulls_last=True)
    assert homes["home_area"].to_list() == [1012, 9711, 2000]
    assert homes["home_region"].to_list() == ["NL-NH", "NL-GR", "BE-VAN"]
    assert homes["birth_year"].to_list() == [1970, 2001, None]
    assert homes.schema["home_area"] == pl.Int32  # a number: the letters are gone


def test_bad_rows_are_quarantined_counted_and_limited(tmp_path: Path) -> None:
    good = [ticket_row(ticket_id=f"T{i}", customer_id=f"C{i % 7}") for i in range(200)]
    bad = [
        ticket_row(ticket_id="B1", price_paid_eur="-5"),
        ticket_row(ticket_id="B2", discipline="opera"),
        ticket_row(ticket_id="T3"),  # a duplicate of row 5
    ]
    path = write_tickets(tmp_path / "t.csv", good + bad)
    loose = IngestSettings(today=TODAY, max_bad_share=0.05)
    loaded = load(file_source(path), loose)
    assert loaded.report.rows_read == 203
    assert loaded.report.quarantined == 3
    assert loaded.table.rows == 200
    problems = loaded.report.problems.sort("row")
    assert problems["row"].to_list() == [202, 203, 204]
    assert problems["kind"].to_list() == ["negative price", "unknown code", "duplicate ticket_id"]
    assert "'T3' is already on row 5" in problems["message"][2]
    strict = IngestSettings(today=TODAY, max_bad_share=0.01)
    with pytest.raises(DataError) as err:
        load(file_source(path), strict)
    assert err.value.report is not None and not err.value.report.passed
    assert "3 of 203 rows (1.48%) have problems, more than the limit of 1.00%" in str(err.value)


def test_warnings_keep_the_row_without_the_value(tmp_path: Path) -> None:
    rows = [
        ticket_row(ticket_id="T1", postcode="ABCDEF"),
        ticket_row(ticket_id="T2", email="not-an-address"),
        ticket_row(ticket_id="T3", birth_year="1850"),
        ticket_row(ticket_id="T4", country="Narnia"),
        ticket_row(ticket_id="T5", country="Nederland", postcode="3511 AB"),
    ]
    # One customer each: a ticket's region is its customer's home region.
    for i, r in enumerate(rows):
        r.update(customer_id=f"C{i}", order_id=f"O{i}")
    loaded = load_with(write_tickets(tmp_path / "t.csv", rows), key=MatchKeySecret(KEY, tmp_path))
    assert loaded.report.quarantined == 0 and loaded.table.rows == 5
    kinds = set(loaded.report.problems["kind"])
    assert kinds == {
        "not a postcode", "not an e-mail address", "implausible birth year", "unknown country"
    }  # fmt: skip
    assert set(loaded.report.problems["severity"]) == {"warning"}
    assert loaded.table.frame["region"].to_list() == [
        "UNKNOWN", "NL-NH", "NL-NH", "UNKNOWN", "NL-UT"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "2024-02-15T20:00:00",
        "2024-02-15 20:00:00",
        "2024-02-15T20:00",
        "2024-02-15 20:00",
        " 2024-02-15 20:00:00 ",
        "2024-02-15T20:00:00.000",
        "2024-02-15T20:00:00+01:00",
        "2024-02-15T20:00:00Z",
    ],
)
def test_iso_date_time_variants(tmp_path: Path, text: str) -> None:
    rows = [ticket_row(ticket_id="T0"), ticket_row(ticket_id="T1", performance_start=text)]
    table = load_ticket_lines(write_tickets(tmp_path / "t.csv", rows))
    assert table.frame["quarter"].to_list() == ["2024Q1", "2024Q1"]


@pytest.mark.parametrize(
    ("price", "expected"),
    [("25.00", 25.0), ("25,50", 25.5), ("€ 1.234,50", 1234.5), ("1,234.50", 1234.5), ("0", 0.0)],
)
def test_amounts_in_any_common_notation(tmp_path: Path, price: str, expected: float) -> None:
    rows = [ticket_row(ticket_id="T0"), ticket_row(ticket_id="T1", price_paid_eur=price)]
    loaded = load_with(write_tickets(tmp_path / "t.csv", rows))
    assert loaded.lines.sort("price_paid_eur")["price_paid_eur"].to_list() == sorted(
        [25.0, expected]
    )


def test_distances_need_a_location(tmp_path: Path) -> None:
    rows = [ticket_row(ticket_id="T1", postcode="1012 AB")]
    path = write_tickets(tmp_path / "t.csv", rows)
    none = load_with(path)
    assert none.features.frame["distance_band"].to_list() == ["unknown"]
    regional = load_with(path, geography=Geography(location=Location(52.37, 4.89)))
    # Region level: from Noord-Holland's centroid (52.52, 4.79) to Amsterdam, about 18 km.
    assert regional.features.frame["distance_km"][0] == pytest.approx(18.0, abs=1.0)


def test_polars_percent_y_reads_a_two_digit_year_so_the_node_refuses_it(tmp_path: Path) -> None:
    """polars' %Y takes "07-02-24" as 24 February of the year 7: the node must not (a year of
    fewer than four digits is a date in another format, not a typing error in a real date)."""
    from node.ingest import parse

    raw = pl.Series(["07-02-24 12:07", "2024-02-07 12:07"])
    by_polars = raw.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M", strict=False)
    assert by_polars.dt.year().to_list() == [7, 2024]  # what the node guards against
    assert parse.read_datetimes(raw, "%Y-%m-%d %H:%M").dt.year().to_list() == [None, 2024]
    clean = by_polars.tail(1)
    assert parse.four_digit_years(clean) is clean  # the usual column costs a minimum, no mask

    rows = [
        ticket_row(
            ticket_id=f"T{i}", order_datetime="07-02-24 12:07", performance_start="15-02-24 20:00"
        )
        for i in range(3)
    ]
    path = write_tickets(tmp_path / "t.csv", rows)
    report = check_source(file_source(path), IngestSettings(today=TODAY)).report
    assert set(report.problems["kind"]) == {"not a date-time"}  # not "date out of range"
    assert report.problems["message"][0] == (
        "'07-02-24 12:07' is not an ISO date-time (YYYY-MM-DD HH:MM[:SS])"
    )
    (tmp_path / "m.toml").write_text('[formats]\ndatetime = "%d-%m-%y %H:%M"\n')
    loaded = load_with(path, tmp_path / "m.toml")
    assert loaded.lines["order_datetime"].dt.year().unique().to_list() == [2024]
    # A %Y pattern on two-digit years is refused the same way, with the pattern named.
    (tmp_path / "m4.toml").write_text('[formats]\ndatetime = "%d-%m-%Y %H:%M"\n')
    wrong = check_source(
        file_source(path), IngestSettings(mapping=load_mapping(tmp_path / "m4.toml"), today=TODAY)
    ).report
    assert wrong.problems["message"][0] == (
        "'07-02-24 12:07' is not a date-time in the format '%d-%m-%Y %H:%M'"
    )
