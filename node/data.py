"""Reading an institution's ticket lines into the minimal tables the node works with.

Data minimisation starts at the reader: the customer id becomes an opaque integer unit code,
the postcode a region and a 4-digit area, the birth date a year, the e-mail address a keyed
match key (or nothing), and the raw columns are dropped before anything else sees the data.
What the query engine holds (``TicketTable.frame``) could identify no one, which makes it hard
for a later bug to leak a person.

``load`` is the full path (any source, a mapping, validation with quarantine, features);
``load_ticket_lines`` keeps the original one-argument form for a canonical CSV file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final

import polars as pl

from node.features import CustomerFeatures, band_expr, default_as_of, derive_features
from node.geo import Geography
from node.ingest.matchkey import MatchKeys, derive_match_keys
from node.ingest.pipeline import IngestSettings, ingest
from node.ingest.problems import DataError, ValidationReport
from node.ingest.sources import Source, file_source
from protocols import bands, vocabulary
from protocols.vocabulary import COUNTED_STATUSES

__all__ = [
    "DataError",
    "LoadedData",
    "TicketTable",
    "load",
    "load_ticket_lines",
    "ticket_table",
]


# Keys that belong to a customer in a year rather than to a ticket: held once per customer-year
# (``TicketTable.customers``) and joined onto tickets only by queries that break down by them.
CUSTOMER_KEYS: Final[tuple[str, ...]] = ("frequency_band", "returning", "age_band", "distance_band")


class _Once:
    """A table computed on first use, then kept (thread-safe: tasks run in worker threads)."""

    def __init__(self, make: Callable[[], pl.DataFrame]) -> None:
        self._make: Callable[[], pl.DataFrame] | None = make
        self._value: pl.DataFrame | None = None
        self._lock = threading.Lock()

    def get(self) -> pl.DataFrame:
        with self._lock:
            if self._value is None:
                assert self._make is not None
                self._value = self._make()
                self._make = None  # drop the inputs it held
            return self._value


@dataclass(frozen=True, slots=True)
class TicketTable:
    """What the query engine reads: opaque codes, public keys and derived bands, nothing more.

    ``frame``, one row per ticket: unit, has_account, order, performance (opaque Int64 codes,
    and whether the unit is a customer account rather than an anonymous order), order_status,
    channel, discipline, price_type, year ("2024"), quarter ("2024Q3"), region (the customer's
    home region, one per customer), price_cents, lead_time_band and order_size_band (labels of
    ``protocols.bands``; null on tickets that do not count).

    ``customers``, one row per (unit, year) with counted tickets: unit, year and the keys of
    ``CUSTOMER_KEYS`` for that customer in that year. It is made on first use: loading stays as
    fast as before for nodes that are never asked about customers, and a node that is pays it
    once (about 0.15 s per million tickets).

    ``institution_region`` is the node's own region (from its configuration): a property of the
    institution, not of any ticket, like its type.
    """

    frame: pl.DataFrame
    source: Path
    institution_region: str = "UNKNOWN"
    _customers: _Once | None = field(default=None, repr=False, compare=False)

    @property
    def rows(self) -> int:
        return self.frame.height

    @property
    def customers(self) -> pl.DataFrame:
        if self._customers is None:
            return customer_years(self.frame)
        return self._customers.get()


@dataclass(frozen=True, slots=True)
class LoadedData:
    table: TicketTable
    features: CustomerFeatures
    match_keys: MatchKeys | None  # in memory only; never in what queries read
    report: ValidationReport
    lines: pl.DataFrame  # minimised ticket lines, for local statistics and the local report


def customer_years(
    frame: pl.DataFrame,
    homes: pl.DataFrame | None = None,
    distance_bands: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Per (unit, year) with counted tickets: the customer-level keys of that year.

    ``frame`` is a ticket frame; ``homes`` (unit, birth_year) gives ages, ``distance_bands``
    (unit, distance_band) distances; without them both are unknown. A customer's visits in a
    year are their distinct performances with counted tickets that year; returning means a
    counted ticket in the year before (so in the first year of the data everyone is new).
    Anonymous walk-ins (a unit per order) have no visit history: they get no frequency band and
    no returning key, and fall outside tables over those.
    """
    years = (
        frame.lazy()
        .filter(pl.col("order_status").is_in(COUNTED_STATUSES))
        .group_by("unit", pl.col("year").cast(pl.Int32).alias("_year"))
        .agg(pl.col("performance").n_unique().alias("_visits"), pl.col("has_account").first())
    )
    before = years.select("unit", (pl.col("_year") + 1).alias("_year"), pl.lit(True).alias("_b"))
    out = years.join(before, on=["unit", "_year"], how="left")
    if homes is not None:
        out = out.join(homes.lazy().select("unit", "birth_year"), on="unit", how="left")
    else:
        out = out.with_columns(pl.lit(None, dtype=pl.Int32).alias("birth_year"))
    if distance_bands is not None:
        out = out.join(distance_bands.lazy(), on="unit", how="left")
    else:
        out = out.with_columns(pl.lit(None, dtype=pl.String).alias("distance_band"))
    return out.select(
        "unit",
        pl.col("_year").cast(pl.String).alias("year"),
        band_expr(pl.when("has_account").then(pl.col("_visits")), bands.FREQUENCY_BANDS).alias(
            "frequency_band"
        ),
        pl.when("has_account")
        .then(pl.when(pl.col("_b")).then(pl.lit("returning")).otherwise(pl.lit("new")))
        .alias("returning"),
        # Age in the performance's year: what the person would have said at the door.
        band_expr(pl.col("_year") - pl.col("birth_year"), bands.AGE_BANDS, bands.UNKNOWN).alias(
            "age_band"
        ),
        pl.col("distance_band").fill_null(bands.UNKNOWN),
    ).collect()


