"""From text (or whatever type a Parquet file or database gives) to typed canonical columns.

Parsers are polars expressions, so that one ``select`` reads every column in parallel. A value
that cannot be read becomes null; the checks in ``validate.py`` compare with the raw column to
say why. Two tricks keep this fast on millions of rows:

* Codes (discipline, price type, status, channel, country) have a few hundred distinct values
  at most, so they are translated on the distinct values and looked up per row.
* Dates and amounts are parsed with the one format nearly every row uses; the slower fallbacks
  (other ISO variants, a zone suffix, a decimal comma, a euro sign) run afterwards on the few
  rows the fast path did not read.

polars' ``%Y`` reads any number of digits ("07-02-24" is the year 7 by ``%Y-%m-%d``), so a
year below 1000 counts as not read: such a value is a date in another format (``[formats]
datetime``), not a date in the year 7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Final

import polars as pl

from node.ingest.mapping import CATCH_ALL, COUNTRIES, norm_code

DATETIME: Final[pl.Datetime] = pl.Datetime("us")
# ISO 8601 without a zone, with "T" or a space, to the minute or second (or a date alone).
ISO_DATETIME_FORMATS: Final[tuple[str, ...]] = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d",
)
ISO_DATE_FORMAT: Final[str] = "%Y-%m-%d"
# The first moment a four-digit year can name; anything before it was read from fewer digits.
FOUR_DIGIT_YEARS: Final[datetime] = datetime(1000, 1, 1)
LOCAL_ZONE: Final[str] = "Europe/Amsterdam"  # Brussels keeps the same time: one zone for all
MAX_DISTINCT_CODES: Final[int] = 100_000  # beyond this a "code" column is not a code column
_ZONE_SUFFIX: Final[str] = r"\s*(Z|[+-]\d{2}:?\d{2})$"
EMAIL_PATTERN: Final[str] = r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"
EMAIL_ANYCASE: Final[str] = r"^\s*[^@\s]+@[^@\s]+\.[^@\s.]+\s*$"  # before normalising
# Optional country prefix, the 4-digit area, optional letters (Dutch postcodes only).
POSTCODE_PATTERN: Final[str] = r"(?i)^\s*(NL-?|BE?-?)?\s*([1-9][0-9]{3})\s*([A-Z]{2})?\s*$"


def missing(col: str) -> pl.Expr:
    """No value: null or an empty text (a quoted empty field)."""
    c = pl.col(col).cast(pl.String)
    return c.is_null() | (c.str.len_bytes() == 0)


def text(col: str) -> pl.Expr:
    """An identifier as text; empty means missing. Kept as written (no trimming)."""
    c = pl.col(col).cast(pl.String)
    return pl.when(c.str.len_bytes() == 0).then(None).otherwise(c)


# --------------------------------------------------------------------------------------------
# Codes, via their distinct values


def distinct_values(frame: pl.DataFrame, columns: list[str]) -> dict[str, pl.Series]:
    """The distinct non-null texts of several columns, found in one parallel select."""
    found = frame.select(
        pl.col(c).cast(pl.String).drop_nulls().unique().implode().alias(c) for c in columns
    )
    return {c: found[c][0] for c in columns}


def _distinct_text(u: pl.Series) -> list[str]:
    return u.head(MAX_DISTINCT_CODES).to_list()


@dataclass(frozen=True, slots=True)
class Lookup:
    """Raw value -> canonical value for every distinct raw value that has one."""

    table: dict[str, str]
    identity: bool  # every distinct value is already canonical: nothing to translate


def code_lookup(u: pl.Series, vocabulary: tuple[str, ...], table: dict[str, str]) -> Lookup:
    """From a column's distinct values (``distinct_values``)."""
    fallback = table.get(CATCH_ALL)
    out: dict[str, str] = {}
    distinct = _distinct_text(u)
    for value in distinct:
        key = norm_code(value)
        if not key:
            continue
        target = table.get(key) or (key if key in vocabulary else None) or fallback
        if target is not None:
            out[value] = target
    identity = len(out) == len(distinct) and all(k == v for k, v in out.items())
    return Lookup(out, identity)


