"""The query engine against an independent computation from the raw CSV, and its bounds.

The reference below reads the CSV with the standard library and applies the contract's
definitions (docs/node-data.md, "What the node computes") in plain Python, one ticket at a time:
nothing of the node's polars code is reused.
"""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from node.data import TicketTable, load, load_ticket_lines
from node.geo import Geography, Location
from node.ingest.pipeline import IngestSettings
from node.ingest.sources import file_source
from node.queries import SUPPORTED_DIMENSIONS, SUPPORTED_MEASURES, bounded_counts
from privacy.bounding import ContributionBound
from privacy.budget import Rho
from protocols.dimensions import PUBLIC_DIMENSIONS, public_keys
from protocols.messages import MEASURES, Dimension, HistogramQuery, ReleaseMode
from synthetic import SectorConfig, generate_sector
from synthetic.schema import write_ticket_line_csv
from tests.conftest import ticket_row, write_tickets

YEARS = (2023, 2024)
TYPE, REGION = "theatre", "NL-UT"
# Postcodes of the hand-made data and the region each lies in (protocols.geography).
POSTCODES = {"1012 AB": "NL-NH", "9711 AB": "NL-GR", "3511 AA": "NL-UT", "": "UNKNOWN"}


def hand_made_rows() -> Iterator[dict[str, Any]]:
    """Two years of an institution, with every case the definitions talk about.

    Customers C0..C11 with different habits (C0 comes very often, C1..C3 in both years, C4 only
    in 2024, C5 had only a refunded order in 2023), walk-ins without a customer, orders of 1 to
    12 tickets, mixed price types within an order, a subscription order over several quarters,
    an order placed after the performance began, unknown birth years and postcodes.
    """
    performances = [
        (f"P{y}{m:02d}", f"{y}-{m:02d}-15T20:00:00") for y in YEARS for m in range(1, 13)
    ]
    disciplines = ("toneel", "dans", "klassieke_muziek", "film")
    channels = ("online_own", "box_office", "phone")
    prices = ("full", "youth", "senior", "social", "group")
    n = 0

    def order(oid: str, cust: str, perf: int, size: int, lead_days: int, **kw: Any) -> None:
        nonlocal n
        pid, start = performances[perf]
        when = datetime.fromisoformat(start).timestamp() - lead_days * 86400 - 3600
        for k in range(size):
            n += 1
            rows.append(
                ticket_row(
                    ticket_id=f"T{n}",
                    order_id=oid,
                    customer_id=cust,
                    order_datetime=datetime.fromtimestamp(when).isoformat(timespec="seconds"),
                    performance_id=pid,
                    performance_start=start,
                    discipline=disciplines[perf % 4],
                    channel=channels[(perf + len(oid)) % 3],
                    price_type=kw.get("price", prices[(k + perf) % 5]),
                    price_paid_eur=f"{10 + 5 * ((k + perf) % 4)}.{25 * (k % 4):02d}",
                    order_status=kw.get("status", "paid"),
                    postcode=kw.get("postcode", list(POSTCODES)[int(cust[1:] or 0) % 4]),
                    birth_year=kw.get("birth", str(1940 + 7 * (int(cust[1:] or 0) % 10))),
                )
            )

    rows: list[dict[str, Any]] = []
    # C0: a heavy booker, 14 performances in 2024 (frequency 11+), 1..3 tickets each.
    for i in range(14):
        order(f"O0-{i}", "C0", 12 + i % 12, 1 + i % 3, lead_days=i * 9)
    # C1..C3 come in both years; C4 only in 2024; C5's only 2023 order was refunded.
    # C3 moved from Utrecht to Amsterdam: its home (the last postcode) counts for every ticket.
    for c in (1, 2, 3):
        for i in range(c):
            order(f"O{c}-a{i}", f"C{c}", 2 + 3 * i, 2, lead_days=40 + i)
            moved = {"postcode": "1012 AB"} if c == 3 else {}
            order(f"O{c}-b{i}", f"C{c}", 14 + 2 * i + c, 2 + i, lead_days=c, **moved)
    order("O4", "C4", 20, 4, lead_days=120)
    order("O5-old", "C5", 5, 2, lead_days=10, status="refunded")
    order("O5-new", "C5", 17, 1, lead_days=0)
    # Customers 6..11: one or two orders each; 8 and 9 without birth year or postcode.
    for c in range(6, 12):
        extra: dict[str, Any] = {"birth": "", "postcode": ""} if c in (8, 9) else {}
        order(f"O{c}", f"C{c}", (c * 5) % 24, 1 + c % 5, lead_days=c * 4, **extra)
        if c % 2:
            order(f"O{c}-2", f"C{c}", (c * 7) % 24, 12 if c == 11 else 1, lead_days=2, **extra)
    # A subscription: one order, four performances in four quarters of 2024, one price type.
    for q, perf in enumerate((12, 15, 18, 21)):
        order("O-sub", "C6", perf, 1, lead_days=200 - 40 * q, price="subscription")
    # Walk-ins: no customer, bought at the desk on the night.
    for i in range(5):
        order(f"W{i}", "", 13 + i, 1 + i % 2, lead_days=0, postcode="", birth="")
    # An order placed after the performance started (lead time counts as 0), a cancelled one.
    order("O-late", "C7", 22, 1, lead_days=-2)
    order("O-cancel", "C7", 23, 3, lead_days=5, status="cancelled")
    yield from rows


