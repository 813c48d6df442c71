"""The release store: every release the coordinator published, immutable and versioned.

One SQLite file (``publiek-releases.sqlite`` by default). A release is stored as the exact JSON
text of its document (byte for byte what ``release.json`` holds), next to a few columns to find
it by: its id, its plan and a version number per plan (1, 2, ... in the order they were stored),
its title and run. The document itself carries the provenance (plan text and hash, participants,
noise, privacy cost, software version).

Immutability is enforced by the database, not only by this code: triggers refuse every UPDATE
and DELETE on the releases table and any INSERT that would replace a stored row, also from a
raw ``sqlite3`` shell. (Someone who may write the
file can still drop the triggers or the file; backups are in ``docs/operating.md``.) A release
is never edited, only superseded by a newer version.

Exports (CSV, JSON, Parquet) are written exclusively: an existing file is never overwritten.
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import hashlib
import io
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from coordinator import release
from coordinator.release import table_csv
from coordinator.sqlitefile import (
    STORE_FORMAT,
    CoordinatorFileError,
    open_database,
    reading,
    transaction,
)
from protocols.version import software_version

SCHEMA_VERSION = 1

ExportFormat = Literal["csv", "json", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "json", "parquet")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS releases (
        release_id  TEXT PRIMARY KEY,
        plan_id     TEXT NOT NULL,
        version     INTEGER NOT NULL CHECK (version >= 1),
        title       TEXT NOT NULL,
        run_id      TEXT NOT NULL,
        plan_sha256 TEXT NOT NULL,
        mode        TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        stored_at   TEXT NOT NULL,
        n_tables    INTEGER NOT NULL,
        n_participants INTEGER NOT NULL,
        text_sha256 TEXT NOT NULL,
        document    TEXT NOT NULL,
        UNIQUE (plan_id, version)
    )""",
    """CREATE TRIGGER IF NOT EXISTS releases_are_immutable_update
        BEFORE UPDATE ON releases
        BEGIN SELECT RAISE(ABORT, 'releases are immutable: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS releases_are_immutable_delete
        BEFORE DELETE ON releases
        BEGIN SELECT RAISE(ABORT, 'releases are immutable: DELETE refused'); END""",
    # INSERT OR REPLACE deletes the old row without firing DELETE triggers (unless a connection
    # turns recursive_triggers on), so a row that would collide is refused before it is tried.
    """CREATE TRIGGER IF NOT EXISTS releases_are_immutable_replace
        BEFORE INSERT ON releases
        WHEN EXISTS (SELECT 1 FROM releases WHERE release_id = NEW.release_id
                     OR (plan_id = NEW.plan_id AND version = NEW.version))
        BEGIN SELECT RAISE(ABORT, 'releases are immutable: a stored release cannot be replaced');
        END""",
)

_SUMMARY_COLUMNS = (
    "release_id, plan_id, version, title, run_id, plan_sha256, mode, created_at, stored_at,"
    " n_tables, n_participants"
)


class StoreError(CoordinatorFileError):
    """The release store cannot do what was asked (with the reason)."""


class ReleaseExists(StoreError, release.ReleaseExists):
    """A release with this id is already stored (releases are stored once, never replaced)."""


class ReleaseNotFound(StoreError):
    pass


class ExportExists(StoreError, FileExistsError):
    """An export would overwrite an existing file."""


@dataclass(frozen=True, slots=True)
class ReleaseSummary:
    release_id: str
    plan_id: str
    version: int
    title: str
    run_id: str
    plan_sha256: str
    mode: str
    created_at: str  # ISO 8601, UTC, from the document
    stored_at: str  # ISO 8601, UTC, when it entered this store
    n_tables: int
    n_participants: int

    @property
    def ref(self) -> str:
        """The human handle: ``plan-id@version``."""
        return f"{self.plan_id}@{self.version}"


@dataclass(frozen=True, slots=True)
class StoredRelease(ReleaseSummary):
    text: str  # the exact JSON text stored (and exported by ``export(..., "json", ...)``)

    def document(self) -> dict[str, Any]:
        doc = json.loads(self.text)
        assert isinstance(doc, dict)
        return doc


