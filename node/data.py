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

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from node.features import CustomerFeatures, default_as_of, derive_features
from node.geo import Geography
from node.ingest.matchkey import MatchKeys, derive_match_keys
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
    # Year and quarter as text: built for the few distinct quarters, then looked up per row.
    yq = pl.col("performance_start").dt.year() * 10 + pl.col("performance_start").dt.quarter()
    distinct = lines.select(yq.unique().drop_nulls().alias("k"))["k"].to_list()
    years = {k: str(k // 10) for k in distinct}
    quarters = {k: f"{k // 10}Q{k % 10}" for k in distinct}
    return TicketTable(
        frame=lines.select(
            "unit",
            "order_status",
            "channel",
            "discipline",
            "price_type",
            yq.replace_strict(years, return_dtype=pl.String).alias("year"),
            yq.replace_strict(quarters, return_dtype=pl.String).alias("quarter"),
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
        table=ticket_table(ingested.lines, Path(source.display)),
        features=features,
        match_keys=match_keys,
        report=ingested.report,
        lines=ingested.lines,
    )


def load_ticket_lines(path: Path, default_country: str = "NL") -> TicketTable:
    """Read a canonical ``ticket_line`` file; raises DataError listing every problem found."""
    ingested = ingest(file_source(path), IngestSettings(default_country=default_country))
    return ticket_table(ingested.lines, path)