# --- the reference: the definitions, in plain Python -------------------------------------------


def _band(value: float | None, bands: Sequence[tuple[float, str]], unknown: bool) -> str | None:
    if value is None:
        return "unknown" if unknown else None
    label = None
    for low, name in bands:
        if value >= low:
            label = name
    return label


LEAD = [(0, "0-1 d"), (2, "2-7 d"), (8, "8-30 d"), (31, "31-90 d"), (91, "91+ d")]
SIZE = [(1, "1"), (2, "2"), (3, "3-4"), (5, "5-10"), (11, "11+")]
AGE = [(0, "0-17"), (18, "18-34"), (35, "35-49"), (50, "50-64"), (65, "65+")]
FREQ = [(1, "1"), (2, "2"), (3, "3-5"), (6, "6-10"), (11, "11+")]


class Reference:
    def __init__(self, path: Path, institution_type: str, institution_region: str) -> None:
        with path.open(newline="", encoding="utf-8") as fh:
            every = list(csv.DictReader(fh))
        self.rows = [r for r in every if r["order_status"] == "paid"]
        # A customer's home: the last postcode they gave, in the export's row order.
        self.home: dict[str, str] = {}
        for r in every:
            if r["postcode"]:
                self.home[self.unit(r)] = r["postcode"]
        self.node = {"institution_type": institution_type, "institution_region": institution_region}
        self.order_size: dict[str, int] = defaultdict(int)
        self.visits: dict[tuple[str, int], set[str]] = defaultdict(set)
        for r in self.rows:
            self.order_size[r["order_id"]] += 1
            if r["customer_id"]:
                self.visits[(r["customer_id"], self._start(r).year)].add(r["performance_id"])

    @staticmethod
    def _start(r: dict[str, str]) -> datetime:
        return datetime.fromisoformat(r["performance_start"])

    def unit(self, r: dict[str, str]) -> str:
        return r["customer_id"] or f"walk-in {r['order_id']}"

    def key(self, r: dict[str, str], dim: str) -> str | None:
        start = self._start(r)
        cust, year = r["customer_id"], start.year
        if dim in self.node:
            return self.node[dim]
        if dim in ("discipline", "price_type", "channel"):
            return r[dim]
        if dim == "year":
            return str(year)
        if dim == "quarter":
            return f"{year}Q{(start.month - 1) // 3 + 1}"
        if dim == "region":
            return POSTCODES[self.home.get(self.unit(r), "")]
        if dim == "lead_time_band":
            days = (start - datetime.fromisoformat(r["order_datetime"])).days
            return _band(max(days, 0), LEAD, unknown=False)
        if dim == "order_size_band":
            return _band(self.order_size[r["order_id"]], SIZE, unknown=False)
        if dim == "age_band":
            birth = r.get("birth_year") or None
            return _band(year - int(birth) if birth else None, AGE, unknown=True)
        if dim == "distance_band":
            return "unknown"  # no geography configured: no distances (tested apart)
        if dim == "frequency_band":
            return _band(len(self.visits[(cust, year)]), FREQ, False) if cust else None
        if dim == "returning":
            if not cust:
                return None
            return "returning" if (cust, year - 1) in self.visits else "new"
        raise AssertionError(dim)

    def table(self, measure: str, dims: list[Dimension]) -> np.ndarray:
        cells: dict[tuple[int, ...], set[Any] | int] = {}
        for r in self.rows:
            keys = [self.key(r, d.name) for d in dims]
            if any(k not in d.keys for k, d in zip(keys, dims, strict=True)):
                continue  # outside the table
            cell = tuple(d.keys.index(str(k)) for k, d in zip(keys, dims, strict=True))
            if measure in ("tickets", "revenue_cents"):
                add = 1 if measure == "tickets" else round(float(r["price_paid_eur"]) * 100)
                cells[cell] = int(cells.get(cell, 0)) + add  # type: ignore[arg-type]
                continue
            thing = {
                "visits": (self.unit(r), r["performance_id"]),
                "orders": r["order_id"],
                "bookers": r["customer_id"] or None,
            }[measure]
            if thing is not None:
                seen = cells.setdefault(cell, set())
                assert isinstance(seen, set)
                seen.add(thing)
        out = np.zeros([len(d.keys) for d in dims], dtype=np.int64)
        for cell, value in cells.items():
            out[cell] = value if isinstance(value, int) else len(value)
        return out.ravel()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory: pytest.TempPathFactory) -> tuple[TicketTable, Reference]:
    path = write_tickets(tmp_path_factory.mktemp("q") / "t.csv", hand_made_rows())
    table = load_ticket_lines(path)
    return table, Reference(path, TYPE, REGION)


