"""``publiek-node init``: a commented starter mapping, guessed from an export's header and codes.

The guesses are suggestions for a person to check, never silent decisions: every guessed line
says so, codes it cannot place are left commented out (so ``check`` reports them until someone
decides), and columns that look forbidden are named with the reason, not quietly ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import polars as pl

from node.ingest.forbidden import forbidden_reason
from node.ingest.mapping import CODE_FIELDS, KNOWN_FIELDS, READ_FIELDS, norm_code
from node.ingest.parse import datetime_fallback, read_datetimes
from node.ingest.sources import CsvFile, Source, SourceError, delimiter_name
from protocols.vocabulary import REQUIRED_COLUMNS

# Column names (lower case, letters and digits only) that usually hold a canonical field.
SYNONYMS: Final[dict[str, tuple[str, ...]]] = {
    "ticket_id": ("ticketid", "ticketnummer", "ticketnr", "ticket", "toegangsbewijs", "barcode"),
    "order_id": (
        "orderid", "ordernummer", "ordernr", "order", "bestelnummer", "bestelling",
        "bestellingnummer", "transactienummer", "transactionid", "boekingsnummer",
    ),
    "customer_id": (
        "customerid", "klantnummer", "klantnr", "klantid", "klant", "relatienummer",
        "relatienr", "relatieid", "contactid", "accountid",
    ),
    "order_datetime": (
        "orderdatetime", "besteldatum", "orderdatum", "bestelmoment", "verkoopdatum",
        "aankoopdatum", "orderdate", "saledate", "transactiedatum", "datumbestelling",
    ),
    "order_status": ("orderstatus", "status", "bestelstatus"),
    "channel": ("channel", "kanaal", "verkoopkanaal", "saleschannel", "verkooppunt"),
    "performance_id": (
        "performanceid", "voorstellingnummer", "voorstellingsnummer", "voorstellingid",
        "eventid", "evenementid", "uitvoeringid", "activiteitid", "voorstelling",
    ),
    "performance_start": (
        "performancestart", "aanvang", "aanvangstijd", "datumvoorstelling",
        "voorstellingsdatum", "eventdate", "startdatum", "begintijd", "datumtijd",
    ),
    "venue_id": ("venueid", "zaal", "zaalid", "locatie", "locatieid", "venue", "podium"),
    "discipline": ("discipline", "genre", "categorie", "category", "genrecode"),
    "price_type": (
        "pricetype", "prijstype", "tarief", "tariefsoort", "kortingstype", "prijssoort",
    ),
    "price_paid_eur": (
        "pricepaideur", "prijs", "bedrag", "betaald", "prijsbetaald", "price", "amount",
        "ticketprijs",
    ),
    "postcode": ("postcode", "postalcode", "zip", "zipcode", "pc"),
    "country": ("country", "land", "landcode"),
    "birth_year": ("birthyear", "geboortejaar"),
    "birth_date": ("birthdate", "geboortedatum", "dateofbirth", "dob"),
    "email": ("email", "emailadres", "mail", "emailaddress"),
}  # fmt: skip

# Words in a house code that suggest a canonical code (first match wins, in this order).
CODE_HINTS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "discipline": (
        (r"musical|operette", "musical_operette"),
        (r"opera|muziektheater", "opera_muziektheater"),
        (r"cabaret|kleinkunst|comedy", "cabaret_kleinkunst"),
        (r"toneel|theater|drama|theatre", "toneel"),
        (r"dans|dance|ballet", "dans"),
        (r"klassiek|classical|orkest|kamermuziek|symfon", "klassieke_muziek"),
        (r"pop|rock|jazz|hiphop|wereld|urban|blues|concert", "populaire_muziek"),
        (r"jeugd|familie|kinder|youth|family", "jeugd_familie"),
        (r"amateur", "amateur"),
        (r"film|cinema", "film"),
        (r"museum|tentoonstelling|expositie|exhibition", "museum_tentoonstelling"),
        (r"erfgoed|heritage", "erfgoed"),
        (r"literatuur|lezing|debat|lecture|poëzie|poezie", "literatuur_lezing"),
        (r"festival", "festival_multidisciplinair"),
    ),
    "price_type": (
        (r"vrijkaart|gratis|complimentary|genodigde|free|vrij", "complimentary"),
        (r"abonnement|serie|subscription|abo", "subscription"),
        (r"cjp|jong|student|jeugd|kind|youth", "youth"),
        (r"65\+|senior|ouder", "senior"),
        (r"sociaal|stadspas|uitpas|ooievaarspas|minima|social", "social"),
        (r"groep|group", "group"),
        (r"vriend|member|lid|friend", "member_friend"),
        (r"museumkaart|cineville|pass|pas", "pass_flat"),
        (r"korting|actie|discount|last ?minute", "other_discount"),
        (r"vol|normaal|regulier|full|standaard|standard", "full"),
    ),
    "order_status": (
        (r"betaald|paid|voldaan", "paid"),
        (r"retour|terugbetaald|refund", "refunded"),
        (r"geannuleerd|annul|cancel", "cancelled"),
        (r"omgeruild|omruil|exchange", "exchanged"),
        (r"gereserveerd|reserv|onbetaald|unpaid", "reserved_unpaid"),
    ),
    "channel": (
        (r"online|web|internet|site|shop", "online_own"),
        (r"kassa|balie|box", "box_office"),
        (r"telefoon|phone|tel", "phone"),
        (r"school", "school"),
        (r"groep|group", "group_sales"),
        (r"reseller|wederverkoop|ticketmaster|eventim|voorverkoop|partner", "reseller"),
        (r"pas|cjp|museumkaart|cineville", "partner_pass"),
    ),
}
# Four-digit years first: on a tie the longer year wins. polars' %y reads 00-69 as 2000-2069
# and 70-99 as 1970-1999, right for ticket dates; %Y never reads a two-digit year (parse.py).
DAY_FIRST_FORMATS: Final[tuple[str, ...]] = (
    "%d-%m-%Y %H:%M:%S",
    "%d-%m-%Y %H:%M",
    "%d-%m-%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d-%m-%y %H:%M:%S",
    "%d-%m-%y %H:%M",
    "%d-%m-%y",
    "%d/%m/%y %H:%M:%S",
    "%d/%m/%y %H:%M",
    "%d/%m/%y",
    "%d.%m.%y %H:%M:%S",
    "%d.%m.%y %H:%M",
    "%d.%m.%y",
)
SAMPLE_ROWS: Final[int] = 20_000
MAX_CODES_LISTED: Final[int] = 200


def _compact(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def guess_columns(header: Iterable[str]) -> dict[str, str]:
    """Canonical field -> export column, by exact canonical name or a known synonym."""
    guessed: dict[str, str] = {}
    columns = list(header)
    for fld in KNOWN_FIELDS:
        wanted = {_compact(fld), *SYNONYMS.get(fld, ())}
        for col in columns:
            if _compact(col) in wanted and col not in guessed.values():
                guessed[fld] = col
                break
    return guessed


def guess_code(fld: str, value: str) -> str | None:
    key = norm_code(value)
    if key in CODE_FIELDS[fld]:
        return key
    for pattern, target in CODE_HINTS[fld]:
        if re.search(pattern, key):
            return target
    return None


@dataclass(frozen=True, slots=True)
class DateGuess:
    """How a date column is written, as far as its first values show."""

    format: str | None  # the day-first pattern to set; None: ISO 8601 (or nothing to go by)
    unrecognised: str | None = None  # a value no known pattern reads, when most are unread


def guess_date_format(values: pl.Series, two_digit_years: bool = True) -> DateGuess:
    """ISO 8601, or the day-first pattern that reads the most values; recognised only when it
    reads more than half of them (else ``unrecognised`` shows one it cannot read).

    ISO 8601 counts what ``check`` reads without a pattern: every ISO variant, a zone suffix
    (``parse.datetime_fallback``), so a column mixing them, or ending in ``+01:00`` or ``Z``,
    needs no pattern. A column typed as a date (Parquet, a database) needs none either.
    ``two_digit_years`` False leaves out %y, for birth dates: is '03-04-24' 1924 or 2024?
    """
    if isinstance(values.dtype, pl.Date | pl.Datetime):
        return DateGuess(None)
    sample = values.cast(pl.String).str.strip_chars().drop_nulls()
    sample = sample.filter(sample.str.len_bytes() > 0).head(500)
    if sample.len() == 0:
        return DateGuess(None)

    iso = datetime_fallback(None)(sample)
    iso_hits = sample.len() - iso.null_count()
    day_first = [f for f in DAY_FIRST_FORMATS if two_digit_years or "%y" not in f]
    reads = {f: read_datetimes(sample, f) for f in day_first}
    hits = {f: sample.len() - r.null_count() for f, r in reads.items()}
    best = max(day_first, key=hits.__getitem__)  # the first listed on a tie
    fmt = best if hits[best] > iso_hits else None  # ISO on a tie: what check reads by default
    if 2 * max(hits[best], iso_hits) > sample.len():
        return DateGuess(fmt)
    read = pl.select(pl.coalesce(iso, reads[best])).to_series()
    unread = sample.filter(read.is_null())
    if unread.is_empty():  # half ISO, half `best`: check names the half it cannot read
        return DateGuess(fmt)
    return DateGuess(fmt, unrecognised=str(unread[0]))


@dataclass(frozen=True, slots=True)
class Starter:
    mapping_toml: str
    summary: list[str]


def _unrecognised(column: str, example: str | None, key: str) -> str:
    """``example`` None for a birth date: personal data is never repeated (validate.py)."""
    shown = ""
    if example is not None:
        cut = example if len(example) <= 40 else example[:40] + "…"
        shown = f" (e.g. {cut!r})"
    return f"could not recognise the date format of {column!r}{shown}: set [formats] {key}"


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def starter_mapping(source: Source, origin: str) -> Starter:
    """A commented mapping for ``source`` and a few lines saying what was found."""
    try:
        header = source.header()
    except SourceError as err:
        raise SourceError([f"cannot look at {origin}: {p}" for p in err.problems]) from err
    guessed = guess_columns(header)
    forbidden = [(c, r) for c in header if c not in guessed.values() if (r := forbidden_reason(c))]
    sample_fields = {
        f: c
        for f, c in guessed.items()
        if f in CODE_FIELDS or f in ("order_datetime", "performance_start", "birth_date")
    }
    rows = source.read(sample_fields).frame.head(SAMPLE_ROWS) if sample_fields else None

    out = [
        f"# publiek mapping for {origin}",
        "# Written by `publiek-node init` from the file's header and first rows. Every guess",
        "# below is a suggestion: check it, then run `publiek-node check <file> --mapping",
        "# <this file>` until it passes. See docs/node-data.md for the format.",
        "",
        "[source]",
    ]
    if isinstance(source, CsvFile):
        found = {
            "utf-8": "UTF-8",
            "utf-16": "UTF-16",
            "windows-1252": "Windows-1252",
        }.get(source.encoding, "not UTF-8: probably Windows-1252, read per line where needed")
        out.append(f'encoding = "auto"              # found {found}; or utf-8, windows-1252')
        delim = "\\t" if source.delimiter == "\t" else source.delimiter
        out.append(
            f'delimiter = "{delim}"               # found {delimiter_name(source.delimiter)}'
        )
    if forbidden:
        out.append("# These columns look like personal data the node never needs, and the node")
        out.append("# refuses the export while they are in it. Best: leave them out of the export.")
        out.append("# If one does not hold what its name suggests, list it here; it is never read:")
        for col, why in forbidden:
            out.append(f"#   {_toml_str(col)}: looks like {why}")
        out.append("# ignore = [" + ", ".join(_toml_str(c) for c, _ in forbidden) + "]")
    else:
        out.append("ignore = []                     # columns the node must never read")

    out += ["", "[columns]                       # canonical field = column in your export"]
    missing_required: list[str] = []
    for fld in READ_FIELDS:
        if fld in guessed:
            note = "" if _compact(guessed[fld]) == _compact(fld) else "   # guessed: check"
            out.append(f"{fld} = {_toml_str(guessed[fld])}{note}")
        elif fld in REQUIRED_COLUMNS:
            missing_required.append(fld)
            out.append(f'# {fld} = ""   # REQUIRED: which column? (or set it under [constants])')
    read = {guessed[f] for f in READ_FIELDS if f in guessed}
    unused = [c for c in header if c not in read and not forbidden_reason(c)]
    if unused:
        out.append("# Not mapped (never read): " + ", ".join(_toml_str(c) for c in unused))

    out += [
        "",
        "[constants]                     # a field your export lacks, the same for every row",
        '# venue_id = "main-hall"',
        "",
        "[formats]                       # strftime patterns; leave out for ISO 8601",
    ]
    fmt_note = '# datetime = "%d-%m-%Y %H:%M"'
    unread_dates: list[str] = []  # said in the file and in init's output
    if rows is not None:
        patterns: dict[str, str | None] = {}  # column -> its pattern (None: ISO 8601)
        for fld in ("performance_start", "order_datetime"):
            if fld not in rows.columns:
                continue
            guess = guess_date_format(rows[fld])
            if guess.unrecognised is not None:
                unread_dates.append(_unrecognised(guessed[fld], guess.unrecognised, "datetime"))
                continue
            patterns[guessed[fld]] = guess.format
            if guess.format and fmt_note.startswith("#"):
                fmt_note = (
                    f"datetime = {_toml_str(guess.format)}        # guessed from"
                    f" {guessed[fld]!r}: check"
                )
        if len(set(patterns.values())) > 1:
            written = ", ".join(f"{c!r} {f or 'ISO 8601'}" for c, f in patterns.items())
            unread_dates.append(
                f"the date columns are written differently ({written}) but [formats] datetime"
                " is one pattern for both: export them alike"
            )
        if "birth_date" in rows.columns:
            bguess = guess_date_format(rows["birth_date"], two_digit_years=False)
            if bguess.unrecognised is not None:
                unread_dates.append(_unrecognised(guessed["birth_date"], None, "birth_date"))
            elif bguess.format:  # whole: a date-only pattern does not read '17-05-1970 00:00'
                out.append(f"birth_date = {_toml_str(bguess.format)}   # guessed: check")
    out += [f"# {line}" for line in unread_dates]
    out.append(fmt_note)

    unplaced = 0
    for fld in CODE_FIELDS:
        if rows is None or fld not in rows.columns:
            continue
        values = rows[fld].cast(pl.String).drop_nulls().unique().sort().to_list()
        if all(norm_code(v) in CODE_FIELDS[fld] for v in values):
            continue
        out += ["", f"[values.{fld}]   # your code = canonical code; one of: "]
        out.append("#   " + ", ".join(CODE_FIELDS[fld]))
        for value in values[:MAX_CODES_LISTED]:
            target = guess_code(fld, value)
            if target is None:
                unplaced += 1
                out.append(f'# {_toml_str(value)} = ""   # which {fld}?')
            else:
                note = "" if norm_code(value) == target else "   # guessed: check"
                out.append(f"{_toml_str(value)} = {_toml_str(target)}{note}")
        if len(values) > MAX_CODES_LISTED:
            out.append(f"# ... {len(values) - MAX_CODES_LISTED} more codes not listed")
    out.append("")

    summary = [
        f"{len(header)} columns; {len(guessed)} matched to ticket_line fields",
    ]
    if missing_required:
        summary.append("required fields not found: " + ", ".join(missing_required))
    if forbidden:
        summary.append(
            "columns that look forbidden: " + ", ".join(f"{c!r} ({w})" for c, w in forbidden)
        )
    if unplaced:
        summary.append(f"{unplaced} house code(s) could not be placed: decide them in the mapping")
    summary += unread_dates
    return Starter(mapping_toml="\n".join(out), summary=summary)
