"""Where ticket rows come from: a CSV or Parquet file, or a SQL query through SQLAlchemy.

Every source is read in two steps: ``header()`` names its columns (so the mapping can be
checked, and forbidden columns refused, before a single row is loaded) and ``read()`` loads only
the columns the mapping needs, as a polars frame with a ``__row`` column holding the row number
the operator would look for. Columns nobody asked for are never materialised.

CSV files are read by polars. Sniffing (encoding, delimiter, byte-order mark) looks at the first
256 KiB only; the slow paths (transcoding a Windows-1252 or UTF-16 file in memory, diagnosing a
file polars cannot parse) run only when they are needed.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import polars as pl

SNIFF_BYTES: Final[int] = 256 * 1024
DELIMITER_CANDIDATES: Final[tuple[str, ...]] = (",", ";", "\t", "|")
ROW: Final[str] = "__row"
EXTRA: Final[str] = "__extra"  # CSV only: holds anything beyond the header's last column
FIRST: Final[str] = "__first"  # CSV only: the first column, to tell blank and misread lines
_DELIM_NAMES: Final[dict[str, str]] = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}

# Errors polars raises on data it cannot read; PanicException is a BaseException, not an
# Exception, so it is named on its own.
POLARS_ERRORS: Final[tuple[type[BaseException], ...]] = (
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,
)

FileFormat = Literal["csv", "parquet"]


class SourceError(Exception):
    """The source cannot be read at all; ``problems`` says why, in the operator's terms."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class RawRows:
    """Rows as read: ``__row``, one column per canonical field (renamed), maybe ``__extra``."""

    frame: pl.DataFrame
    description: str
    notices: tuple[str, ...] = ()
    ends_mid_row: bool = False  # CSV whose last byte is not a line end
    delimiter: str | None = None  # CSV only


def delimiter_name(delimiter: str) -> str:
    return _DELIM_NAMES.get(delimiter, repr(delimiter))


def _select(fields: dict[str, str]) -> list[pl.Expr]:
    """Canonical field <- source column; one source column may feed two fields."""
    return [pl.col(src).alias(fld) for fld, src in fields.items()]


# --------------------------------------------------------------------------------------------
# CSV


def _count_outside_quotes(line: str, char: str) -> int:
    count, quoted = 0, False
    for c in line:
        if c == '"':
            quoted = not quoted
        elif c == char and not quoted:
            count += 1
    return count


def sniff_delimiter(header_line: str) -> tuple[str, dict[str, int]]:
    counts = {d: _count_outside_quotes(header_line, d) for d in DELIMITER_CANDIDATES}
    best = max(DELIMITER_CANDIDATES, key=lambda d: counts[d])
    return (best if counts[best] else ","), counts


def _detect_binary(sample: bytes) -> str | None:
    if sample.startswith(b"PAR1"):
        return "this is a Parquet file, not CSV: give it a .parquet name or set data.format"
    if sample.startswith(b"PK\x03\x04"):
        return "this is a zip archive or an Excel workbook (.xlsx), not CSV: save it as CSV"
    if sample.startswith(b"\xd0\xcf\x11\xe0"):
        return "this is a legacy Excel workbook (.xls), not CSV: save it as CSV"
    if b"\x00" in sample[:4096]:
        return "this is not a text file (it contains NUL bytes)"
    return None


def _utf8_ok(sample: bytes, final: bool) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=final)
    except UnicodeDecodeError:
        return False
    return True


_SURROGATES = re.compile("[\udc80-\udcff]+")
_NON_ASCII_TEXT = re.compile("[^\x00-\x7f\udc80-\udcff]")


