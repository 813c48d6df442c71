"""The mapping file: how a house export's columns and codes become the canonical ``ticket_line``.

No two ticketing systems export alike, so the node takes a small TOML file that says which
column holds which canonical field, which of the house codes mean which discipline or price
type, and how dates are written. Without a mapping the export must use the canonical column
names (see ``docs/node-data.md``). The file is parsed once into a frozen value and every
problem in it is reported together.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from node.ingest.forbidden import forbidden_reason
from protocols.vocabulary import (
    CHANNELS,
    DISCIPLINES,
    OPTIONAL_COLUMNS,
    ORDER_STATUSES,
    PRICE_TYPES,
    REQUIRED_COLUMNS,
)

# A birth date is accepted as well as a birth year: it is reduced to the year on reading.
EXTRA_FIELDS: Final[tuple[str, ...]] = ("birth_date",)
KNOWN_FIELDS: Final[tuple[str, ...]] = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, *EXTRA_FIELDS)

# The fields the node reads. Everything else in an export is left on disk (data minimisation).
READ_FIELDS: Final[tuple[str, ...]] = (
    *REQUIRED_COLUMNS,
    "postcode",
    "country",
    "birth_year",
    "birth_date",
    "email",
)
# customer_id may be empty (anonymous walk-ins); every other required field must have a value.
NULLABLE_REQUIRED: Final[frozenset[str]] = frozenset({"customer_id"})

COUNTRIES: Final[dict[str, str]] = {
    "nl": "NL",
    "nld": "NL",
    "nederland": "NL",
    "netherlands": "NL",
    "the netherlands": "NL",
    "holland": "NL",
    "be": "BE",
    "bel": "BE",
    "belgie": "BE",
    "belgië": "BE",
    "belgium": "BE",
    "belgique": "BE",
}

# Fields whose house codes can be translated, and the canonical codes they translate into.
CODE_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "discipline": DISCIPLINES,
    "price_type": PRICE_TYPES,
    "order_status": ORDER_STATUSES,
    "channel": CHANNELS,
}
ENCODINGS: Final[dict[str, str]] = {
    "auto": "auto",
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "windows-1252": "windows-1252",
    "cp1252": "windows-1252",
    "latin-1": "windows-1252",  # what people call it; 1252 is its superset used by Windows
    "iso-8859-1": "windows-1252",
    "utf-16": "utf-16",
}
DELIMITERS: Final[dict[str, str | None]] = {
    "auto": None,
    ",": ",",
    ";": ";",
    "\t": "\t",
    "tab": "\t",
    "|": "|",
}
CATCH_ALL: Final[str] = "*"


class MappingError(ValueError):
    """The mapping file cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def norm_code(value: str) -> str:
    """How house codes and column names are compared: case and outer spaces do not count."""
    return value.strip().lower()


@dataclass(frozen=True, slots=True)
class Mapping:
    columns: dict[str, str] = field(default_factory=dict)  # canonical field -> export column
    constants: dict[str, str] = field(default_factory=dict)  # canonical field -> fixed value
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> {code: canonical}
    ignore: frozenset[str] = frozenset()
    datetime_format: str | None = None
    birth_date_format: str | None = None
    encoding: str = "auto"
    delimiter: str | None = None
    origin: str = "canonical column names (no mapping file)"

    def resolve(self, header: list[str]) -> Resolved:
        """Match the mapping against an export's header."""
        by_norm: dict[str, str] = {}
        for col in header:
            by_norm.setdefault(norm_code(col), col)
        ignored = {norm_code(c) for c in self.ignore}
        sources: dict[str, str] = {}
        absent: list[str] = []
        for fld in READ_FIELDS:
            if fld in self.columns:
                wanted = self.columns[fld]
                found = wanted if wanted in header else by_norm.get(norm_code(wanted))
                if found is None:
                    absent.append(f"{fld} = {wanted!r}")
                else:
                    sources[fld] = found
            elif fld not in self.constants and norm_code(fld) in by_norm:
                sources[fld] = by_norm[norm_code(fld)]
        missing = [
            f
            for f in REQUIRED_COLUMNS
            if f not in sources
            and f not in self.constants
            and not any(a.startswith(f"{f} =") for a in absent)
        ]
        used = set(sources.values())
        mapped_elsewhere = {norm_code(c) for c in self.columns.values()}
        forbidden: list[tuple[str, str]] = []
        unread: list[str] = []
        for col in header:
            if col in used:
                continue
            reason = forbidden_reason(col)
            if (
                reason is not None
                and norm_code(col) not in ignored
                and norm_code(col) not in mapped_elsewhere
            ):
                forbidden.append((col, reason))
            else:
                unread.append(col)
        return Resolved(
            sources=sources,
            constants=dict(self.constants),
            missing=missing,
            absent=absent,
            forbidden=forbidden,
            unread=unread,
        )


@dataclass(frozen=True, slots=True)
class Resolved:
    sources: dict[str, str]
    constants: dict[str, str]
    missing: list[str]
    absent: list[str]
    forbidden: list[tuple[str, str]]
    unread: list[str]

    def problems(self, delimiter_hint: str | None = None) -> list[str]:
        out = [f"required column {f!r} is missing" for f in self.missing]
        out += [f"the mapping names a column the export does not have: {a}" for a in self.absent]
        if self.forbidden:
            listed = ", ".join(f"{c!r} ({why})" for c, why in self.forbidden)
            out.append(
                f"forbidden column(s) in the export: {listed}. The node refuses personal data it"
                " never needs: remove them from the export, or, if a column does not hold what"
                " its name suggests, list it under [source] ignore in the mapping so that it is"
                " never read"
            )
        if out and delimiter_hint:
            out.append(delimiter_hint)
        return out


