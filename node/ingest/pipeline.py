"""Reading an export end to end: source -> mapping -> checks -> minimised tables.

What leaves this module, and what does not:

* ``lines``: one row per usable ticket with an opaque ``unit`` code (and whether it is a
  customer account or an anonymous order), opaque order and performance codes,
  public-vocabulary columns, dates, price, venue and the region of the buyer's home. No
  customer id, e-mail address, postcode or birth data.
* ``homes``: one row per unit with the transient fields reduced as the domain notes say: the
  4-digit postcode area (never the letters), the country, the region and the birth year (never
  the date). Used to derive features (distance band, age band), then dropped by the caller.
* ``addresses``: one e-mail address per unit, only when a match key is configured, for the
  caller to turn into match keys (HMAC) and drop.
* ``report``: every problem found, with the quarantined rows counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Final

import polars as pl

from node.geo import region_of_area_expr
from node.ingest.mapping import Mapping
from node.ingest.matchkey import MatchKeySecret
from node.ingest.problems import DataError, ValidationReport, problem_lines
from node.ingest.sources import EXTRA, FIRST, ROW, RawRows, Source, SourceError
from node.ingest.validate import Checked, check_rows

DEFAULT_MAX_BAD_SHARE: Final[float] = 0.01
# Separate hash seeds keep customer and order codes apart: an anonymous walk-in is one unit
# per order, and its code must not equal some customer's.
_CUSTOMER_SEED: Final[int] = 0x5EED_C057
_ORDER_SEED: Final[int] = 0x5EED_0D3E
_PERFORMANCE_SEED: Final[int] = 0x5EED_9E4F


@dataclass(frozen=True, slots=True)
class IngestSettings:
    mapping: Mapping = field(default_factory=Mapping)
    default_country: str = "NL"
    max_bad_share: float = DEFAULT_MAX_BAD_SHARE
    match_key: MatchKeySecret | None = None
    today: date | None = None  # fixed in tests; the machine's date otherwise


@dataclass(frozen=True, slots=True)
class Checking:
    """An export read and checked, before anything is derived from it."""

    report: ValidationReport
    checked: Checked | None = None  # None when the rows could not be read at all
    raw: RawRows | None = None


@dataclass(frozen=True, slots=True)
class Ingested:
    report: ValidationReport
    lines: pl.DataFrame
    homes: pl.DataFrame
    # unit, email: one address per unit, transient. Present only when a match key is
    # configured; the caller turns it into match keys (``derive_match_keys``) and drops it.
    addresses: pl.DataFrame | None


def _codes(s: pl.Series, seed: int) -> pl.Series:
    """Opaque 64-bit codes of a text column: equal text, equal code.

    A keyed 64-bit hash rather than a dense numbering, because it costs one pass instead of a
    sort or a dictionary. Two customers could share a code with probability about n^2 / 2^65
    (3e-8 for a million customers); that would merge them into one privacy unit, which only
    tightens the bound on each of them, never loosens it.
    """
    return s.hash(seed).reinterpret(signed=True)


def check_source(source: Source, settings: IngestSettings) -> Checking:
    """Read and check; never raises for a problem with the data (the report holds it)."""
    mapping = settings.mapping
    display = source.display
    notices: list[str] = []
    if mapping.origin:
        notices.append(f"mapping: {mapping.origin}")
    try:
        header = source.header()
    except SourceError as err:
        return Checking(ValidationReport(display, file_errors=tuple(err.problems)))
    resolved = mapping.resolve(header)
    problems = resolved.problems(source.delimiter_hint)
    if problems:
        return Checking(
            ValidationReport(display, file_errors=tuple(problems), notices=tuple(notices))
        )
    if resolved.unread:
        shown = ", ".join(repr(c) for c in resolved.unread[:12])
        more = f" and {len(resolved.unread) - 12} more" if len(resolved.unread) > 12 else ""
        notices.append(f"column(s) not read (not needed): {shown}{more}")
    fields = dict(resolved.sources)
    if settings.match_key is None and "email" in fields:
        # Without a key there is nothing to make of an address: it is not even read.
        notices.append(
            f"no match key file ([matching] key_file): the e-mail column {fields.pop('email')!r}"
            " is not read, so this node cannot take part in cross-institution reach statistics"
        )
    elif settings.match_key is not None:
        notices += settings.match_key.warnings
    try:
        raw = source.read(fields)
    except SourceError as err:
        return Checking(
            ValidationReport(display, file_errors=tuple(err.problems), notices=tuple(notices))
        )
    first = header[0] if header else None
    first_fields = frozenset(f for f, c in resolved.sources.items() if c == first)
    checked = check_rows(
        raw, mapping, first_fields, settings.default_country, settings.today or date.today()
    )
    notices = [*raw.notices, *notices]
    report = ValidationReport(
        source=display,
        description=raw.description,
        rows_read=checked.typed.height,
        blank_rows=checked.blank_rows,
        quarantined=int(checked.bad.sum()),
        max_bad_share=settings.max_bad_share,
        problems=checked.problems,
        notices=tuple(notices),
    )
    return Checking(report, checked, raw)


def minimise(
    checked: Checked, settings: IngestSettings
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    """(lines, homes, addresses): identifiers replaced by codes, transient fields reduced."""
    # Usually nothing is quarantined: then the filter would only copy every column.
    good = checked.typed.filter(~checked.bad) if checked.bad.any() else checked.typed
    customer = _codes(good["customer_id"], _CUSTOMER_SEED)
    order = _codes(good["order_id"], _ORDER_SEED)
    area = pl.col("home_area")
    good = good.with_columns(
        pl.when(good["customer_id"].is_null()).then(order).otherwise(customer).alias("unit"),
        order.alias("order"),
        _codes(good["performance_id"], _PERFORMANCE_SEED).alias("performance"),
        good["customer_id"].is_not_null().alias("has_account"),
        # Area and country travel together in one number (Belgian areas + 10000); an area
        # without a known Dutch or Belgian country places no one (the check says so).
        pl.when(pl.col("country").is_in(["NL", "BE"]))
        .then(area + pl.when(pl.col("country") == "BE").then(10_000).otherwise(0))
        .alias("_area_key"),
    )
    # Each unit's home: its last postcode area in the export's row order (exports list orders
    # in time order), its last country, its last birth year and e-mail address. "Last known"
    # is found as the highest row number holding a value (a plain max per unit, which polars
    # aggregates several times faster than ``drop_nulls().last()``), then gathered.
    known = ["_area_key", "birth_year", *(["email"] if settings.match_key is not None else [])]
    last_at = (
        good.lazy()
        .select(
            "unit",
            "has_account",
            "country",
            *(
                pl.when(pl.col(c).is_not_null()).then(pl.int_range(pl.len())).alias(c)
                for c in known
            ),
        )
        .group_by("unit")
        .agg(
            pl.col("has_account").first(),
            pl.col("country").last().alias("_country_last"),
            pl.col(known).max(),
        )
        .collect()
    )
    per_unit = last_at.with_columns(good[c].gather(last_at[c]).alias(c) for c in known)
    key = pl.col("_area_key")
    homes = (
        per_unit.with_columns(
            pl.when(key.is_null())
            .then(pl.col("_country_last"))
            .when(key >= 10_000)
            .then(pl.lit("BE"))
            .otherwise(pl.lit("NL"))
            .alias("home_country"),
            (key % 10_000).cast(pl.Int32).alias("home_area"),
        )
        .with_columns(
            region_of_area_expr(pl.col("home_area"), pl.col("home_country")).alias("home_region")
        )
        .select("unit", "has_account", "home_country", "home_area", "home_region", "birth_year")
        .sort("unit")
    )
    addresses = per_unit.select("unit", "email") if settings.match_key is not None else None
    # A ticket's region is its buyer's home region: one per customer, so a customer who moved
    # is counted in one region (the last), as in the features.
    lines = good.select(
        "unit",
        "has_account",
        "order",
        "performance",
        "order_status",
        "channel",
        "discipline",
        "price_type",
        "order_datetime",
        "performance_start",
        "price_paid_eur",
        "venue_id",
    ).join(
        homes.select("unit", pl.col("home_region").alias("region")),
        on="unit",
        how="left",
        maintain_order="left",
    )
    return lines, homes, addresses


def ingest(source: Source, settings: IngestSettings) -> Ingested:
    """Read, check and minimise; raises DataError (with the report) when the check fails."""
    checking = check_source(source, settings)
    report = checking.report
    if not report.passed or checking.checked is None:
        raise DataError(source.display, problem_lines(report), report)
    lines, homes, addresses = minimise(checking.checked, settings)
    return Ingested(report=report, lines=lines, homes=homes, addresses=addresses)


def quarantined_rows(checking: Checking) -> pl.DataFrame:
    """The quarantined rows as read (canonical names) with their problems, for the operator."""
    if checking.checked is None or checking.raw is None:
        return pl.DataFrame()
    bad_rows = checking.checked.typed.filter(checking.checked.bad).select(ROW)
    reasons = (
        checking.report.problems.filter(pl.col("severity") == "error")
        .group_by("row")
        .agg(
            pl.format("{}: {}", "column", "message")
            .sort_by("column")
            .str.join("; ")
            .alias("problems")
        )
        .rename({"row": ROW})
    )
    values = checking.raw.frame.select(pl.exclude(FIRST, EXTRA)).with_columns(
        pl.exclude(ROW).cast(pl.String)
    )
    return (
        bad_rows.join(reasons, on=ROW, how="left")
        .join(values, on=ROW, how="left")
        .sort(ROW)
        .rename({ROW: "row"})
    )