def transcode(data: bytes, encoding: str) -> tuple[bytes, list[str], str]:
    """The file as UTF-8 bytes, with notes on what was done and the encoding it turned out in.

    ``encoding`` "auto" keeps every valid UTF-8 sequence and reads the bytes that are not valid
    UTF-8 as Windows-1252: right for a legacy export, and for the "mixed" file a spreadsheet
    produces when someone pastes accented text into a UTF-8 export. The lines that needed it
    are named, so the operator can look. A file with no valid UTF-8 beyond ASCII is simply
    Windows-1252, and is described as that.
    """
    notes: list[str] = []
    label = "UTF-8 with Windows-1252 lines"
    if encoding == "utf-16":
        text = data.decode("utf-16", errors="replace")
        notes.append("read as UTF-16")
        label = "UTF-16"
    elif encoding == "windows-1252":
        text = data.decode("cp1252", errors="replace")
        notes.append("read as Windows-1252")
        label = "Windows-1252"
    else:
        text = data.decode("utf-8", errors="surrogateescape")
        lines: list[int] = []
        pos, line = 0, 1

        def fix(m: re.Match[str]) -> str:
            nonlocal pos, line
            line += text.count("\n", pos, m.start())
            pos = m.start()
            if not lines or lines[-1] != line:
                lines.append(line)
            raw = m.group().encode("utf-8", errors="surrogateescape")
            return raw.decode("cp1252", errors="replace")

        fixed = _SURROGATES.sub(fix, text)
        shown = ", ".join(str(n) for n in lines[:10]) + (", ..." if len(lines) > 10 else "")
        if _NON_ASCII_TEXT.search(text):
            notes.append(
                f"mixed encodings: {len(lines):,} line(s) are not valid UTF-8 and were read as"
                f" Windows-1252 (line {shown}); the rest is UTF-8. Check the accented letters"
                " on those lines"
            )
        else:
            notes.append("read as Windows-1252 (the legacy encoding of many Windows exports)")
            label = "Windows-1252"
        text = fixed
    if "\ufffd" in text:
        notes.append("some bytes match no character of the encoding and were replaced by '�'")
    return text.lstrip("\ufeff").encode("utf-8"), notes, label