def country_lookup(u: pl.Series, table: dict[str, str]) -> Lookup:
    """Raw value -> ISO country code ("Nederland", "nl", "BEL" ...), from distinct values."""
    named = COUNTRIES | {k: v for k, v in table.items() if k != CATCH_ALL}
    out: dict[str, str] = {}
    distinct = _distinct_text(u)
    for value in distinct:
        key = norm_code(value)
        if key in named:
            out[value] = named[key]
        elif len(key) == 2 and key.isascii() and key.isalpha():
            out[value] = key.upper()
    identity = len(out) == len(distinct) and all(k == v for k, v in out.items())
    return Lookup(out, identity)


def looked_up(col: str, lookup: Lookup) -> pl.Expr:
    """Per-row lookup of a per-value translation; a no-op when every value maps to itself."""
    c = pl.col(col).cast(pl.String)
    if lookup.identity:
        return c
    if not lookup.table:
        return pl.lit(None, dtype=pl.String)
    return c.replace_strict(lookup.table, default=None, return_dtype=pl.String)


def country(col: str, lookup: Lookup, default: str) -> pl.Expr:
    """ISO code; a missing country is the node's own; an unreadable one is null."""
    if lookup.identity:
        return pl.col(col).cast(pl.String).fill_null(default)
    return pl.when(missing(col)).then(pl.lit(default)).otherwise(looked_up(col, lookup))


# --------------------------------------------------------------------------------------------
# Dates and amounts: fast path as expressions, fallbacks on the failed rows


def four_digit_years(s: pl.Series) -> pl.Series:
    """Parsed date-times without those whose year was read from fewer than four digits.

    A whole-column minimum first: in the usual column no year is that small and the series
    comes back as it is (a mask over every row would cost as much as a second parse).
    """
    low = s.min()
    if not isinstance(low, datetime) or low >= FOUR_DIGIT_YEARS:
        return s
    return s.set(s < FOUR_DIGIT_YEARS, None)


def _local(e: pl.Expr) -> pl.Expr:
    """A zone-aware date-time as the wall-clock time in LOCAL_ZONE, without a zone."""
    return e.dt.convert_time_zone(LOCAL_ZONE).dt.replace_time_zone(None)


@cache
def zone_aware(fmt: str) -> bool:
    """Whether polars reads ``fmt`` as a zone-aware date-time (in UTC).

    It does for an offset (``%z``, ``%:z``, ``%#z``) and for ``%+``. It reads a zone name
    (``%Z``) and ignores it: the wall-clock time as written, as ``datetime_fallback`` does with a
    zone suffix. Asked of polars itself (an empty parse) rather than by spotting directives.
    """
    probe = pl.Series([], dtype=pl.String).str.strptime(DATETIME, fmt, strict=False).dtype
    return isinstance(probe, pl.Datetime) and probe.time_zone is not None


def read_datetimes(s: pl.Series, fmt: str) -> pl.Series:
    """Texts read with one strftime pattern; null where it does not fit (see four_digit_years).

    A pattern with an offset gives local wall-clock times, like ``datetime_expr``.
    """
    parsed = s.cast(pl.String).str.strptime(DATETIME, fmt, strict=False)
    if zone_aware(fmt):
        parsed = parsed.dt.convert_time_zone(LOCAL_ZONE).dt.replace_time_zone(None)
    return four_digit_years(parsed)


def pick_datetime_format(s: pl.Series) -> str:
    """The ISO variant most of the first rows use (the fast path for the whole column)."""
    sample = s.cast(pl.String).drop_nulls().head(200)
    return max(
        ISO_DATETIME_FORMATS,
        key=lambda f: int(read_datetimes(sample, f).is_not_null().sum()),
    )