def _str_table(raw: Any, where: str, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"[{where}] must be a table of names to text")
        return {}
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, str) and value.strip():
            out[str(key)] = value.strip() if where != "constants" else value
        else:
            problems.append(f"[{where}] {key} must be a non-empty text")
    return out


def parse_mapping(raw: dict[str, Any], origin: str = "mapping") -> Mapping:
    """A mapping from its parsed TOML; raises MappingError listing every problem."""
    problems: list[str] = []
    known_tables = {"source", "columns", "constants", "formats", "values"}
    for key in raw:
        if key not in known_tables:
            problems.append(
                f"unknown section or key {key!r} (expected: {', '.join(sorted(known_tables))})"
            )

    columns = _str_table(raw.get("columns"), "columns", problems)
    constants = _str_table(raw.get("constants"), "constants", problems)
    for where, table in (("columns", columns), ("constants", constants)):
        for fld in table:
            if fld not in KNOWN_FIELDS:
                problems.append(
                    f"[{where}] {fld!r} is not a ticket_line field"
                    f" (known: {', '.join(KNOWN_FIELDS)})"
                )
    for fld in set(columns) & set(constants):
        problems.append(f"{fld!r} is both a column and a constant: choose one")
    for fld, value in constants.items():
        if fld in CODE_FIELDS and value not in CODE_FIELDS[fld]:
            problems.append(f"[constants] {fld} = {value!r} is not one of {CODE_FIELDS[fld]}")

    values: dict[str, dict[str, str]] = {}
    raw_values = raw.get("values", {})
    if not isinstance(raw_values, dict):
        problems.append("[values] must hold tables such as [values.discipline]")
        raw_values = {}
    for fld, table in raw_values.items():
        allowed: tuple[str, ...] | None = CODE_FIELDS.get(fld)
        if fld == "country":
            allowed = None
        elif allowed is None:
            codes = ", ".join([*CODE_FIELDS, "country"])
            problems.append(f"[values.{fld}]: codes can be mapped for {codes} only")
            continue
        entries = _str_table(table, f"values.{fld}", problems)
        mapped: dict[str, str] = {}
        for code, target in entries.items():
            if allowed is not None and target not in allowed:
                problems.append(
                    f"[values.{fld}] {code!r} = {target!r}: {target!r} is not one of"
                    f" {', '.join(allowed)}"
                )
            elif fld == "country" and (len(target) != 2 or not target.isalpha()):
                problems.append(f"[values.country] {code!r} = {target!r}: use a 2-letter code")
            key = CATCH_ALL if code.strip() == CATCH_ALL else norm_code(code)
            if key in mapped and mapped[key] != target:
                problems.append(f"[values.{fld}] {code!r} is mapped twice (codes ignore case)")
            mapped[key] = target.upper() if fld == "country" else target
        values[fld] = mapped

    src = raw.get("source", {})
    if not isinstance(src, dict):
        problems.append("[source] must be a table")
        src = {}
    for key in src:
        if key not in ("encoding", "delimiter", "ignore"):
            problems.append(f"[source] {key!r} is not known (encoding, delimiter, ignore)")
    enc_text = src.get("encoding", "auto")
    encoding = ENCODINGS.get(str(enc_text).strip().lower()) if isinstance(enc_text, str) else None
    if encoding is None:
        problems.append(f"[source] encoding must be one of {', '.join(ENCODINGS)}")
        encoding = "auto"
    delim_text = src.get("delimiter", "auto")
    delimiter: str | None = None
    if not isinstance(delim_text, str) or delim_text.lower() not in DELIMITERS:
        problems.append('[source] delimiter must be "auto", ",", ";", "\\t" (or "tab") or "|"')
    else:
        delimiter = DELIMITERS[delim_text.lower()]
    ignore_raw = src.get("ignore", [])
    if not isinstance(ignore_raw, list) or not all(isinstance(c, str) for c in ignore_raw):
        problems.append("[source] ignore must be a list of column names")
        ignore_raw = []

    fmts = raw.get("formats", {})
    if not isinstance(fmts, dict):
        problems.append("[formats] must be a table")
        fmts = {}
    for key in fmts:
        if key not in ("datetime", "birth_date"):
            problems.append(f"[formats] {key!r} is not known (datetime, birth_date)")
    dt_format = _format(fmts.get("datetime"), "datetime", problems)
    bd_format = _format(fmts.get("birth_date"), "birth_date", problems)

    if problems:
        raise MappingError(origin, problems)
    return Mapping(
        columns=columns,
        constants=constants,
        values=values,
        ignore=frozenset(ignore_raw),
        datetime_format=dt_format,
        birth_date_format=bd_format,
        encoding=encoding,
        delimiter=delimiter,
        origin=origin,
    )


def _format(value: Any, key: str, problems: list[str]) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "%" not in value:
        problems.append(
            f'[formats] {key} must be a strftime pattern such as "%d-%m-%Y %H:%M", got {value!r}'
        )
        return None
    return value


def load_mapping(path: Path) -> Mapping:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise MappingError(str(path), ["file not found"]) from err
    except (OSError, UnicodeDecodeError) as err:
        raise MappingError(str(path), [f"cannot be read: {err}"]) from err
    except tomllib.TOMLDecodeError as err:
        raise MappingError(str(path), [f"not valid TOML: {err}"]) from err
    return parse_mapping(raw, str(path))