def diagnose_csv(text: str, delimiter: str) -> str:
    """Why polars could not parse a CSV file, in terms of a line the operator can open."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        while True:
            start = reader.line_num + 1
            next(reader)
    except StopIteration:
        pass
    except csv.Error as err:
        if "unexpected end of data" in str(err):
            return (
                f"line {start}: a quoted field opens here and is never closed (a missing"
                " closing quote, or a file cut off in the middle)"
            )
        return f"line {start}: badly quoted field ({err})"
    stray = re.compile(rf'(?:^|{re.escape(delimiter)})[^"{re.escape(delimiter)}\r\n]+"')
    for n, line in enumerate(text.splitlines(), start=1):
        if stray.search(line):
            return (
                f'line {n}: a quote character (") inside a field that does not start with'
                " one; quote the whole field, or double the quote"
            )
    return "the rows do not have a consistent CSV structure"


class CsvFile:
    def __init__(self, path: Path, encoding: str = "auto", delimiter: str | None = None) -> None:
        self.path = path
        self.configured_encoding = encoding
        self.configured_delimiter = delimiter
        self.encoding = "utf-8"
        self.delimiter = ","
        self.columns: list[str] = []
        self.delimiter_hint: str | None = None
        self.notices: list[str] = []
        self._size = 0
        self._ends_mid_row = False
        self._needs_transcoding = False
        self._read_as: str | None = None  # the encoding transcoding found, once read

    @property
    def display(self) -> str:
        return str(self.path)

    def header(self) -> list[str]:
        path = self.path
        if not path.exists():
            raise SourceError(["file not found"])
        if path.is_dir():
            raise SourceError(["this is a folder, not a file"])
        try:
            self._size = path.stat().st_size
            with path.open("rb") as fh:
                sample = fh.read(SNIFF_BYTES)
                if self._size:
                    fh.seek(max(0, self._size - 1))
                    self._ends_mid_row = fh.read(1) not in (b"\n", b"\r")
        except OSError as err:
            raise SourceError([f"cannot be read: {err.strerror or err}"]) from err
        if self._size == 0:
            raise SourceError(["the file is empty (0 bytes)"])

        encoding = self.configured_encoding
        if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
            encoding = "utf-16"
        binary = None if encoding == "utf-16" else _detect_binary(sample)
        if binary:
            raise SourceError([binary])
        if encoding == "auto":
            encoding = "utf-8" if _utf8_ok(sample, final=len(sample) == self._size) else "auto"
        self.encoding = encoding
        self._read_as = None

        if encoding == "utf-16":
            text = sample.decode("utf-16", errors="replace")
        elif encoding == "windows-1252":
            text = sample.decode("cp1252", errors="replace")
        else:
            text = sample.decode("utf-8", errors="replace")
        text = text.lstrip("\ufeff")
        if "\n" not in text and "\r" in text:
            self.notices.append("lines end in a carriage return only (old Mac style)")
        newline = text.find("\n") if "\n" in text else text.find("\r")
        if newline < 0:
            if self._size > len(sample):
                raise SourceError(
                    [f"the first line is longer than {SNIFF_BYTES // 1024} KiB: is this CSV?"]
                )
            line = text
        else:
            line = text[:newline]
        line = line.rstrip("\r")
        if not line.strip():
            raise SourceError(["the first line is empty: the file must start with a header"])

        best, counts = sniff_delimiter(line)
        delimiter = self.configured_delimiter or best
        if self.configured_delimiter and counts[self.configured_delimiter] == 0 and counts[best]:
            self.delimiter_hint = (
                f"the header holds no {delimiter_name(self.configured_delimiter)} but"
                f" {counts[best]} {delimiter_name(best)}: the file looks"
                f" {delimiter_name(best)}-separated; set delimiter under [source] in the mapping"
            )
        self.delimiter = delimiter
        try:
            names = next(csv.reader([line], delimiter=delimiter))
        except csv.Error as err:
            raise SourceError([f"the header (line 1) is not readable as CSV: {err}"]) from err
        self.columns = _unique_names(names, self.notices)
        self._needs_transcoding = encoding != "utf-8" or "\n" not in text
        return self.columns

    def _encoding_label(self) -> str:
        if self._read_as is not None:
            return self._read_as
        return {"utf-8": "UTF-8", "windows-1252": "Windows-1252", "utf-16": "UTF-16"}.get(
            self.encoding, "UTF-8 with Windows-1252 lines"
        )

    def read(self, fields: dict[str, str]) -> RawRows:
        schema = {c: pl.String() for c in self.columns} | {EXTRA: pl.String()}
        notices = list(self.notices)
        data: bytes | None = None
        source: Path | io.BytesIO = self.path
        if self._needs_transcoding:
            data, notes = self._transcoded(self.encoding)
            notices += notes
            source = io.BytesIO(data)

        needed = list(dict.fromkeys([*fields.values(), self.columns[0]]))
        # By position: the header's own names may repeat or be empty; EXTRA is the position
        # just past the header, where the fields of a too-long row end up.
        positions = [self.columns.index(c) for c in needed] + [len(self.columns)]

        def scan(src: Path | io.BytesIO) -> pl.DataFrame:
            # The eager reader: faster here than a lazy scan.
            frame = pl.read_csv(
                src,
                has_header=False,
                skip_rows=1,
                schema=schema,
                columns=positions,
                separator=self.delimiter,
                quote_char='"',
                truncate_ragged_lines=True,
                row_index_name=ROW,
                row_index_offset=2,
                raise_if_empty=False,
            )
            # One chunk per column (the reader hands back one per thread and batch): every
            # later step then lines columns up for free instead of re-chunking per select.
            return frame.select(
                pl.col(ROW).cast(pl.Int64),
                *_select(fields),
                pl.col(self.columns[0]).alias(FIRST),
                pl.col(EXTRA),
            ).rechunk()

        try:
            frame = scan(source)
        except POLARS_ERRORS as err:
            if data is None and "utf-8" in str(err).lower():
                if self.configured_encoding == "utf-8":
                    raise SourceError([self._utf8_error()]) from err
                self.encoding = "auto"
                data, notes = self._transcoded("auto")
                notices += notes
                try:
                    frame = scan(io.BytesIO(data))
                except POLARS_ERRORS as err2:
                    raise SourceError([self._parse_error(data)]) from err2
            else:
                raise SourceError([self._parse_error(data)]) from err
        description = f"CSV, {self._encoding_label()}, {delimiter_name(self.delimiter)}-separated"
        return RawRows(frame, description, tuple(notices), self._ends_mid_row, self.delimiter)

    def _transcoded(self, encoding: str) -> tuple[bytes, list[str]]:
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            raise SourceError([f"cannot be read: {err.strerror or err}"]) from err
        notes: list[str] = []
        if encoding == "utf-8":
            data = raw
            if raw.startswith(codecs.BOM_UTF8):
                data = raw[len(codecs.BOM_UTF8) :]
        else:
            data, notes, self._read_as = transcode(raw, encoding)
        if b"\n" not in data and b"\r" in data:
            data = data.replace(b"\r", b"\n")
        return data, notes

    def _utf8_error(self) -> str:
        text = self.path.read_bytes().decode("utf-8", errors="surrogateescape")
        lines: list[int] = []
        for n, line in enumerate(text.split("\n"), start=1):
            if _SURROGATES.search(line):
                lines.append(n)
        shown = ", ".join(str(n) for n in lines[:10]) + (", ..." if len(lines) > 10 else "")
        return (
            f"the mapping says UTF-8, but {len(lines):,} line(s) are not valid UTF-8 (line"
            f' {shown}); set encoding = "auto" or "windows-1252" under [source]'
        )

    def _parse_error(self, data: bytes | None) -> str:
        if data is None:
            data = self.path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        return "not readable as CSV: " + diagnose_csv(text, self.delimiter)


def _unique_names(names: list[str], notices: list[str]) -> list[str]:
    """Header names made unique and non-empty, so that every column can be addressed."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for i, raw in enumerate(names, start=1):
        name = raw if raw.strip() else f"(column {i})"
        if name in seen:
            seen[name] += 1
            renamed = f"{name} ({seen[name]})"
            notices.append(f"the header names {name!r} more than once; column {i} is {renamed!r}")
            name = renamed
        else:
            seen[name] = 1
        out.append(name)
    return out