def datetime_expr(col: str, dtype: pl.DataType, fmt: str) -> pl.Expr:
    c = pl.col(col)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone:
            c = _local(c)
        return c.cast(DATETIME)
    if isinstance(dtype, pl.Date):
        return c.cast(DATETIME)
    # map_batches on the parsed column (one batch in an eager select): a min, and a mask only
    # when some year is too small. pl.when(...) here measured ~1.7x the parse itself.
    parsed = c.cast(pl.String).str.strptime(DATETIME, fmt, strict=False)
    if zone_aware(fmt):  # [formats] datetime with %z: polars gives UTC, the node local times
        parsed = _local(parsed)
    return parsed.map_batches(four_digit_years, return_dtype=DATETIME)


def datetime_fallback(fmt: str | None) -> Callable[[pl.Series], pl.Series]:
    """Re-read values the fast path missed: trimmed, every ISO variant, and a zone suffix
    (``Z``, ``+01:00``, ``+0100``) read as the offset it is and converted to local time.

    With a pattern: trimmed, and for a pattern with an offset a final ``Z`` read as ``+00:00``
    (polars' ``%z`` reads ``+01:00`` or ``+0100`` but not the ``Z`` many exports write for UTC).
    """
    formats = (fmt,) if fmt else ISO_DATETIME_FORMATS

    def fallback(sub: pl.Series) -> pl.Series:
        s = sub.cast(pl.String).str.strip_chars()
        if fmt is None:
            # A written offset says which clock the time is on: read it and convert to local
            # time, as a pattern with %z does (19:00Z is 20:00 in Amsterdam in winter).
            zoned = s.str.contains(_ZONE_SUFFIX).fill_null(False)
            plain = s.str.replace(_ZONE_SUFFIX, "")
            tries = [read_datetimes(plain, f) for f in formats]
            if zoned.any():
                offset = s.str.replace(r"\s*[Zz]$", "+00:00").str.replace(
                    r"\s*([+-]\d{2}):?(\d{2})$", "$1$2"
                )
                local = pl.select(
                    pl.coalesce([read_datetimes(offset, f + "%z") for f in formats])
                ).to_series()
                tries = [local.set(~zoned, None), *tries]
            return pl.select(pl.coalesce(tries)).to_series()
        if zone_aware(fmt):
            s = s.str.replace(r"[Zz]$", "+00:00")
        tries = [read_datetimes(s, f) for f in formats]
        return pl.select(pl.coalesce(tries)).to_series()

    return fallback


def birth_date_fallback(fmt: str | None) -> Callable[[pl.Series], pl.Series]:
    """The year of birth dates the fast path missed (``birth_date_year_expr`` reads only
    ``YYYY-MM-DD`` without a pattern): any ISO variant, a zone suffix, surrounding spaces."""
    read = datetime_fallback(fmt)

    def fallback(sub: pl.Series) -> pl.Series:
        return read(sub).dt.year().cast(pl.Int32)

    return fallback


def number_expr(col: str, dtype: pl.DataType) -> pl.Expr:
    if dtype.is_numeric():
        return pl.col(col).cast(pl.Float64)
    return pl.col(col).cast(pl.String).cast(pl.Float64, strict=False)


def number_fallback(sub: pl.Series) -> pl.Series:
    """``12,50``, ``€ 1.234,50``, ``1,234.50``, `` 12.5 ``: the last separator is decimal."""
    s = sub.cast(pl.String).str.replace_all(r"[€\s]", "").str.replace(r"^(?i:EUR)", "")
    comma_decimal = s.str.contains(r",\d*$") & ~s.str.contains(r",.*\.")
    cleaned = pl.select(
        pl.when(comma_decimal)
        .then(s.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True))
        .otherwise(s.str.replace_all(",", "", literal=True))
    ).to_series()
    return cleaned.cast(pl.Float64, strict=False)


def integer_fallback(sub: pl.Series) -> pl.Series:
    num = number_fallback(sub)
    whole = num.round(0)
    return whole.set(whole != num, None).cast(pl.Int32, strict=False)


def birth_year_expr(col: str, dtype: pl.DataType) -> pl.Expr:
    if dtype.is_integer():
        return pl.col(col).cast(pl.Int32, strict=False)
    return pl.col(col).cast(pl.String).cast(pl.Int32, strict=False)


