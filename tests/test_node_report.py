"""``publiek-node report``: a real HTML file, parsed back, self-contained, with exact numbers.

The numbers are checked against an independent computation straight from the CSV file (plain
polars on the raw columns, not the node's loader), so a bug in the loader or the report shows.
"""

from __future__ import annotations

import contextlib
import io
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from node.cli import main as node_main
from synthetic import SectorConfig, generate_sector
from synthetic.schema import write_ticket_line_csv
from tests.conftest import ticket_row, write_tickets


class Page(HTMLParser):
    """Every tag with its attributes, every table's cells (data-value where given)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table = a.get("id") or a.get("class") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell, self._value = [], a.get("data-value")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(self._value if self._value is not None else "".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._table and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> dict[str, list[str]]:
        """Body rows of a table by their label (the header row is left out)."""
        return {r[0]: r[1:] for r in self.tables[table][1:]}


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sector = generate_sector(
        SectorConfig(n_institutions=1, seed=21, years=(2023, 2024), scale=0.03)
    )
    tickets = sector.tickets(sector.institutions[0].institution_id)
    path = tmp_path_factory.mktemp("export") / "ticket_line.csv"
    write_ticket_line_csv(tickets, path)
    return path


@pytest.fixture(scope="module")
def page(export: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Page, Path]:
    out = tmp_path_factory.mktemp("report") / "audience.html"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert node_main(["report", str(export), "--out", str(out), "--title", "Ons publiek"]) == 0
    assert "keep it on your premises" in stdout.getvalue()
    parsed = Page()
    parsed.feed(out.read_text(encoding="utf-8"))
    return parsed, out


def test_report_is_self_contained_and_private(page: tuple[Page, Path]) -> None:
    parsed, out = page
    assert out.stat().st_mode & 0o777 == 0o600
    html_text = out.read_text(encoding="utf-8")
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed", "base"), tag
        for name, value in attrs.items():
            if name in ("src", "href", "action", "srcset", "xlink:href"):
                pytest.fail(f"<{tag} {name}={value!r}> would load something")
    assert "http://" not in html_text and "https://" not in html_text
    assert "url(" not in html_text and "@import" not in html_text
    csp = [a for t, a in parsed.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in (csp[0].get("content") or "")
    assert "Ons publiek" in "".join(parsed.text)


def test_numbers_match_an_independent_count(page: tuple[Page, Path], export: Path) -> None:
    parsed, _ = page
    raw = pl.read_csv(export, try_parse_dates=True)
    paid = raw.filter(pl.col("order_status") == "paid")

    by_disc_year = paid.group_by("discipline", pl.col("performance_start").dt.year()).len()
    expected = {
        (r["discipline"], str(r["performance_start"])): r["len"]
        for r in by_disc_year.iter_rows(named=True)
    }
    table = parsed.tables["t-discipline-year"]
    years = table[0][2:-1]  # label, all years, one per year, the bar column
    for row in table[1:]:
        for year, value in zip(years, row[2:], strict=False):
            assert int(value) == expected.get((row[0], year), 0), (row[0], year)
        assert int(row[1]) == sum(expected.get((row[0], y), 0) for y in years)
    assert {r[0] for r in table[1:]} == set(paid["discipline"].unique())

    channel = parsed.rows("t-channel")
    for name, n in paid.group_by("channel").len().iter_rows():
        assert int(channel[name][0]) == n
    status = parsed.rows("t-status")
    for name, n in raw.group_by("order_status").len().iter_rows():
        assert int(status[name][0]) == n
    price = parsed.rows("t-price-type")
    for name, n, eur in (
        paid.group_by("price_type").agg(pl.len(), pl.col("price_paid_eur").sum()).iter_rows()
    ):
        assert int(price[name][0]) == n
        assert float(price[name][1]) == pytest.approx(eur, abs=0.01)

    facts = {r[0]: r[1] for r in parsed.tables["facts"]}
    assert int(facts["tickets (paid and complimentary)"]) == paid.height
    assert float(facts["revenue from these tickets"]) == pytest.approx(
        paid["price_paid_eur"].sum(), abs=0.01
    )
    assert int(facts["performances"]) == paid["performance_id"].n_unique()
    customers = paid.select(
        pl.when(pl.col("customer_id").is_null())
        .then(pl.lit("o:") + pl.col("order_id"))
        .otherwise(pl.lit("c:") + pl.col("customer_id"))
    ).n_unique()
    assert int(facts["customers with a visit"]) == customers
    visits = paid.select(
        pl.coalesce("customer_id", pl.lit("o:") + pl.col("order_id")), "performance_id"
    ).n_unique()
    assert int(facts["visits (customer x performance)"]) == visits

    bookings = paid.group_by("order_id", "performance_id").len()
    sizes = parsed.rows("t-booking-size")
    assert int(sizes["1 ticket"][0]) == bookings.filter(pl.col("len") == 1).height
    assert int(sizes["2 tickets"][0]) == bookings.filter(pl.col("len") == 2).height
    assert int(sizes["10 or more"][0]) == bookings.filter(pl.col("len") >= 10).height
    assert sum(int(v[0]) for v in sizes.values()) == bookings.height


def test_quarantined_rows_are_named_in_the_report(tmp_path: Path) -> None:
    rows = [ticket_row(ticket_id=f"T{i}", customer_id=f"C{i}") for i in range(150)]
    rows.append(ticket_row(ticket_id="B", discipline="opera"))
    data = write_tickets(tmp_path / "t.csv", rows)
    out = tmp_path / "r.html"
    with contextlib.redirect_stdout(io.StringIO()):
        assert node_main(["report", str(data), "--out", str(out)]) == 0
    parsed = Page()
    parsed.feed(out.read_text(encoding="utf-8"))
    text = " ".join(parsed.text)
    assert "quarantined: 1 (0.66%)" in text
    assert "error: discipline: unknown code in 1 row(s)" in text
    assert int(parsed.rows("t-channel")["online_own"][0]) == 150


def test_report_of_unusable_data_fails_cleanly(tmp_path: Path) -> None:
    data = write_tickets(tmp_path / "t.csv", [ticket_row(discipline="opera")])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert node_main(["report", str(data), "--out", str(tmp_path / "r.html")]) == 2
    assert "'opera' is not a known discipline" in err.getvalue()
    assert not (tmp_path / "r.html").exists()