def query(
    measure: str,
    *names: str,
    max_cells: int | None = None,
    max_per_cell: int = 1_000_000,
    keys: Mapping[str, tuple[str, ...]] | None = None,
    years: tuple[int, int] = YEARS,
) -> HistogramQuery:
    dims = tuple(Dimension(n, (keys or {}).get(n) or public_keys(n, *years)) for n in names)
    cells = int(np.prod([len(d.keys) for d in dims]))
    return HistogramQuery(
        statistic="S1",
        measure=measure,
        dimensions=dims,
        bound=ContributionBound(max_cells or min(cells, 10_000), max_per_cell),
        rho=Rho.parse("0.1"),
        mode=ReleaseMode.SECURE,
        years=years,
    )


ALL_DIMENSIONS = sorted(PUBLIC_DIMENSIONS)
PAIRS: list[tuple[str, ...]] = [
    ("discipline", "quarter"),
    ("price_type", "channel"),
    ("frequency_band", "returning"),
    ("age_band", "region"),
    ("institution_type", "institution_region", "year"),
    ("lead_time_band", "order_size_band"),
]


# --- every measure and dimension against the reference ------------------------------------------


@pytest.mark.parametrize("measure", list(MEASURES))
@pytest.mark.parametrize(
    "dims", [*((d,) for d in ALL_DIMENSIONS), *PAIRS], ids=lambda d: "x".join(d)
)
def test_every_measure_and_dimension_matches_the_reference(
    hand_made: tuple[TicketTable, Reference], measure: str, dims: tuple[str, ...]
) -> None:
    table, ref = hand_made
    q = query(measure, *dims)
    got = bounded_counts(table, q, TYPE, REGION)
    want = ref.table(measure, list(q.dimensions))
    assert got.tolist() == want.tolist()


