"""What is wrong with an export: every problem at once, per row and column, with a summary.

Row-level problems live in a polars frame (one row per problem), so a million-row export with
ten thousand bad rows costs a frame, not ten thousand Python objects. File-level problems (the
file is empty, a required column is missing, a forbidden column is present) stop the load
before any row is read; they are plain sentences.

Rows are numbered the way the operator sees them: for a CSV file the header is row 1, so row 2
is the first data row, as in a spreadsheet. For Parquet and SQL the first row is row 1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

import polars as pl

from node.ingest.mapping import CODE_FIELDS
from node.ingest.starter import guess_code, guess_date_format

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
ROW_NUMBERS_SHOWN = 5  # per distinct unknown code or unreadable date, in the grouped view


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
    IMPLAUSIBLE_PRICE = "implausible price"


def hint(column: str, kind: str) -> str | None:
    """What to do about a kind of problem, said once above its rows. (Unreadable dates get
    theirs from ``_date_hint``, once over both date columns, in the grouped view.)"""
    if kind == Kind.UNKNOWN_CODE and column in CODE_FIELDS:
        return (
            f"map your codes under [values.{column}] in the mapping file; {column} codes:"
            f" {', '.join(CODE_FIELDS[column])}"
        )
    return _HINTS.get(kind)


# The row messages quote the raw value first (validate.py: "'07-02-24 12:07' is not ..."); the
# report keeps no raw values, so the advice takes its examples from there.
_QUOTED: Final[re.Pattern[str]] = re.compile(r"^'(.*)' is not ")
_IN_FORMAT: Final[re.Pattern[str]] = re.compile(r" in the format '(.*)'$")


def quoted_value(message: str) -> str | None:
    """The raw value a row message quotes, unless it was cut for showing (or there is none)."""
    m = _QUOTED.match(message)
    if m is None or m.group(1).endswith("…"):
        return None
    return m.group(1)


def _pattern_of(messages: list[str]) -> str | None:
    """The pattern init's guesser reads these messages' values with ("ISO 8601"), if any."""
    values = [v for m in messages if (v := quoted_value(m)) is not None]
    if not values:
        return None
    guess = guess_date_format(pl.Series(values, dtype=pl.String()))
    if guess.unrecognised is not None:
        return None
    return guess.format or "ISO 8601"


def _date_hint(messages: list[str]) -> str:
    values = [v for m in messages if (v := quoted_value(m)) is not None]
    fmt = next((m.group(1) for msg in messages if (m := _IN_FORMAT.search(msg))), None)
    guess = guess_date_format(pl.Series(values, dtype=pl.String())) if values else None
    fits = guess.format if guess is not None and guess.unrecognised is None else None
    example = f"values like {values[0]!r}" if values else "these values"
    if fmt is not None:
        text = (
            f"[formats] datetime in the mapping is {fmt!r}, which does not read {example}"
            " (or they are impossible dates, such as 30 February)"
        )
        if fits and fits != fmt:
            text += f'; they fit datetime = "{fits}"'
        return text
    text = "dates are read as ISO 8601 (2024-02-07 20:15) unless [formats] datetime in the mapping"
    if fits:
        return f'{text} gives your pattern: for {example} set datetime = "{fits}" under [formats]'
    return (
        f"{text} gives your pattern: for {example} write its strftime pattern there (e.g."
        ' datetime = "%d-%m-%Y %H:%M" for 07-02-2024 20:15); an impossible date (30 February)'
        " is never read"
    )


def mapping_line(column: str, value: str) -> str:
    """A line to paste under [values.<column>] that maps ``value`` (a guess, or the choices)."""
    target = guess_code(column, value)
    if target is not None:
        return f"{json.dumps(value, ensure_ascii=False)} = {json.dumps(target)}   # guessed: check"
    choices = ", ".join(CODE_FIELDS[column])
    return f'{json.dumps(value, ensure_ascii=False)} = "<one of {choices}>"'


_HINTS: Final[dict[str, str]] = {
    Kind.DUPLICATE_ID: "the first row with an id is used; later rows with it are quarantined",
    Kind.TOO_MANY_FIELDS: "quote values that contain the delimiter",
    Kind.TOO_LONG: "the value is not shown; a field this long is an export accident",
    Kind.MISSING_VALUE: "only customer_id may be empty (an anonymous buyer)",
    Kind.IMPLAUSIBLE_PRICE: (
        "the price counts in revenue and mean price as it is; if many rows say so, check which"
        " export column is mapped to price_paid_eur and whether it gives cents"
    ),
}


# Problems listed by distinct value above the row-by-row list (which then needs --all).
_BY_VALUE: Final[frozenset[str]] = frozenset({Kind.UNKNOWN_CODE, Kind.NOT_A_DATETIME})
_HINT_EXAMPLES: Final[int] = 50  # distinct messages the date advice looks at


def _rows_text(count: int, first_rows: list[int]) -> str:
    """``400 row(s) (rows 2, 3, 4, 5, 6 and 395 more)``."""
    rows = ", ".join(str(r) for r in first_rows)
    if count > len(first_rows):
        rows += f" and {count - len(first_rows):,} more"
    which = "row" if count == 1 else "rows"
    return f"{count:,} row(s) ({which} {rows})"


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

    def unknown_codes(self) -> pl.DataFrame:
        """Unknown codes by distinct value: column, message, rows (count), first_rows, value.

        A code repeats on every row that uses it; grouped, a repeated code is one decision.
        """
        return self._by_value(Kind.UNKNOWN_CODE)

    def unreadable_dates(self) -> pl.DataFrame:
        """Dates that could not be read, by distinct value (the columns of unknown_codes).

        A performance's start repeats on every ticket for it, and one export writes all its
        dates one way: grouped, a wrong pattern is one line per value, not one per row.
        """
        return self._by_value(Kind.NOT_A_DATETIME)

    def _by_value(self, kind: Kind) -> pl.DataFrame:
        """The problems of ``kind`` grouped by column and message (which quotes the value)."""
        found = self.problems.filter(pl.col("kind") == kind.value)
        codes = (
            found.group_by("column", "message")
            .agg(
                pl.len().alias("rows"),
                pl.col("row").sort().head(ROW_NUMBERS_SHOWN).alias("first_rows"),
                pl.col("row").min().alias("first_row"),
            )
            .sort("column", "rows", "first_row", descending=[False, True, False])
        )
        values = [quoted_value(m) for m in codes["message"]]  # one per distinct code: few
        return codes.with_columns(pl.Series("value", values, dtype=pl.String()))

    def verdict(self) -> str:
        """The outcome in one line (the last line of the report says it with more context)."""
        failures = self.failures
        if self.file_errors:
            more = len(self.file_errors) - 1
            return "FAILED: " + self.file_errors[0] + (f" (and {more} more)" if more else "")
        if failures:
            return "FAILED: " + "; ".join(failures)
        verdict = "PASSED"
        if self.quarantined:
            verdict += f" with {self.quarantined:,} row(s) quarantined"
        return f"{verdict}: {self.rows_kept:,} ticket rows can be used"

    def _unknown_code_lines(self, max_rows: int | None) -> list[str]:
        codes = self.unknown_codes()
        if codes.is_empty():
            return []
        out = [
            "",
            "Unknown codes, by value (add each line under its [values.<field>] in the mapping"
            " file, then check again):",
        ]
        for (column,), group in codes.group_by("column", maintain_order=True):
            shown = group if max_rows is None else group.head(max_rows)
            for g in shown.iter_rows(named=True):
                out.append(f"  {g['message']}: {_rows_text(g['rows'], g['first_rows'])}")
                if g["value"] is None:
                    out.append(
                        f"    add it under [values.{column}] as it is in the export (it is too"
                        " long to show here)"
                    )
                else:
                    out.append(
                        f"    add under [values.{column}]:  {mapping_line(column, g['value'])}"
                    )
            hidden = group.height - shown.height
            if hidden:
                out.append(
                    f"  ... and {hidden:,} more {column} code(s) (list every one with --all)"
                )
        return out

    def _unreadable_date_lines(self, max_rows: int | None) -> list[str]:
        dates = self.unreadable_dates()
        if dates.is_empty():
            return []
        out = ["", "Dates that cannot be read, by value (their rows are quarantined):"]
        for (column,), group in dates.group_by("column", maintain_order=True):
            shown = group if max_rows is None else group.head(max_rows)
            for g in shown.iter_rows(named=True):
                out.append(f"  {column}: {g['message']}: {_rows_text(g['rows'], g['first_rows'])}")
            hidden = group.height - shown.height
            if hidden:
                out.append(
                    f"  ... and {hidden:,} more {column} value(s) (list every one with --all)"
                )
        # Said once: one [formats] datetime reads both date columns. The most frequent values
        # give its example and the pattern it suggests.
        examples = dates.sort("rows", "first_row", descending=[True, False])["message"]
        out.append(f"  hint: {_date_hint(examples.head(_HINT_EXAMPLES).to_list())}")
        patterns = {
            column: pattern
            for (column,), group in dates.group_by("column", maintain_order=True)
            if (pattern := _pattern_of(group["message"].head(_HINT_EXAMPLES).to_list()))
        }
        if len(set(patterns.values())) > 1:
            written = ", ".join(f"{c} {p}" for c, p in patterns.items())
            out.append(
                f"  the date columns are written differently ({written}) but [formats] datetime"
                " is one pattern for both: export them alike"
            )
        return out

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

    def format(
        self, max_rows: int | None = DEFAULT_ROWS_SHOWN, advice: tuple[str, ...] = ()
    ) -> str:
        """The full report as text: file-level errors, every kind of problem with its rows.

        ``max_rows`` limits the rows listed per kind of problem (None lists every one); the
        count of each kind is always complete. ``advice`` is said just above the verdict.
        """
        out = self.summary_lines()
        for note in self.notices:
            out.append(f"  note: {note}")
        for err in self.file_errors:
            out.append(f"  error: {err}")
        out += self._unknown_code_lines(max_rows)
        out += self._unreadable_date_lines(max_rows)
        counts = self.counts()
        if counts.height:
            out.append("")
            out.append(
                "Problems (errors quarantine the row; warnings keep it and say what becomes of"
                " the value):"
            )
            for group in counts.iter_rows(named=True):
                out.append(
                    f"  {group['severity']:<7} {group['column']}: {group['kind']}"
                    f" — {group['rows']:,} row(s)"
                )
                rows = self.problems.filter(
                    (pl.col("severity") == group["severity"])
                    & (pl.col("column") == group["column"])
                    & (pl.col("kind") == group["kind"])
                ).sort("row")
                # A date's advice is said above, with its values; a code's is short enough
                # to say again.
                kind = group["kind"]
                said = None if kind == Kind.NOT_A_DATETIME else hint(group["column"], kind)
                if said:
                    out.append(f"    ({said})")
                if kind in _BY_VALUE and max_rows is not None:
                    # Listed by value above; row by row they would repeat one value many times.
                    out.append(
                        "    (listed by value above; --all lists every row, and --problems FILE"
                        " writes them to a file)"
                    )
                    continue
                shown = rows if max_rows is None else rows.head(max_rows)
                for p in shown.iter_rows(named=True):
                    where = f"row {p['row']}" if p["row"] is not None else "file"
                    out.append(f"    {self.source}:{where}: {p['column']}: {p['message']}")
                hidden = rows.height - shown.height
                if hidden:
                    out.append(f"    ... and {hidden:,} more (list every one with --all)")
        out.append("")
        out += [f"hint: {a}" for a in advice]
        if self.file_errors:
            out.append("FAILED: the export cannot be used as it is (see above)")
        else:
            out.append(self.verdict())
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
        # One example per distinct message: a code on 400 rows is one example, not ten.
        examples = (
            report.problems.filter(
                (pl.col("column") == group["column"]) & (pl.col("kind") == group["kind"])
            )
            .group_by("message")
            .agg(pl.col("row").min(), pl.len().alias("n"))
            .sort("row")
            .head(limit)
        )
        detail = "; ".join(
            f"row {r['row']}: {r['message']}"
            + (f" (and {r['n'] - 1:,} more rows)" if r["n"] > 1 else "")
            for r in examples.iter_rows(named=True)
        )
        lines.append(
            f"{group['severity']}: {group['column']}: {group['kind']} in {group['rows']:,}"
            f" row(s) ({detail})"
        )
    return lines