def ticket_table(
    lines: pl.DataFrame,
    source: Path,
    homes: pl.DataFrame | None = None,
    features: CustomerFeatures | None = None,
    institution_region: str = "UNKNOWN",
) -> TicketTable:
    """The query engine's tables, every column computed with polars expressions (no row loops).

    Only counted tickets (order status paid) get the derived bands; the others keep their public
    columns and nulls. ``homes`` gives ages (without it they are unknown), ``features`` the
    distance bands (without it unknown); both are reduced to what ``customer_years`` needs and
    kept only until it has run.
    """
    start = pl.col("performance_start")
    counted = pl.col("order_status").is_in(COUNTED_STATUSES)
    # Year and quarter as text, gathered from a short list of labels by a dense quarter index:
    # a million lookups in a hash map cost several times more.
    first, last = lines.select(start.min().alias("a"), start.max().alias("b")).row(0)
    first, last = (first.year, last.year) if first is not None else (2000, 2000)
    quarter_index = (start.dt.year() - first) * 4 + start.dt.quarter() - 1
    year_labels = pl.Series([str(y) for y in range(first, last + 1) for _ in range(4)])
    quarter_labels = pl.Series(vocabulary.quarters(first, last))
    lead_days = (start - pl.col("order_datetime")).dt.total_days().clip(0, None)
    frame = (
        lines.lazy()
        .select(
            "unit",
            "has_account",
            "order",
            "performance",
            "order_status",
            "channel",
            "discipline",
            "price_type",
            pl.lit(year_labels).gather(quarter_index).alias("year"),
            pl.lit(quarter_labels).gather(quarter_index).alias("quarter"),
            "region",
            (pl.col("price_paid_eur") * 100).round().cast(pl.Int64).alias("price_cents"),
            # An order placed after the performance began has lead time 0 (the check warns).
            pl.when(counted).then(lead_days).alias("_lead"),
            # Counted tickets in the order, over all its performances: the size of the purchase.
            pl.when(counted).then(counted.sum().over("order")).alias("_order_size"),
        )
        .select(
            pl.exclude("_lead", "_order_size"),
            # Banded from materialised columns: band_expr refers to its value several times.
            band_expr(pl.col("_lead"), bands.LEAD_TIME_BANDS).alias("lead_time_band"),
            band_expr(pl.col("_order_size"), bands.ORDER_SIZE_BANDS).alias("order_size_band"),
        )
        .collect()
    )
    ages = homes.select("unit", "birth_year") if homes is not None else None
    distances = features.frame.select("unit", "distance_band") if features is not None else None
    return TicketTable(
        frame=frame,
        source=source,
        institution_region=institution_region,
        _customers=_Once(lambda: customer_years(frame, ages, distances)),
    )


def load(
    source: Source,
    settings: IngestSettings | None = None,
    geography: Geography | None = None,
    as_of: date | None = None,
) -> LoadedData:
    """Read, check, minimise and derive features; raises DataError when the check fails."""
    settings = settings or IngestSettings()
    ingested = ingest(source, settings)
    when = as_of or default_as_of(ingested.lines, settings.today or date.today())
    # The HMACs run in Python while polars derives the features with the GIL released: the
    # two overlap instead of adding up.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="match-keys") as pool:
        pending = (
            pool.submit(
                derive_match_keys,
                ingested.addresses["unit"],
                ingested.addresses["email"],
                settings.match_key,
            )
            if ingested.addresses is not None and settings.match_key is not None
            else None
        )
        features = derive_features(ingested.lines, ingested.homes, geography or Geography(), when)
        match_keys = pending.result() if pending is not None else None
    return LoadedData(
        table=ticket_table(ingested.lines, Path(source.display), ingested.homes, features),
        features=features,
        match_keys=match_keys,
        report=ingested.report,
        lines=ingested.lines,
    )


def load_ticket_lines(path: Path, default_country: str = "NL") -> TicketTable:
    """Read a canonical ``ticket_line`` file; raises DataError listing every problem found."""
    ingested = ingest(file_source(path), IngestSettings(default_country=default_country))
    return ticket_table(ingested.lines, path, ingested.homes)