def test_the_hand_made_data_has_known_answers(hand_made: tuple[TicketTable, Reference]) -> None:
    """A few totals worked out by hand, so the reference itself is checked too."""
    table, _ = hand_made
    # Frequency in 2024 among customer accounts: C0 has 12 distinct performances (14 orders on
    # 12 + i % 12 wrap around), so 11+.
    q = query("bookers", "year", "frequency_band")
    counts = dict(zip(itertools.product(("2023", "2024"), public_keys("frequency_band", *YEARS)),
                      bounded_counts(table, q, TYPE).tolist(), strict=True))  # fmt: skip
    assert counts[("2024", "11+")] == 1
    # Returning in 2024: C1, C2, C3, C6 (2023 performance 6, then the subscription) and C7
    # (2023 performances 11 and 1, then the late order); not C5, whose 2023 order was refunded.
    q = query("bookers", "year", "returning")
    by = dict(zip(itertools.product(("2023", "2024"), ("new", "returning")),
                  bounded_counts(table, q, TYPE).tolist(), strict=True))  # fmt: skip
    assert by[("2024", "returning")] == 5
    assert by[("2023", "returning")] == 0  # the first year of the data cannot tell
    # Walk-ins (5 orders of 1 or 2 tickets: 7 tickets, 5 visits) have no frequency band.
    for measure, walk_ins in (("tickets", 7), ("visits", 5), ("bookers", 0)):
        everyone = bounded_counts(table, query(measure, "year"), TYPE).sum()
        known = bounded_counts(table, query(measure, "year", "frequency_band"), TYPE).sum()
        assert everyone - known == walk_ins
    # The subscription order counts once in each of the four quarters it covers.
    sub = query("orders", "price_type", keys={"price_type": ("subscription",)})
    assert bounded_counts(table, sub, TYPE).tolist() == [1]
    q4 = query("orders", "quarter", "price_type", keys={"price_type": ("subscription",)})
    assert bounded_counts(table, q4, TYPE).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_node_keys_put_everything_in_the_nodes_own_cell(
    hand_made: tuple[TicketTable, Reference],
) -> None:
    table, _ = hand_made
    tickets = int(bounded_counts(table, query("tickets", "year"), TYPE).sum())
    q = query("tickets", "institution_type")
    got = bounded_counts(table, q, "museum")
    assert got.sum() == tickets and got[q.dimensions[0].keys.index("museum")] == tickets
    region = query("tickets", "institution_region")
    assert bounded_counts(table, region, TYPE).tolist() == [0] * 20 + [tickets]  # UNKNOWN
    moved = bounded_counts(table, region, TYPE, "NL-GR")
    assert moved[region.dimensions[0].keys.index("NL-GR")] == tickets
    only = query("tickets", "institution_type", keys={"institution_type": ("museum",)})
    assert bounded_counts(table, only, TYPE).tolist() == [0]  # not this node's key


def test_only_performances_in_the_querys_years_count(
    hand_made: tuple[TicketTable, Reference],
) -> None:
    table, ref = hand_made
    for year in YEARS:
        in_year = [r for r in ref.rows if r["performance_start"][:4] == str(year)]
        got = bounded_counts(table, query("tickets", "discipline", years=(year, year)), TYPE)
        assert got.sum() == len(in_year)
    # Customer keys still look at the year before, even when it is outside the period.
    q = query("bookers", "returning", years=(2024, 2024))
    assert bounded_counts(table, q, TYPE).tolist()[1] == 5


def test_keys_outside_the_query_fall_outside_the_table(
    hand_made: tuple[TicketTable, Reference],
) -> None:
    table, ref = hand_made
    q = query("tickets", "discipline", "year", keys={"discipline": ("dans",), "year": ("2024",)})
    dans_2024 = sum(
        1 for r in ref.rows if r["discipline"] == "dans" and r["performance_start"][:4] == "2024"
    )
    assert bounded_counts(table, q, TYPE).tolist() == [dans_2024]


# --- contribution bounds -----------------------------------------------------------------------


def _one_customer(tickets_file: Callable[..., Path], rows: list[dict[str, Any]]) -> TicketTable:
    return load_ticket_lines(tickets_file(rows))


def test_bookers_count_at_most_once_per_cell_whatever_max_per_cell_says(
    tickets_file: Callable[..., Path],
) -> None:
    rows = [
        ticket_row(ticket_id=f"T{i}", order_id=f"O{i // 2}", performance_id=f"P{i // 4}")
        for i in range(12)
    ]
    table = _one_customer(tickets_file, rows)
    for per_cell in (1, 8, 1000):
        q = query("bookers", "discipline", max_cells=4, max_per_cell=per_cell)
        assert bounded_counts(table, q, TYPE).sum() == 1
    assert bounded_counts(table, query("visits", "discipline"), TYPE).sum() == 3
    assert bounded_counts(table, query("orders", "discipline"), TYPE).sum() == 6
    assert bounded_counts(table, query("tickets", "discipline"), TYPE).sum() == 12


