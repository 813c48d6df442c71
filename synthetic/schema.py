"""The canonical `ticket_line` table as the generator writes it: columns, order and types.

Column names and their order come from `protocols.vocabulary` (REQUIRED_COLUMNS, then the
OPTIONAL_COLUMNS the generator fills, in contract order). Types are the natural polars types of
each field; in CSV files datetimes are ISO 8601 without a zone (`2024-03-14T20:15:00`, local
time), prices have two decimals, booleans are `true`/`false` and a missing value is empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import polars as pl

from protocols.vocabulary import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

DATETIME_FORMAT: Final[str] = "%Y-%m-%dT%H:%M:%S"
DATETIME: Final[pl.Datetime] = pl.Datetime("us")

# Optional columns the generator does not fill: a local genre label is free text.
NOT_GENERATED: Final[frozenset[str]] = frozenset({"genre_local"})
GENERATED_OPTIONAL: Final[tuple[str, ...]] = tuple(
    c for c in OPTIONAL_COLUMNS if c not in NOT_GENERATED
)
TICKET_LINE_COLUMNS: Final[tuple[str, ...]] = (*REQUIRED_COLUMNS, *GENERATED_OPTIONAL)

_TYPES: Final[dict[str, pl.DataType]] = {
    "ticket_id": pl.String(),
    "order_id": pl.String(),
    "customer_id": pl.String(),
    "order_datetime": DATETIME,
    "order_status": pl.String(),
    "channel": pl.String(),
    "performance_id": pl.String(),
    "performance_start": DATETIME,
    "venue_id": pl.String(),
    "discipline": pl.String(),
    "price_type": pl.String(),
    "price_paid_eur": pl.Float64(),
    "attended": pl.Boolean(),
    "is_subscription": pl.Boolean(),
    "postcode": pl.String(),
    "country": pl.String(),
    "birth_year": pl.Int64(),
    "email": pl.String(),
    "pass_type": pl.String(),
    "membership_type": pl.String(),
    "price_zone": pl.String(),
}

TICKET_LINE_SCHEMA: Final[pl.Schema] = pl.Schema({c: _TYPES[c] for c in TICKET_LINE_COLUMNS})

# The truth's ticket table adds who bought it (null person for anonymous walk-ins).
TRUTH_TICKET_SCHEMA: Final[pl.Schema] = pl.Schema(
    {"institution_id": pl.String(), **TICKET_LINE_SCHEMA, "person_id": pl.Int64()}
)


def write_ticket_line_csv(frame: pl.DataFrame, path: Path) -> None:
    """Write one institution's ticket_line table as the canonical CSV."""
    frame.select(TICKET_LINE_COLUMNS).write_csv(
        path, datetime_format=DATETIME_FORMAT, float_precision=2, null_value=""
    )


def read_ticket_line_csv(path: Path) -> pl.DataFrame:
    """Read a canonical ticket_line CSV back into the canonical types."""
    raw = pl.read_csv(path, infer_schema=False)
    missing = [c for c in TICKET_LINE_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    casts = []
    for column, dtype in TICKET_LINE_SCHEMA.items():
        col = pl.col(column)
        if dtype == DATETIME:
            casts.append(col.str.to_datetime(DATETIME_FORMAT, time_unit="us").alias(column))
        elif dtype == pl.Boolean():
            casts.append(pl.when(col.is_null()).then(None).otherwise(col == "true").alias(column))
        else:
            casts.append(col.cast(dtype).alias(column))
    return raw.select(casts)
