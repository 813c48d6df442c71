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

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from node.features import CustomerFeatures, default_as_of, derive_features
from node.geo import Geography
from node.ingest.matchkey import MatchKeys
from node.ingest.pipeline import IngestSettings, ingest
from node.ingest.problems import DataError, ValidationReport
from node.ingest.sources import Source, file_source

__all__ = [
    "DataError",
    "LoadedData",
    "TicketTable",
    "load",
    "load_ticket_lines",
    "ticket_table",
]


@dataclass(frozen=True, slots=True)
class TicketTable:
    """One row per ticket: opaque unit code and public-vocabulary columns only.

    Columns: unit (Int64), order_status, channel, discipline, price_type, year ("2024"),
    quarter ("2024Q3"), region (a key of ``protocols.geography``).
    """

    frame: pl.DataFrame
    source: Path

    @property
    def rows(self) -> int:
        return self.frame.height


@dataclass(frozen=True, slots=True)
class LoadedData:
    table: TicketTable
    features: CustomerFeatures
    match_keys: MatchKeys | None  # in memory only; never in what queries read
    report: ValidationReport
    lines: pl.DataFrame  # minimised ticket lines, for local statistics and the local report


def ticket_table(lines: pl.DataFrame, source: Path) -> TicketTable:
    year = pl.col("performance_start").dt.year().cast(pl.String)
    return TicketTable(
        frame=lines.select(
            "unit",
            "order_status",
            "channel",
            "discipline",
            "price_type",
            year.alias("year"),
            (year + pl.lit("Q") + pl.col("performance_start").dt.quarter().cast(pl.String)).alias(
                "quarter"
            ),
            "region",
        ),
        source=source,
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
    features = derive_features(ingested.lines, ingested.homes, geography or Geography(), when)
    return LoadedData(
        table=ticket_table(ingested.lines, Path(source.display)),
        features=features,
        match_keys=ingested.match_keys,
        report=ingested.report,
        lines=ingested.lines,
    )


def load_ticket_lines(path: Path, default_country: str = "NL") -> TicketTable:
    """Read a canonical ``ticket_line`` file; raises DataError listing every problem found."""
    ingested = ingest(file_source(path), IngestSettings(default_country=default_country))
    return ticket_table(ingested.lines, path)