def test_revenue_is_clipped_per_cell_in_cents(tickets_file: Callable[..., Path]) -> None:
    rows = [
        ticket_row(ticket_id="T1", price_paid_eur="25.00", discipline="toneel"),
        ticket_row(ticket_id="T2", price_paid_eur="25.50", discipline="toneel"),
        ticket_row(ticket_id="T3", price_paid_eur="12.34", discipline="dans"),
        ticket_row(
            ticket_id="T4",
            order_id="O2",
            customer_id="C2",
            price_paid_eur="99.99",
            discipline="film",
        ),
    ]
    table = _one_customer(tickets_file, rows)
    keys = {"discipline": ("toneel", "dans", "film")}
    assert bounded_counts(
        table, query("revenue_cents", "discipline", keys=keys), TYPE
    ).tolist() == [
        5050,
        1234,
        9999,
    ]
    clipped = query("revenue_cents", "discipline", max_per_cell=3000, keys=keys)
    assert bounded_counts(table, clipped, TYPE).tolist() == [3000, 1234, 3000]
    # One cell per customer: C1 keeps its largest (toneel), C2 its only one.
    one = query("revenue_cents", "discipline", max_cells=1, max_per_cell=3000, keys=keys)
    assert bounded_counts(table, one, TYPE).tolist() == [3000, 0, 3000]


def test_max_cells_keeps_each_units_largest_cells(tickets_file: Callable[..., Path]) -> None:
    rows = [
        ticket_row(ticket_id=f"T{i}", discipline=d)
        for i, d in enumerate(["toneel"] * 3 + ["dans"] * 2 + ["film"])
    ]
    table = _one_customer(tickets_file, rows)
    keys = {"discipline": ("toneel", "dans", "film")}
    q = query("tickets", "discipline", max_cells=2, max_per_cell=2, keys=keys)
    assert bounded_counts(table, q, TYPE).tolist() == [2, 2, 0]


def test_only_paid_tickets_count(tickets_file: Callable[..., Path]) -> None:
    statuses = ["paid", "refunded", "cancelled", "exchanged", "reserved_unpaid", "paid"]
    rows = [ticket_row(ticket_id=f"T{i}", order_status=s) for i, s in enumerate(statuses)]
    table = _one_customer(tickets_file, rows)
    for measure, want in (("tickets", 2), ("revenue_cents", 5000), ("bookers", 1)):
        assert bounded_counts(table, query(measure, "year"), TYPE).sum() == want


# --- distance bands need a geography -------------------------------------------------------------


def test_distance_band_is_the_customers_mean_distance(tmp_path: Path) -> None:
    # Venue in Utrecht; PC4 centroids due north of it: 0.036 degrees of latitude = 4.0 km.
    venue = Location(52.09, 5.12)
    pc4 = pl.DataFrame(
        {
            "country": ["NL"] * 3,
            "area": [3511, 3512, 3513],
            "lat": [52.09 + 0.036, 52.09 + 0.18, 52.09 + 0.90],  # 4 km, 20 km, 100 km
            "lon": [5.12] * 3,
        }
    )
    rows = [
        ticket_row(ticket_id="T1", order_id="O1", customer_id="C1", postcode="3511 AA"),
        ticket_row(ticket_id="T2", order_id="O2", customer_id="C2", postcode="3512 AA"),
        ticket_row(ticket_id="T3", order_id="O3", customer_id="C3", postcode="3513 AA"),
        ticket_row(ticket_id="T4", order_id="O4", customer_id="C4", postcode=""),
    ]
    path = write_tickets(tmp_path / "t.csv", rows)
    loaded = load(file_source(path), IngestSettings(), Geography(location=venue, pc4=pc4))
    q = query("bookers", "distance_band")
    by = dict(
        zip(q.dimensions[0].keys, bounded_counts(loaded.table, q, TYPE).tolist(), strict=True)
    )
    assert by == {
        "0-5 km": 1,
        "5-15 km": 0,
        "15-30 km": 1,
        "30-60 km": 0,
        "60+ km": 1,
        "unknown": 1,
    }


