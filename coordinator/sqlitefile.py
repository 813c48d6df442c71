"""Opening the coordinator's SQLite files (run state, release store) safely and recognisably.

Both files carry a ``meta`` table naming what the file is (``format``) and its schema version.
Opening checks that *before* anything is written, so pointing ``--state`` at the release store, a
node's ledger or a text file is refused with a message naming the file, and never "repaired" by
creating our tables inside someone else's database.

Every file is opened in WAL mode with ``synchronous=FULL``: a transaction that has committed is
on disk, also across a power cut, and readers (``publiek-coordinator status``) never block the
running coordinator.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

STATE_FORMAT = "publiek.coordinator.state"
STORE_FORMAT = "publiek.coordinator.releases"

# What to call a file of a known format in an error message.
KNOWN_FORMATS = {
    STATE_FORMAT: "a publiek coordinator run-state file",
    STORE_FORMAT: "a publiek release store",
}

# A second process (the coordinator while `status` reads) holds the write lock only for the
# length of one small transaction; waiting this long means something is really stuck.
BUSY_TIMEOUT_S = 30.0


class CoordinatorFileError(Exception):
    """A coordinator state or release-store file cannot be used (missing, corrupt, foreign)."""


def _unreadable(path: Path, what: str, err: sqlite3.Error) -> str:
    """Why a file cannot be used: damaged (an SQLite file whose pages are bad) or not SQLite."""
    try:
        with path.open("rb") as fh:
            header = fh.read(16)
    except OSError:
        header = b""
    if header == b"SQLite format 3\x00":
        return f"{path} is damaged ({err}); restore it from a backup (docs/operating.md)"
    return f"{path} is not {what}: it is not an SQLite database ({err})"


def _explain(path: Path, doing: str, err: sqlite3.Error) -> str:
    # Plain DatabaseError is SQLite's "the file is bad"; its subclasses (OperationalError: locked,
    # disk full, read-only; IntegrityError) are about this operation, not the file.
    # A text column that is not UTF-8 is a damaged page too (sqlite3 reports it as an
    # OperationalError, quoting the bytes: keep the message short).
    if type(err) is sqlite3.DatabaseError or "Could not decode" in str(err):
        return _unreadable(path, "an SQLite file", sqlite3.DatabaseError(str(err)[:120]))
    return f"cannot {doing} {path}: {err}"


@contextlib.contextmanager
def transaction(
    db: sqlite3.Connection, lock: threading.RLock, path: Path, error: type[CoordinatorFileError]
) -> Iterator[sqlite3.Connection]:
    """One write transaction that has committed (and, with synchronous=FULL, is on disk) when
    the block ends; rolled back if the block raises.

    IMMEDIATE takes the write lock before anything is read, so two processes never both decide
    on the same stale view (say, the next version number).
    """
    with lock:
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise error(_explain(path, "write", err)) from err


@contextlib.contextmanager
def reading(lock: threading.RLock, path: Path, error: type[CoordinatorFileError]) -> Iterator[None]:
    """Reads: a damaged file becomes a clear error naming it, not an sqlite3 exception."""
    with lock:
        try:
            yield
        except sqlite3.Error as err:
            raise error(_explain(path, "read", err)) from err


def missing_file(path: Path, fmt: str) -> str:
    """The complaint about a file of format ``fmt`` that is not there (callers add which
    option names it)."""
    # KNOWN_FORMATS names a file with its article ("a publiek release store"): "no ... there"
    # takes the noun alone.
    noun = KNOWN_FORMATS[fmt].removeprefix("a ")
    return f"{path} does not exist (no {noun} there)"


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    return {str(k): str(v) for k, v in db.execute("SELECT key, value FROM meta")}


def _check_meta(
    path: Path,
    meta: dict[str, str],
    *,
    fmt: str,
    schema_version: int,
    error: type[CoordinatorFileError],
) -> None:
    what = KNOWN_FORMATS[fmt]
    found = meta.get("format")
    if found != fmt:
        other = KNOWN_FORMATS.get(found or "", f"format {found!r}" if found else "no format")
        raise error(f"{path} is not {what}: it is {other}")
    raw = meta.get("schema_version", "")
    try:
        version = int(raw)
    except ValueError:
        raise error(f"{path} is damaged: its schema version {raw!r} is not a number") from None
    if version > schema_version:
        raise error(
            f"{path} was written by a newer publiek (schema {version}); this"
            f" publiek-coordinator reads schema {schema_version}: upgrade it to use this file"
        )
    if version < schema_version:
        # Only schema 1 exists so far; a migration goes here when schema 2 does.
        raise error(
            f"{path} has schema {version}, which this publiek-coordinator (schema"
            f" {schema_version}) cannot migrate"
        )


def _check_pages(db: sqlite3.Connection, path: Path, error: type[CoordinatorFileError]) -> None:
    """Every page readable and well-formed, checked once when the file is opened.

    Without it a file whose damage sits in pages a command does not happen to read (say, a
    release's text when only the list is shown) would look healthy, and a run could start, ask
    nodes for their budget, and only fail when it stores the release. ``quick_check`` reads
    the file once (about a second per few hundred MB): cheap beside a run.
    """
    try:
        problems = [str(r[0]) for r in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as err:
        raise error(_unreadable(path, "an SQLite file", err)) from err
    if problems != ["ok"]:
        lines = [ln.strip() for p in problems for ln in p.splitlines()]
        found = "; ".join(ln[:100] for ln in lines if ln and not ln.startswith("***"))
        raise error(f"{path} is damaged ({found}); restore it from a backup (docs/operating.md)")


def open_database(
    path: Path,
    *,
    fmt: str,
    schema_version: int,
    schema: Sequence[str],
    created_by: str,
    create: bool,
    error: type[CoordinatorFileError],
) -> sqlite3.Connection:
    """Open (or, with ``create``, create) a coordinator file of format ``fmt``.

    ``schema`` is a list of statements (not one script: ``executescript`` would commit on its
    own, and the tables and the ``meta`` rows must appear in one transaction, or a crash in
    between would leave a file that later looks foreign).
    """
    what = KNOWN_FORMATS[fmt]
    if not path.exists():
        if not create:
            raise error(missing_file(path, fmt))
        path.parent.mkdir(parents=True, exist_ok=True)
    elif path.is_dir():
        raise error(f"{path} is a folder, not {what}")
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a call's writes are one
        # transaction that has committed when the call returns.
        db = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
        )
    except sqlite3.Error as err:
        raise error(f"cannot open {path}: {err}") from err
    try:
        try:
            tables = {
                str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as err:
            raise error(_unreadable(path, what, err)) from err
        if tables and "meta" not in tables:
            listed = ", ".join(sorted(tables)[:6])
            raise error(
                f"{path} is not {what}: it is an SQLite database of something else"
                f" (tables: {listed})"
            )
        if "meta" in tables:
            _check_meta(path, _meta(db), fmt=fmt, schema_version=schema_version, error=error)
            _check_pages(db, path, error)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        if "meta" not in tables:
            if not create:
                raise error(f"{path} is empty (not yet {what})")
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in schema:
                    db.execute(statement)
                db.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("format", fmt),
                        ("schema_version", str(schema_version)),
                        ("created_by", created_by),
                    ],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            # Another process may have created the file at the same moment: check what won.
            _check_meta(path, _meta(db), fmt=fmt, schema_version=schema_version, error=error)
    except CoordinatorFileError:
        db.close()
        raise
    except sqlite3.Error as err:
        db.close()
        raise error(f"cannot use {path}: {err}") from err
    return db