# --------------------------------------------------------------------------------------------
# Parquet


class ParquetFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = []
        self.delimiter_hint: str | None = None

    @property
    def display(self) -> str:
        return str(self.path)

    def header(self) -> list[str]:
        if not self.path.exists():
            raise SourceError(["file not found"])
        if self.path.is_dir():
            raise SourceError(["this is a folder, not a file"])
        if self.path.stat().st_size == 0:
            raise SourceError(["the file is empty (0 bytes)"])
        try:
            self.columns = list(pl.read_parquet_schema(self.path))
        except POLARS_ERRORS as err:
            raise SourceError([f"not a readable Parquet file ({_first_line(err)})"]) from err
        except OSError as err:
            raise SourceError([f"cannot be read: {err.strerror or err}"]) from err
        return self.columns

    def read(self, fields: dict[str, str]) -> RawRows:
        try:
            frame = (
                pl.scan_parquet(self.path)
                .with_row_index(ROW, offset=1)
                .select(pl.col(ROW).cast(pl.Int64), *_select(fields))
                .collect()
            )
        except POLARS_ERRORS as err:
            raise SourceError([f"not a readable Parquet file ({_first_line(err)})"]) from err
        return RawRows(frame, "Parquet")


# --------------------------------------------------------------------------------------------
# SQL


def redact_url(url: str) -> str:
    """A connection URL fit for logs and reports: the password is replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


SQL_BATCH_ROWS: Final[int] = 50_000


class SqlQuery:
    """The result of one query, fetched in batches (server-side cursors where the driver can)."""

    def __init__(self, url: str, query: str) -> None:
        self.url = url
        self.query = query
        self.columns: list[str] = []
        self.delimiter_hint: str | None = None
        self._frame: pl.DataFrame | None = None

    @property
    def display(self) -> str:
        return f"SQL {redact_url(self.url)}"

    def header(self) -> list[str]:
        self._frame = self._fetch()
        self.columns = self._frame.columns
        return self.columns

    def _fetch(self) -> pl.DataFrame:
        try:
            import sqlalchemy
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
        except ImportError as err:  # pragma: no cover - sqlalchemy is a node dependency
            raise SourceError(["SQL sources need SQLAlchemy (pip install sqlalchemy)"]) from err
        try:
            engine = sqlalchemy.create_engine(self.url)
        except NoSuchModuleError as err:
            raise SourceError([f"no database dialect for this URL ({err})"]) from err
        except ArgumentError as err:
            raise SourceError([f"not a database URL: {redact_url(self.url)}"]) from err
        except ImportError as err:
            raise SourceError(
                [
                    f"the database driver is not installed ({err.name or err}); for PostgreSQL:"
                    " pip install 'publiek[postgresql]'"
                ]
            ) from err
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True).execute(
                    sqlalchemy.text(self.query)
                )
                keys = result.keys()  # a Result iterates over rows; its keys are the columns
                names = _unique_names([str(k) for k in keys], [])
                batches: list[pl.DataFrame] = []
                while rows := result.fetchmany(SQL_BATCH_ROWS):
                    # Rows come through the driver one by one (DB-API); polars builds the
                    # columns from each batch in one call.
                    batches.append(
                        pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
                    )
        except SQLAlchemyError as err:
            detail = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise SourceError([f"the query failed: {redact_url(detail)}"]) from err
        except POLARS_ERRORS as err:
            raise SourceError([f"the query's rows cannot be read: {_first_line(err)}"]) from err
        finally:
            engine.dispose()
        if not batches:
            return pl.DataFrame(schema=dict.fromkeys(names, pl.String()))
        return pl.concat(batches, how="vertical_relaxed")

    def read(self, fields: dict[str, str]) -> RawRows:
        frame = self._frame if self._frame is not None else self._fetch()
        self._frame = None  # held once; the selected columns are what lives on
        out = frame.with_row_index(ROW, offset=1).select(
            pl.col(ROW).cast(pl.Int64), *_select(fields)
        )
        return RawRows(out, "SQL query")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


Source = CsvFile | ParquetFile | SqlQuery


def file_source(
    path: Path, fmt: str | None = None, encoding: str = "auto", delimiter: str | None = None
) -> CsvFile | ParquetFile:
    """A file source; the format follows the name (``.parquet``/``.pq``) unless given."""
    kind = fmt or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    if kind == "parquet":
        return ParquetFile(path)
    return CsvFile(path, encoding=encoding, delimiter=delimiter)