# --- a synthetic sector --------------------------------------------------------------------------


def test_a_synthetic_institution_matches_its_own_export(tmp_path: Path) -> None:
    """Every measure over a synthetic institution's export, against polars on the export itself."""
    sector = generate_sector(SectorConfig(n_institutions=2, seed=5, years=YEARS, scale=0.02))
    inst = sector.institutions[1]
    export = sector.truth.tickets.filter(pl.col("institution_id") == inst.institution_id)
    path = tmp_path / "t.csv"
    write_ticket_line_csv(export, path)
    table = load_ticket_lines(path)
    paid = export.filter(pl.col("order_status") == "paid").with_columns(
        pl.col("performance_start").dt.year().cast(pl.String).alias("year"),
        pl.col("discipline").alias("d"),
    )
    expected = {
        "tickets": pl.len(),
        "revenue_cents": (pl.col("price_paid_eur") * 100).round().cast(pl.Int64).sum(),
        "visits": pl.struct(
            pl.col("customer_id").fill_null(pl.col("order_id")), "performance_id"
        ).n_unique(),
        "orders": pl.col("order_id").n_unique(),
        "bookers": pl.col("customer_id").drop_nulls().n_unique(),
    }
    for measure, agg in expected.items():
        q = query(measure, "year", "discipline")
        want = paid.group_by("year", "d").agg(agg.alias("v"))
        lookup: dict[tuple[str, ...], int] = {
            (r["year"], r["d"]): r["v"] for r in want.iter_rows(named=True)
        }
        cells = itertools.product(*(d.keys for d in q.dimensions))
        assert bounded_counts(table, q, inst.type).tolist() == [lookup.get(c, 0) for c in cells]
    q = query("tickets", "institution_type", "institution_region", "year")
    got = bounded_counts(table, q, inst.type, inst.region).reshape(q.shape)
    t = q.dimensions[0].keys.index(inst.type)
    r = q.dimensions[1].keys.index(inst.region)
    assert got.sum() == got[t, r].sum() == paid.height


def test_the_engine_covers_the_whole_contract() -> None:
    """A measure or dimension added to the contract fails here until the node computes it."""
    assert set(SUPPORTED_MEASURES) == set(MEASURES)
    assert set(SUPPORTED_DIMENSIONS) == set(PUBLIC_DIMENSIONS)


# Values that are also public vocabulary or dates shared by every row of the test data.
PUBLIC_VALUES = {"paid", "online_own", "toneel", "full", "V1", "NL", "2024-01-02T10:00:00"}


def test_the_ticket_table_holds_nothing_identifying(tickets_file: Callable[..., Path]) -> None:
    rows = [
        ticket_row(
            ticket_id=f"TICKET-{i:03d}",
            order_id=f"ORDER-{i // 2:03d}",
            customer_id=f"CUST-{i // 3:03d}",
            performance_id=f"PERF-{i % 4}",
            email=f"person{i // 3}@example.nl",
            postcode=f"35{i % 10}1 XY",
            birth_year=str(1931 + i),
            price_paid_eur="12.34",
        )
        for i in range(30)
    ]
    table = load_ticket_lines(tickets_file(rows))
    raw = {str(v) for r in rows for k, v in r.items() if k != "price_paid_eur"}
    raw |= {r["postcode"].replace(" ", "") for r in rows} | {r["postcode"][:4] for r in rows}
    for frame in (table.frame, table.customers):
        found = {str(v) for c in frame.columns for v in frame[c].cast(pl.String).unique()}
        leaked = {v for v in found & raw if v not in PUBLIC_VALUES}
        assert not leaked, f"identifying values in {frame.columns}: {leaked}"
        assert not {"customer_id", "email", "postcode", "birth_year", "ticket_id"} & set(
            frame.columns
        )
