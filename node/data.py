"""Reading an institution's ticket lines into the minimal table the queries need.

Data minimisation starts at the reader: the customer id is turned into an opaque integer unit
code, the postcode into a region key and the performance date into year and quarter, and the
raw columns are dropped before anything else sees the table. Nothing the query engine holds
could identify a person, which makes it hard for a later bug to leak one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from node.geo import region_expr
from protocols.vocabulary import (
    CHANNELS,
    DISCIPLINES,
    ORDER_STATUSES,
    PRICE_TYPES,
    REQUIRED_COLUMNS,
)

# Columns the query engine reads (the rest of a house export is never loaded).
_USED = (
    "ticket_id",
    "order_id",
    "customer_id",
    "order_status",
    "channel",
    "performance_start",
    "discipline",
    "price_type",
)
_MAX_PROBLEMS_SHOWN = 10


class DataError(Exception):
    """The node's data cannot be used; ``problems`` lists every reason found."""

    def __init__(self, source: Path, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        shown = problems[:_MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        text = f"{source}: {len(problems)} problem(s)\n  - " + "\n  - ".join(shown)
        if more:
            text += f"\n  ... and {more} more"
        super().__init__(text)


@dataclass(frozen=True, slots=True)
class TicketTable:
    """One row per ticket: opaque unit code and public-vocabulary columns only."""

    frame: pl.DataFrame
    source: Path

    @property
    def rows(self) -> int:
        return self.frame.height


def _vocabulary_problems(df: pl.DataFrame, column: str, vocab: tuple[str, ...]) -> list[str]:
    bad = df.filter(~pl.col(column).is_in(vocab)).select(column).unique().to_series().to_list()
    if not bad:
        return []
    shown = ", ".join(repr(str(v)[:30]) for v in bad[:5])
    return [f"column {column!r} has values outside the vocabulary: {shown}"]


def load_ticket_lines(path: Path, default_country: str = "NL") -> TicketTable:
    """Read a canonical ``ticket_line`` CSV; raises DataError listing every problem found."""
    if not path.is_file():
        raise DataError(path, ["file not found"])
    try:
        header = pl.read_csv(path, n_rows=0, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise DataError(path, [f"not a readable CSV file: {err}"]) from err
    columns = set(header.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(path, [f"required column {c!r} is missing" for c in missing])
    wanted = [*_USED, *(c for c in ("postcode", "country") if c in columns)]
    try:
        raw = pl.read_csv(path, columns=wanted, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise DataError(path, [f"cannot read the file: {err}"]) from err

    problems: list[str] = []
    start = pl.col("performance_start").str.to_datetime(strict=False, time_zone=None)
    df = raw.with_columns(start.alias("_start"))
    unparsed = df.filter(pl.col("_start").is_null()).height
    if unparsed:
        problems.append(f"{unparsed} row(s) have a performance_start that is not an ISO date-time")
    problems += _vocabulary_problems(df, "discipline", DISCIPLINES)
    problems += _vocabulary_problems(df, "order_status", ORDER_STATUSES)
    problems += _vocabulary_problems(df, "channel", CHANNELS)
    problems += _vocabulary_problems(df, "price_type", PRICE_TYPES)
    dup = df.height - df.select(pl.col("ticket_id").n_unique()).item()
    if dup:
        problems.append(f"{dup} duplicate ticket_id value(s)")
    if problems:
        raise DataError(path, problems)

    country = (
        pl.col("country").fill_null(default_country)
        if "country" in columns
        else pl.lit(default_country)
    )
    postcode = pl.col("postcode") if "postcode" in columns else pl.lit(None, dtype=pl.String)
    # The privacy unit: the customer account, or the order for anonymous walk-ins (each order
    # of an unknown buyer is counted as its own unit, the only safe reading of "no account").
    unit_key = (
        pl.when(pl.col("customer_id").is_null() | (pl.col("customer_id") == ""))
        .then(pl.lit("order:") + pl.col("order_id"))
        .otherwise(pl.lit("customer:") + pl.col("customer_id"))
    )
    frame = df.select(
        unit_key.rank("dense").cast(pl.Int64).alias("unit"),
        pl.col("order_status"),
        pl.col("channel"),
        pl.col("discipline"),
        pl.col("price_type"),
        pl.col("_start").dt.year().cast(pl.Utf8).alias("year"),
        (
            pl.col("_start").dt.year().cast(pl.Utf8)
            + pl.lit("Q")
            + pl.col("_start").dt.quarter().cast(pl.Utf8)
        ).alias("quarter"),
        region_expr(postcode, country).alias("region"),
    )
    return TicketTable(frame=frame, source=path)