def birth_date_year_expr(col: str, dtype: pl.DataType, fmt: str | None) -> pl.Expr:
    """The year of a birth date (the date itself is never kept)."""
    c = pl.col(col)
    if isinstance(dtype, pl.Date | pl.Datetime):
        return c.dt.year().cast(pl.Int32)
    s = c.cast(pl.String).str.strip_chars()
    return s.str.strptime(pl.Date, fmt or ISO_DATE_FORMAT, strict=False).dt.year().cast(pl.Int32)


def patch(
    typed: pl.DataFrame,
    raw: pl.DataFrame,
    column: str,
    raw_column: str,
    fallback: Callable[[pl.Series], pl.Series],
) -> pl.DataFrame:
    """Re-read the rows of ``typed[column]`` that are null although the raw value is not."""
    if typed[column].null_count() == raw[raw_column].null_count():
        return typed  # the fast path read every value there was (the usual case)
    failed = typed[column].is_null() & ~raw.select(missing(raw_column)).to_series()
    if not failed.any():
        return typed
    idx = failed.arg_true()
    values = fallback(raw[raw_column].gather(idx)).cast(typed[column].dtype)
    return typed.with_columns(typed[column].scatter(idx, values))


# --------------------------------------------------------------------------------------------
# Transient fields, via their distinct values (a postcode or an address repeats per ticket)


def _area_of(u: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(area as a Dutch postcode, area as a Belgian postcode) of distinct texts; null if not."""
    parts = u.str.extract_groups(POSTCODE_PATTERN).struct.unnest()
    prefix = parts["1"].str.to_uppercase().str.strip_chars("-")
    area = parts["2"].cast(pl.Int32)
    nl = area.set(~(prefix.is_null() | (prefix == "NL")).fill_null(False), None)
    be_ok = (prefix.is_null() | prefix.is_in(["B", "BE"])) & parts["3"].is_null()
    be = area.set(~be_ok.fill_null(False), None)
    return nl, be


def postcode_fast(col: str) -> pl.Expr:
    """The first four characters as a number: the area of ``1234AB``, ``1234 AB``, ``1234``.

    The letters of a Dutch postcode narrow it to a street: they are checked (``postcode_fix``)
    and then dropped.
    """
    return pl.col(col).cast(pl.String).str.slice(0, 4).cast(pl.Int32, strict=False)


def postcode_fix(
    fast: pl.Series, raw: pl.Series, distinct: pl.Series, country: pl.Series
) -> pl.Series:
    """The area of each row's postcode for its country (NL or BE), else null.

    ``fast`` is ``postcode_fast`` of every row. The full pattern (a country prefix, spaces,
    letters on a Belgian code, garbage) is evaluated on the distinct values only, and only the
    rows whose value the fast path reads differently are corrected.
    """
    nl_or_be = (country == "NL") | (country == "BE")
    area = fast.set(~nl_or_be.fill_null(False), None) if not nl_or_be.all() else fast
    fast_u = distinct.str.slice(0, 4).cast(pl.Int32, strict=False)
    nl_u, be_u = _area_of(distinct)
    for code, true_u in (("NL", nl_u), ("BE", be_u)):
        differs = ~(true_u.eq_missing(fast_u))
        if not differs.any():
            continue
        exceptions, corrected = distinct.filter(differs), true_u.filter(differs)
        rows = (country == code).fill_null(False)
        if not rows.any():
            continue
        idx = rows.arg_true()
        sub = raw.cast(pl.String).gather(idx)
        hit = sub.is_in(exceptions.implode())
        if hit.any():
            fixed = sub.filter(hit).replace_strict(exceptions, corrected, return_dtype=pl.Int32)
            area = area.scatter(idx.filter(hit), fixed)
    return area


def email(col: str) -> pl.Expr:
    """The address as written when it is one (surrounding spaces and case do not matter)."""
    c = pl.col(col).cast(pl.String)
    return pl.when(c.str.contains(EMAIL_ANYCASE)).then(c).otherwise(None)


def normalise_email(s: pl.Series) -> pl.Series:
    """Trimmed and lower-cased: every node must normalise exactly alike."""
    return s.cast(pl.String).str.strip_chars().str.to_lowercase()