def document_text(doc: dict[str, Any]) -> str:
    """The JSON text of a release: the same bytes ``coordinator.release.write_release`` writes."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def content_id(doc: dict[str, Any]) -> str:
    """The id ``coordinator.release.build_release`` derives from a document's content.

    Mirrors its formula (the SHA-256 of the sorted, compact JSON without the id); the store
    checks it so that a document altered after it was built is not stored as that release.
    """
    body = {k: v for k, v in doc.items() if k != "release_id"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return "rel-" + hashlib.sha256(text).hexdigest()[:16]


def _utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _field(doc: dict[str, Any], *path: str) -> Any:
    value: Any = doc
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise StoreError(f"not a release document: it has no {'.'.join(path)}")
        value = value[key]
    return value


def _text_field(doc: dict[str, Any], *path: str) -> str:
    value = _field(doc, *path)
    if not isinstance(value, str) or not value:
        raise StoreError(f"not a release document: {'.'.join(path)} is not a text")
    return value


class ReleaseStore:
    def __init__(self, path: Path, *, create: bool = True) -> None:
        """Open the store at ``path``; ``create=False`` (for commands that only read) refuses
        a file that does not exist instead of creating an empty one."""
        self.path = path
        self._lock = threading.RLock()
        self._db = open_database(
            path,
            fmt=STORE_FORMAT,
            schema_version=SCHEMA_VERSION,
            schema=_SCHEMA,
            created_by=f"publiek {software_version()}",
            create=create,
            error=StoreError,
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReleaseStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock, self.path, StoreError)

    def _reading(self) -> contextlib.AbstractContextManager[None]:
        return reading(self._lock, self.path, StoreError)

    def put(self, doc: dict[str, Any]) -> StoredRelease:
        """Store a release document; it gets the next version of its plan.

        Raises ReleaseExists if its id is stored already, StoreError if it is not a release
        document or its id does not match its content.
        """
        release_id = _text_field(doc, "release_id")
        plan_id = _text_field(doc, "plan", "id")
        expected = content_id(doc)
        if release_id != expected:
            raise StoreError(
                f"release {release_id}: its id does not match its content ({expected}); the"
                " document was changed after it was built and is refused"
            )
        tables = _field(doc, "tables")
        participants = _field(doc, "participants")
        if not isinstance(tables, list) or not isinstance(participants, list):
            raise StoreError("not a release document: tables and participants must be lists")
        text = document_text(doc)
        row = (
            release_id,
            plan_id,
            _text_field(doc, "title"),
            _text_field(doc, "run_id"),
            _text_field(doc, "plan", "sha256"),
            _text_field(doc, "plan", "mode"),
            _text_field(doc, "created_at"),
            _utcnow(),
            len(tables),
            len(participants),
            hashlib.sha256(text.encode("utf-8")).hexdigest(),
            text,
        )
        with self._transaction() as db:
            existing = db.execute(
                "SELECT plan_id, version FROM releases WHERE release_id = ?", (release_id,)
            ).fetchone()
            if existing is not None:
                raise ReleaseExists(
                    f"release {release_id} is already stored as {existing[0]}@{existing[1]}"
                    f" in {self.path}; releases are immutable and stored once"
                )
            (version,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE plan_id = ?",
                (plan_id,),
            ).fetchone()
            db.execute(
                "INSERT INTO releases (release_id, plan_id, version, title, run_id,"
                " plan_sha256, mode, created_at, stored_at, n_tables, n_participants,"
                " text_sha256, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row[:2], version, *row[2:]),
            )
        return self.get(release_id)

    def _row(self, where: str, params: tuple[Any, ...]) -> StoredRelease | None:
        with self._reading():
            row = self._db.execute(
                f"SELECT {_SUMMARY_COLUMNS}, document, text_sha256 FROM releases WHERE {where}",  # noqa: S608 (fixed column list and clause)
                params,
            ).fetchone()
        if row is None:
            return None
        found = StoredRelease(*row[:-1])
        if hashlib.sha256(found.text.encode("utf-8")).hexdigest() != row[-1]:
            raise StoreError(
                f"release {found.release_id} in {self.path} is damaged: its text no longer"
                " matches the hash stored with it"
            )
        return found

    def get(self, ref: str) -> StoredRelease:
        """A release by its id (``rel-...``), by ``plan-id@version``, or by ``plan-id`` (the
        latest version of that plan)."""
        found: StoredRelease | None
        if "@" in ref:
            plan_id, _, version = ref.rpartition("@")
            if not version.isdigit() or int(version) < 1:
                raise ReleaseNotFound(
                    f"{ref!r}: the version after '@' must be a number (1, 2, ...)"
                )
            found = self._row("plan_id = ? AND version = ?", (plan_id, int(version)))
        else:
            found = self._row("release_id = ?", (ref,)) or self._row(
                "plan_id = ? ORDER BY version DESC LIMIT 1", (ref,)
            )
        if found is None:
            raise ReleaseNotFound(
                f"no release {ref!r} in {self.path} (give a release id, plan-id@version or a"
                " plan id for its latest; `publiek-coordinator releases` lists them)"
            )
        return found

    def list(self) -> list[ReleaseSummary]:
        """Every stored release, oldest first (plans in the order they were first stored)."""
        with self._reading():
            rows = self._db.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM releases ORDER BY stored_at, rowid"  # noqa: S608 (fixed column list)
            ).fetchall()
        return [ReleaseSummary(*r) for r in rows]

    def export(self, ref: str, fmt: ExportFormat, dest: Path) -> builtins.list[Path]:
        """Write a release out; returns the files written. Never overwrites a file.

        ``json``: ``dest`` is the file (the exact stored text). ``csv`` and ``parquet``:
        ``dest`` is a folder (created if needed) that gets one file per table, named after the
        analysis.
        """
        if fmt not in EXPORT_FORMATS:
            raise StoreError(f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})")
        stored = self.get(ref)
        if fmt == "json":
            _refuse_existing([dest])
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_exclusive(dest, stored.text.encode("utf-8"))
            return [dest]
        doc = stored.document()
        if dest.exists() and not dest.is_dir():
            raise ExportExists(f"{dest} exists and is not a folder; {fmt} exports go to a folder")
        targets = [(t, dest / f"{t['analysis_id']}.{fmt}") for t in doc["tables"]]
        # Check every target before writing any, so a refused export leaves nothing half-done.
        _refuse_existing([p for _, p in targets])
        dest.mkdir(parents=True, exist_ok=True)
        for table, path in targets:
            data = (
                table_csv(table).encode("utf-8") if fmt == "csv" else table_parquet(stored, table)
            )
            write_exclusive(path, data)
        return [p for _, p in targets]


def _refuse_existing(paths: list[Path]) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise ExportExists(
            f"{', '.join(existing)} exist(s); exports never overwrite a file: choose another"
            " destination or move it away"
        )


def write_exclusive(path: Path, data: bytes) -> None:
    """Write a new file (never an existing one) and make sure it is whole on disk."""
    try:
        fh = path.open("xb")
    except FileExistsError:
        raise ExportExists(f"{path} exists; exports never overwrite a file") from None
    try:
        with fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        # A half-written export must not look like a whole one.
        path.unlink(missing_ok=True)
        raise


def _columns(table: dict[str, Any]) -> list[str]:
    # The CSV's own header, so that Parquet exports have exactly the columns table_csv writes,
    # also when that changes.
    return next(csv.reader(io.StringIO(table_csv(table))))


def _dtype(values: list[Any]) -> pl.DataType:
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return pl.Boolean()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pl.Int64()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pl.Float64()
    return pl.String()


def table_frame(table: dict[str, Any]) -> pl.DataFrame:
    """One release table as a typed frame with the same columns as the table's CSV: dimension
    keys as text, whole numbers as Int64 (Float64 if a column holds fractions), flags as
    Boolean; a suppressed estimate is a null, not a zero."""
    dims = {d["name"] for d in table["dimensions"]}
    columns: dict[str, pl.Series] = {}
    for name in _columns(table):
        values = [cell[name] for cell in table["cells"]]
        dtype: pl.DataType = pl.String() if name in dims else _dtype(values)
        columns[name] = pl.Series(name, values, dtype=dtype, strict=True)
    return pl.DataFrame(columns)


def table_parquet(stored: ReleaseSummary, table: dict[str, Any]) -> bytes:
    """One table of a stored release as the Parquet file ``export`` writes (the dashboard
    serves the same bytes)."""
    buf = io.BytesIO()
    table_frame(table).write_parquet(buf, metadata=_parquet_metadata(stored, table))
    return buf.getvalue()


def _parquet_metadata(stored: ReleaseSummary, table: dict[str, Any]) -> dict[str, str]:
    # Enough provenance in every file to find the release it came from.
    return {
        "publiek.release_id": stored.release_id,
        "publiek.release": stored.ref,
        "publiek.plan_sha256": stored.plan_sha256,
        "publiek.analysis_id": str(table["analysis_id"]),
        "publiek.title": str(table.get("title", "")),
        "publiek.interval": json.dumps(table.get("interval"), sort_keys=True),
    }
