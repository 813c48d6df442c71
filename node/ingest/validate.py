"""Row checks: every problem of every row, found with whole-column operations.

Errors quarantine a row (it is left out and counted, never silently dropped); warnings keep the
row and set the one unreadable value aside (null): a postcode that is not a postcode makes the
customer's region unknown without losing the ticket. A value that reads but is implausible (a
ticket above MAX_TICKET_PRICE_EUR) is kept as it is and flagged. Rows whose structure is broken
(more fields than the header, another delimiter, a cut-off last line, a value of absurd length)
get that one structural problem and no follow-on noise.

Values are quoted in messages so the operator can find them, except the identifying ones
(customer id, e-mail, postcode, birth data), which are never repeated in a report or a log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

import polars as pl

from node.ingest import parse
from node.ingest.mapping import CODE_FIELDS, NULLABLE_REQUIRED, READ_FIELDS, Mapping
from node.ingest.problems import ERROR, PROBLEM_SCHEMA, WARNING, Kind, empty_problems
from node.ingest.sources import DELIMITER_CANDIDATES, EXTRA, FIRST, ROW, RawRows
from protocols.vocabulary import REQUIRED_COLUMNS

MAX_FIELD_BYTES: Final[int] = 1_000  # no ticket field needs more; a 10 MB cell is an accident
EARLIEST_DATE: Final[datetime] = datetime(1990, 1, 1)  # older than any ticketing system in use
YEARS_AHEAD: Final[int] = 5  # sales for seasons further ahead than this are typing errors
EARLIEST_BIRTH_YEAR: Final[int] = 1900
ORDER_AFTER_START_GRACE: Final[timedelta] = timedelta(days=1)
# Above this one ticket line gets a warning (kept, counted as it is). Cultural tickets cost a few
# euros to a few hundred: the synthetic sector (../shared/domain/simulation.yaml, mean prices of
# EUR 10 to 55 by discipline) tops out at EUR 165 over the demo's 3.1 million tickets, and opera
# premières and galas reach a few hundred. The dearest honest line is a season subscription sold
# as one ticket, a dozen performances at the best seats: a couple of thousand euros. Far above
# that a price is a mistake: a shifted column (an id, a phone number), amounts in cents (a EUR 30
# ticket as 3000) or a mixed-up thousands separator (1.234.567,8). A ceiling of EUR 1,000 would
# flag every honest subscription line of a concert hall on every check, and warnings that are
# always there get ignored; the price of this one: a cents export of tickets under EUR 25
# (museums, film) passes without a warning.
MAX_TICKET_PRICE_EUR: Final[int] = 2_500
_SHOWN_CHARS: Final[int] = 40
_T: Final[str] = "~"  # suffix of the typed columns next to the raw ones in the work frame
_BROKEN: Final[str] = "__broken"
_PRICE: Final[str] = "price_paid_eur"

IDS: Final[tuple[str, ...]] = ("ticket_id", "order_id", "customer_id", "performance_id", "venue_id")
DATES: Final[tuple[str, ...]] = ("order_datetime", "performance_start")
MUST_HAVE: Final[tuple[str, ...]] = tuple(c for c in REQUIRED_COLUMNS if c not in NULLABLE_REQUIRED)

# The typed canonical columns the checks hand on (transient ones are reduced later).
TYPED: Final[tuple[str, ...]] = (
    ROW,
    *IDS,
    *DATES,
    *CODE_FIELDS,
    "price_paid_eur",
    "country",
    "home_area",
    "birth_year",
    "email",
)


@dataclass(frozen=True, slots=True)
class Checked:
    typed: pl.DataFrame  # TYPED columns, one row per non-blank row read
    problems: pl.DataFrame
    bad: pl.Series  # True where the row is quarantined (aligned with ``typed``)
    blank_rows: int


@dataclass(frozen=True, slots=True)
class _Check:
    mask: pl.Expr
    column: str
    kind: Kind
    severity: str
    message: pl.Expr
    # An aggregate that is False only when no row can fail the check: a clean column costs a
    # null count or a min/max instead of a million-row mask.
    screen: pl.Expr | None = None


def _absent_count(col: str) -> pl.Expr:
    """How many raw values are missing (null or empty text)."""
    c = pl.col(col).cast(pl.String)
    return c.null_count() + (c.str.len_bytes() == 0).sum()


def _unread(col: str) -> pl.Expr:
    """Screen for "a value was there but could not be read": more nulls after than before."""
    return _t(col).null_count() > _absent_count(col)


def _show(col: str) -> pl.Expr:
    """A raw value for a message: quoted, cut at 40 characters."""
    s = pl.col(col).cast(pl.String)
    cut = pl.when(s.str.len_chars() > _SHOWN_CHARS).then(s.str.slice(0, _SHOWN_CHARS) + "…")
    return pl.lit("'") + cut.otherwise(s) + pl.lit("'")


def _t(col: str) -> pl.Expr:
    return pl.col(col + _T)


def _prepare(raw: pl.DataFrame, mapping: Mapping) -> tuple[pl.DataFrame, int]:
    """Blank lines out (counted), constants in, absent optional fields as null columns."""
    data_cols = [c for c in raw.columns if c != ROW]
    blank = 0
    if data_cols:
        is_blank = raw.select(pl.all_horizontal(pl.col(data_cols).is_null())).to_series()
        blank = int(is_blank.sum())
        if blank:
            raw = raw.filter(~is_blank)
    extra = [
        pl.lit(value, dtype=pl.String).alias(fld)
        for fld, value in mapping.constants.items()
        if fld in READ_FIELDS
    ]
    extra += [
        pl.lit(None, dtype=pl.String).alias(f)
        for f in READ_FIELDS
        if f not in raw.columns and f not in mapping.constants
    ]
    return (raw.with_columns(extra) if extra else raw), blank


def _typed(raw: pl.DataFrame, mapping: Mapping, default_country: str) -> pl.DataFrame:
    schema = raw.schema
    distinct = parse.distinct_values(raw, [*CODE_FIELDS, "country", "postcode"])
    codes = {
        fld: parse.code_lookup(distinct[fld], vocab, mapping.values.get(fld, {}))
        for fld, vocab in CODE_FIELDS.items()
    }
    countries = parse.country_lookup(distinct["country"], mapping.values.get("country", {}))
    formats = {f: mapping.datetime_format or parse.pick_datetime_format(raw[f]) for f in DATES}
    typed = raw.select(
        pl.col(ROW),
        *(parse.text(f).alias(f) for f in IDS),
        *(parse.datetime_expr(f, schema[f], formats[f]).alias(f) for f in DATES),
        *(parse.looked_up(f, codes[f]).alias(f) for f in CODE_FIELDS),
        parse.number_expr("price_paid_eur", schema["price_paid_eur"]).alias("price_paid_eur"),
        parse.country("country", countries, default_country).alias("country"),
        parse.postcode_fast("postcode").alias("home_area"),
        parse.birth_year_expr("birth_year", schema["birth_year"]).alias("birth_year"),
        parse.birth_date_year_expr(
            "birth_date", schema["birth_date"], mapping.birth_date_format
        ).alias("_birth_date_year"),
        parse.email("email").alias("email"),
    )
    for f in DATES:
        typed = parse.patch(typed, raw, f, f, parse.datetime_fallback(mapping.datetime_format))
    typed = parse.patch(typed, raw, "price_paid_eur", "price_paid_eur", parse.number_fallback)
    typed = parse.patch(typed, raw, "birth_year", "birth_year", parse.integer_fallback)
    birth_dates = parse.birth_date_fallback(mapping.birth_date_format)
    typed = parse.patch(typed, raw, "_birth_date_year", "birth_date", birth_dates)
    area = parse.postcode_fix(
        typed["home_area"], raw["postcode"], distinct["postcode"], typed["country"]
    )
    birth = typed["birth_year"]
    if typed["_birth_date_year"].null_count() < typed.height:
        birth = birth.fill_null(typed["_birth_date_year"])
    return typed.with_columns(area.alias("home_area"), birth.alias("birth_year")).select(TYPED)


def _structural(
    rows: RawRows, work: pl.DataFrame, present: list[str], first_fields: frozenset[str]
) -> tuple[pl.DataFrame, pl.Series]:
    """Problems with the row's shape, and the mask of rows whose structure is broken.

    Evaluated in stages (each stage excludes rows an earlier one already explained), with the
    masks materialised between stages so that no expression is nested in the next.
    """
    parts: list[pl.DataFrame] = []
    broken = _falses(work.height)

    def add(mask: pl.Series, check: _Check) -> None:
        nonlocal broken
        mask = mask.fill_null(False) & ~broken
        if mask.any():
            parts.append(_problem_rows(work, mask, check))
            broken = broken | mask

    if EXTRA in work.columns:
        add(
            work[EXTRA].is_not_null(),
            _Check(
                pl.lit(True),
                "(row)",
                Kind.TOO_MANY_FIELDS,
                ERROR,
                pl.lit(
                    "the row has more fields than the header: a delimiter inside an unquoted"
                    " value, or a shifted row?"
                ),
            ),
        )
    if FIRST in work.columns:
        others = [f for f in present if f not in first_fields]
        foreign = [d for d in DELIMITER_CANDIDATES if d != rows.delimiter]
        if others and foreign:
            # Cheap test first (null bitmaps), the text search only on the rows it leaves.
            alone = work.select(
                pl.col(FIRST).is_not_null() & pl.all_horizontal(pl.col(others).is_null())
            ).to_series()
            wrong = alone
            if alone.any():
                idx = alone.arg_true()
                hit = (
                    work[FIRST]
                    .gather(idx)
                    .to_frame()
                    .select(
                        pl.any_horizontal(
                            pl.col(FIRST).str.contains(d, literal=True) for d in foreign
                        )
                    )
                )
                wrong = alone.scatter(idx, hit.to_series())
            add(
                wrong,
                _Check(
                    pl.lit(True),
                    "(row)",
                    Kind.WRONG_DELIMITER,
                    ERROR,
                    pl.lit(
                        "the whole row landed in the first column: it uses another delimiter"
                        " than the header"
                    ),
                ),
            )
    string_fields = [f for f in present if work.schema[f] == pl.String]
    longest = work.select(pl.col(f).str.len_bytes().max() for f in string_fields).row(0)
    long_fields = [
        f for f, n in zip(string_fields, longest, strict=True) if (n or 0) > MAX_FIELD_BYTES
    ]
    if long_fields:
        lengths = work.select(
            (pl.col(f).str.len_bytes() > MAX_FIELD_BYTES).fill_null(False).alias(f)
            for f in long_fields
        )
        before = broken
        any_long = _falses(work.height)
        for f in long_fields:
            mask = lengths[f] & ~before
            if mask.any():
                parts.append(
                    _problem_rows(
                        work,
                        mask,
                        _Check(
                            pl.lit(True),
                            f,
                            Kind.TOO_LONG,
                            ERROR,
                            pl.format(
                                "the value is {} bytes long (no field may exceed {} bytes)",
                                pl.col(f).str.len_bytes(),
                                pl.lit(MAX_FIELD_BYTES),
                            ),
                        ),
                    )
                )
                any_long = any_long | mask
        broken = broken | any_long
    if rows.ends_mid_row and work.height:
        cut = work.select(
            (pl.col(ROW) == pl.col(ROW).max())
            & pl.any_horizontal(parse.missing(f) for f in MUST_HAVE)
        ).to_series()
        add(
            cut,
            _Check(
                pl.lit(True),
                "(row)",
                Kind.TRUNCATED,
                ERROR,
                pl.lit("the file ends in the middle of this row: was it cut off?"),
            ),
        )
    problems = pl.concat(parts) if parts else empty_problems()
    return problems, broken


def _errors(mapping: Mapping, today: date) -> list[_Check]:
    """Problems that make a row unusable (evaluated on rows whose structure is sound)."""
    checks = [
        _Check(
            parse.missing(f),
            f,
            Kind.MISSING_VALUE,
            ERROR,
            pl.lit("the value is empty"),
            _absent_count(f) > 0,
        )
        for f in MUST_HAVE
    ]
    latest = datetime(today.year + YEARS_AHEAD, 12, 31, 23, 59, 59)
    if mapping.datetime_format:
        expected = f"not a date-time in the format {mapping.datetime_format!r}"
    else:
        expected = "not an ISO date-time (YYYY-MM-DD HH:MM[:SS])"
    for f in DATES:
        checks.append(
            _Check(
                ~parse.missing(f) & _t(f).is_null(),
                f,
                Kind.NOT_A_DATETIME,
                ERROR,
                _show(f) + pl.lit(f" is {expected}"),
                _unread(f),
            )
        )
        checks.append(
            _Check(
                ~_t(f).is_between(EARLIEST_DATE, latest).fill_null(True),
                f,
                Kind.DATE_OUT_OF_RANGE,
                ERROR,
                _show(f)
                + pl.lit(
                    f" is outside {EARLIEST_DATE:%Y-%m-%d} .. {latest:%Y-%m-%d}: a typing error?"
                ),
                (_t(f).min() < EARLIEST_DATE) | (_t(f).max() > latest),
            )
        )
    for f in CODE_FIELDS:
        checks.append(
            _Check(
                ~parse.missing(f) & _t(f).is_null(),
                f,
                Kind.UNKNOWN_CODE,
                ERROR,
                _show(f) + pl.lit(f" is not a known {f}"),
                _unread(f),
            )
        )
    price = "price_paid_eur"
    checks.append(
        _Check(
            ~parse.missing(price) & _t(price).is_null(),
            price,
            Kind.NOT_A_NUMBER,
            ERROR,
            _show(price) + pl.lit(" is not an amount in euros"),
            _unread(price),
        )
    )
    checks.append(
        _Check(
            (_t(price) < 0).fill_null(False),
            price,
            Kind.NEGATIVE_PRICE,
            ERROR,
            _show(price) + pl.lit(" is negative: a refund is a row with order_status 'refunded'"),
            _t(price).min() < 0,
        )
    )
    return checks


def _warnings(present: list[str], today: date) -> list[_Check]:
    """Problems that cost one value, not the row."""
    birth_col = "birth_date" if "birth_date" in present else "birth_year"
    birth_given = ~parse.missing("birth_year") | ~parse.missing("birth_date")
    return [
        _Check(
            ~parse.missing("country") & _t("country").is_null(),
            "country",
            Kind.BAD_COUNTRY,
            WARNING,
            _show("country") + pl.lit(" is not a country; the customer's region is unknown"),
            _t("country").null_count() > 0,  # a missing country is the default, never null
        ),
        _Check(
            ~parse.missing("postcode")
            & _t("country").is_in(["NL", "BE"]).fill_null(False)
            & _t("home_area").is_null(),
            "postcode",
            Kind.BAD_POSTCODE,
            WARNING,
            pl.lit("not a valid postcode for its country; the customer's region is unknown"),
        ),
        _Check(
            ~parse.missing("email") & _t("email").is_null(),
            "email",
            Kind.BAD_EMAIL,
            WARNING,
            pl.lit("not an e-mail address; this customer gets no match key"),
            _unread("email"),
        ),
        _Check(
            birth_given
            & ~_t("birth_year").is_between(EARLIEST_BIRTH_YEAR, today.year).fill_null(False),
            birth_col,
            Kind.BAD_BIRTH,
            WARNING,
            pl.lit(f"not a birth year between {EARLIEST_BIRTH_YEAR} and {today.year}; age unknown"),
        ),
        _Check(
            (_t(_PRICE) > MAX_TICKET_PRICE_EUR).fill_null(False),
            _PRICE,
            Kind.IMPLAUSIBLE_PRICE,
            WARNING,
            pl.format(
                "{} (read as {} euros) is above {} euros for one ticket: a shifted column, an"
                " amount in cents, or a misread thousands separator? The price is kept as it is",
                _show(_PRICE),
                _t(_PRICE),
                pl.lit(f"{MAX_TICKET_PRICE_EUR:,}"),
            ),
            _t(_PRICE).max() > MAX_TICKET_PRICE_EUR,
        ),
        _Check(
            (_t("order_datetime") > _t("performance_start") + ORDER_AFTER_START_GRACE).fill_null(
                False
            ),
            "order_datetime",
            Kind.ORDER_AFTER_START,
            WARNING,
            _show("order_datetime")
            + pl.lit(" is more than a day after the performance; its lead time counts as 0"),
            (_t("order_datetime") - _t("performance_start")).max() > ORDER_AFTER_START_GRACE,
        ),
    ]


def _problem_rows(work: pl.DataFrame, mask: pl.Series, check: _Check) -> pl.DataFrame:
    return (
        work.filter(mask)
        .select(
            pl.col(ROW).alias("row"),
            pl.lit(check.column).alias("column"),
            pl.lit(check.kind.value).alias("kind"),
            pl.lit(check.severity).alias("severity"),
            check.message.alias("message"),
        )
        .cast(PROBLEM_SCHEMA)  # type: ignore[arg-type]
    )


def _falses(n: int) -> pl.Series:
    return pl.repeat(False, n, eager=True)


def _duplicates(typed: pl.DataFrame, usable: pl.Series) -> tuple[pl.Series, pl.DataFrame]:
    """Second and later rows of a ticket_id (the first one is kept), with messages.

    Candidates are found on a 64-bit hash of the id (one cheap pass over integers), then
    confirmed on the text itself, so a hash collision can never quarantine a good row.
    """
    valid = usable & typed["ticket_id"].is_not_null()
    hashed = typed["ticket_id"].hash(0x71C4E7)
    if valid.all() and hashed.n_unique() == typed.height:
        return _falses(typed.height), empty_problems()  # the usual case: a count settles it
    candidate = hashed.set(~valid, None).is_duplicated() & valid
    if not candidate.any():
        return _falses(typed.height), empty_problems()
    candidates = typed.select(ROW, "ticket_id").filter(candidate)
    later = candidates.filter(~pl.col("ticket_id").is_first_distinct())
    if later.height == 0:
        return _falses(typed.height), empty_problems()
    firsts = candidates.group_by("ticket_id").agg(pl.col(ROW).min().alias("first"))
    problems = (
        later.join(firsts, on="ticket_id", how="left")
        .select(
            pl.col(ROW).alias("row"),
            pl.lit("ticket_id").alias("column"),
            pl.lit(Kind.DUPLICATE_ID.value).alias("kind"),
            pl.lit(ERROR).alias("severity"),
            pl.format("'{}' is already on row {}", "ticket_id", "first").alias("message"),
        )
        .cast(PROBLEM_SCHEMA)  # type: ignore[arg-type]
    )
    return typed[ROW].is_in(later[ROW].implode()), problems


def check_rows(
    rows: RawRows,
    mapping: Mapping,
    first_column_fields: frozenset[str],
    default_country: str,
    today: date,
) -> Checked:
    raw, blank_rows = _prepare(rows.frame, mapping)
    present = [f for f in READ_FIELDS if f in rows.frame.columns or f in mapping.constants]
    typed = _typed(raw, mapping, default_country)
    work = raw.hstack(
        [typed[c].alias(c + _T) for c in typed.columns if c != ROW],
    )
    structural, broken = _structural(rows, work, present, first_column_fields)
    parts = [structural] if structural.height else []
    work = work.with_columns(broken.alias(_BROKEN))
    errors = _errors(mapping, today)
    warnings = _warnings(present, today)
    # First every check's screen (aggregates, one parallel select), then the masks of the checks
    # whose screen found something (one parallel select).
    checks = [*errors, *warnings]
    screens = work.select(
        (c.screen if c.screen is not None else pl.lit(True)).fill_null(True).alias(str(i))
        for i, c in enumerate(checks)
    ).row(0)
    wanted = [i for i, hit in enumerate(screens) if hit]
    computed = work.select(
        (
            checks[i].mask.fill_null(False) & ~pl.col(_BROKEN)
            if i < len(errors)
            else checks[i].mask.fill_null(False)
        ).alias(str(i))
        for i in wanted
    )
    none = _falses(work.height)
    masks = {
        **{f"e{i}": none for i in range(len(errors))},
        **{f"w{i}": none for i in range(len(warnings))},
    }
    for i in wanted:
        masks[f"e{i}" if i < len(errors) else f"w{i - len(errors)}"] = computed[str(i)]
    bad = broken
    for i, check in enumerate(errors):
        mask = masks[f"e{i}"]
        if mask.any():
            parts.append(_problem_rows(work, mask, check))
            bad = bad | mask
    # Every sound row takes part: an id used twice is a problem even if one row has others.
    dup, dup_problems = _duplicates(typed, ~broken)
    if dup_problems.height:
        parts.append(dup_problems)
        bad = bad | dup
    for i, check in enumerate(warnings):
        mask = masks[f"w{i}"]
        if mask.any() and (mask & ~bad).any():
            parts.append(_problem_rows(work, mask & ~bad, check))
        if check.kind is Kind.BAD_BIRTH and mask.any():
            typed = typed.with_columns(typed["birth_year"].set(mask, None))
    problems = pl.concat(parts) if parts else empty_problems()
    return Checked(typed=typed, problems=problems, bad=bad, blank_rows=blank_rows)
