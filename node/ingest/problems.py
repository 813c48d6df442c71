"""What is wrong with an export: every problem at once, per row and column, with a summary.

Row-level problems live in a polars frame (one row per problem), so a million-row export with
ten thousand bad rows costs a frame, not ten thousand Python objects. File-level problems (the
file is empty, a required column is missing, a forbidden column is present) stop the load
before any row is read; they are plain sentences.

Rows are numbered the way the operator sees them: for a CSV file the header is row 1, so row 2
is the first data row, as in a spreadsheet. For Parquet and SQL the first row is row 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

import polars as pl

from node.ingest.mapping import CODE_FIELDS

ERROR = "error"  # the row is quarantined
WARNING = "warning"  # the row is kept; the one field is set aside (made null)

PROBLEM_SCHEMA: dict[str, pl.DataType] = {
    "row": pl.Int64(),
    "column": pl.String(),
    "kind": pl.String(),
    "severity": pl.String(),
    "message": pl.String(),
}

DEFAULT_ROWS_SHOWN = 20


class Kind(StrEnum):
    """Each row-level check has a short, stable name (used in the summary and in tests)."""

    MISSING_VALUE = "missing value"
    TOO_MANY_FIELDS = "more fields than the header"
    WRONG_DELIMITER = "row uses another delimiter"
    TRUNCATED = "incomplete last row"
    TOO_LONG = "value too long"
    NOT_A_DATETIME = "not a date-time"
    DATE_OUT_OF_RANGE = "date out of range"
    UNKNOWN_CODE = "unknown code"
    NOT_A_NUMBER = "not a number"
    NEGATIVE_PRICE = "negative price"
    DUPLICATE_ID = "duplicate ticket_id"
    BAD_POSTCODE = "not a postcode"
    BAD_COUNTRY = "unknown country"
    BAD_BIRTH = "implausible birth year"
    BAD_EMAIL = "not an e-mail address"
    ORDER_AFTER_START = "ordered after the performance"


def hint(column: str, kind: str) -> str | None:
    """What to do about a kind of problem, said once above its rows."""
    if kind == Kind.UNKNOWN_CODE and column in CODE_FIELDS:
        return (
            f"map your codes under [values.{column}] in the mapping file; {column} codes:"
            f" {', '.join(CODE_FIELDS[column])}"
        )
    return _HINTS.get(kind)


_HINTS: Final[dict[str, str]] = {
    Kind.NOT_A_DATETIME: "dates are read as ISO 8601 unless [formats] datetime in the mapping"
    ' gives your format (e.g. "%d-%m-%Y %H:%M")',
    Kind.DUPLICATE_ID: "the first row with an id is used; later rows with it are quarantined",
    Kind.TOO_MANY_FIELDS: "quote values that contain the delimiter",
    Kind.TOO_LONG: "the value is not shown; a field this long is an export accident",
    Kind.MISSING_VALUE: "only customer_id may be empty (an anonymous buyer)",
}


def empty_problems() -> pl.DataFrame:
    return pl.DataFrame(schema=PROBLEM_SCHEMA)


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """The outcome of reading and checking one export."""

    source: str
    description: str = ""  # how it was read: "CSV, UTF-8, ';'-separated"
    rows_read: int = 0
    blank_rows: int = 0
    quarantined: int = 0
    max_bad_share: float = 0.01
    problems: pl.DataFrame = field(default_factory=empty_problems)
    file_errors: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.quarantined

    @property
    def bad_share(self) -> float:
        return self.quarantined / self.rows_read if self.rows_read else 0.0

    @property
    def failures(self) -> list[str]:
        """Why the data cannot be used (empty when it can)."""
        reasons = list(self.file_errors)
        if reasons:
            return reasons
        if self.rows_read == 0:
            return ["there are no ticket rows in it"]
        if (self.problems["kind"] == Kind.TRUNCATED.value).any():
            # The rows that are there may be fine, but the ones after the cut are missing:
            # statistics over a partial export would be wrong without anyone noticing.
            return ["the file ends in the middle of a row: it looks cut off; export it again"]
        if self.rows_kept == 0:
            return [f"all {self.rows_read:,} rows have problems; none can be used"]
        if self.bad_share > self.max_bad_share:
            return [
                f"{self.quarantined:,} of {self.rows_read:,} rows ({self.bad_share:.2%}) have"
                f" problems, more than the limit of {self.max_bad_share:.2%}"
                " (data.max_bad_share in the node configuration)"
            ]
        return []

    @property
    def passed(self) -> bool:
        return not self.failures

    def counts(self) -> pl.DataFrame:
        """One row per (severity, column, kind) with the number of rows and the first row."""
        if self.problems.is_empty():
            return pl.DataFrame(
                schema={
                    "severity": pl.String(),
                    "column": pl.String(),
                    "kind": pl.String(),
                    "rows": pl.UInt32(),
                    "first_row": pl.Int64(),
                }
            )
        return (
            self.problems.group_by("severity", "column", "kind")
            .agg(pl.len().alias("rows"), pl.col("row").min().alias("first_row"))
            .sort("severity", "first_row", "column")
        )

    def summary_lines(self) -> list[str]:
        lines = [f"{self.source}" + (f" ({self.description})" if self.description else "")]
        if self.file_errors:
            return lines
        blank = f"; {self.blank_rows:,} blank line(s) skipped" if self.blank_rows else ""
        n_warn = self.problems.filter(pl.col("severity") == WARNING).height
        lines.append(
            f"  {self.rows_read:,} rows read{blank}; {self.rows_kept:,} usable,"
            f" {self.quarantined:,} quarantined ({self.bad_share:.2%}; limit"
            f" {self.max_bad_share:.2%}); {n_warn:,} warning(s)"
        )
        return lines

    def format(self, max_rows: int | None = DEFAULT_ROWS_SHOWN) -> str:
        """The full report as text: file-level errors, every kind of problem with its rows.

        ``max_rows`` limits the rows listed per kind of problem (None lists every one); the
        count of each kind is always complete.
        """
        out = self.summary_lines()
        for note in self.notices:
            out.append(f"  note: {note}")
        for err in self.file_errors:
            out.append(f"  error: {err}")
        counts = self.counts()
        if counts.height:
            out.append("")
            out.append("Problems (errors quarantine the row; warnings keep it without that value):")
            for group in counts.iter_rows(named=True):
                out.append(
                    f"  {group['severity']:<7} {group['column']}: {group['kind']}"
                    f" — {group['rows']:,} row(s)"
                )
                advice = hint(group["column"], group["kind"])
                if advice:
                    out.append(f"    ({advice})")
                rows = self.problems.filter(
                    (pl.col("severity") == group["severity"])
                    & (pl.col("column") == group["column"])
                    & (pl.col("kind") == group["kind"])
                ).sort("row")
                shown = rows if max_rows is None else rows.head(max_rows)
                for p in shown.iter_rows(named=True):
                    where = f"row {p['row']}" if p["row"] is not None else "file"
                    out.append(f"    {self.source}:{where}: {p['column']}: {p['message']}")
                hidden = rows.height - shown.height
                if hidden:
                    out.append(f"    ... and {hidden:,} more (list every one with --all)")
        out.append("")
        failures = self.failures
        if self.file_errors:
            out.append("FAILED: the export cannot be used as it is (see above)")
        elif failures:
            out.append("FAILED: " + "; ".join(failures))
        else:
            verdict = "PASSED"
            if self.quarantined:
                verdict += f" with {self.quarantined:,} row(s) quarantined"
            out.append(f"{verdict}: {self.rows_kept:,} ticket rows can be used")
        return "\n".join(out)

    def write_problems_csv(self, path: Path) -> None:
        """Every row-level problem, one per line, for a spreadsheet or a script."""
        self.problems.sort("row").write_csv(path)


class DataError(Exception):
    """The node's data cannot be used; ``problems`` lists every reason found.

    ``report`` carries the full validation report when the rows could be read at all.
    """

    def __init__(
        self, source: Path | str, problems: list[str], report: ValidationReport | None = None
    ) -> None:
        self.source = source
        self.problems = problems
        self.report = report
        shown = problems[:10]
        more = len(problems) - len(shown)
        text = f"{source}: {len(problems)} problem(s)\n  - " + "\n  - ".join(shown)
        if more:
            text += f"\n  ... and {more} more"
        super().__init__(text)


def problem_lines(report: ValidationReport, limit: int = 10) -> list[str]:
    """Short sentences for a DataError: file-level errors, then each kind with examples."""
    if report.file_errors:
        return list(report.file_errors)
    lines = list(report.failures)
    for group in report.counts().iter_rows(named=True):
        examples = (
            report.problems.filter(
                (pl.col("column") == group["column"]) & (pl.col("kind") == group["kind"])
            )
            .sort("row")
            .head(limit)
        )
        detail = "; ".join(
            f"row {r['row']}: {r['message']}" for r in examples.iter_rows(named=True)
        )
        lines.append(
            f"{group['severity']}: {group['column']}: {group['kind']} in {group['rows']:,}"
            f" row(s) ({detail})"
        )
    return lines
