"""The node's privacy-budget ledger: SQLite, crash-safe, the institution's own record.

Three rules, each enforced in one transaction:
1. A task is charged *before* its answer exists, so no answer can ever leave uncharged: if the
   process dies after charging, the budget stays spent (over-counting is safe, under-counting is
   not).
2. An answered task id returns the stored answer byte for byte, never fresh noise: a coordinator
   that asks again (or a network that retries) cannot average away the noise.
3. A request that would take the spent budget of the current period over the node's own cap is
   refused. The cap lives in the node's configuration; nothing a coordinator sends can raise it.

WAL journaling with ``synchronous=FULL`` makes every committed charge durable across a power cut.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from privacy.budget import Rho
from protocols.errors import ErrorCode, PublicError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    task_id      TEXT PRIMARY KEY,
    spec_digest  TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    analysis_id  TEXT NOT NULL,
    requester    TEXT NOT NULL,
    description  TEXT NOT NULL,
    mode         TEXT NOT NULL,
    rho          TEXT NOT NULL,
    period       TEXT NOT NULL,
    charged_at   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('charged', 'answered', 'failed')),
    answer       BLOB,
    answered_at  TEXT,
    failure      TEXT
);
CREATE INDEX IF NOT EXISTS charges_by_period ON charges (period);
CREATE TABLE IF NOT EXISTS refusals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      TEXT NOT NULL,
    requester    TEXT NOT NULL,
    description  TEXT NOT NULL,
    code         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    refused_at   TEXT NOT NULL
);
"""


class Period(enum.Enum):
    """The window a budget cap applies to; spending resets when a new window starts."""

    YEAR = "year"
    QUARTER = "quarter"
    MONTH = "month"
    TOTAL = "total"

    def key(self, at: datetime) -> str:
        if self is Period.YEAR:
            return f"{at.year}"
        if self is Period.QUARTER:
            return f"{at.year}Q{(at.month - 1) // 3 + 1}"
        if self is Period.MONTH:
            return f"{at.year}-{at.month:02d}"
        return "total"


@dataclass(frozen=True, slots=True)
class BudgetCap:
    rho: Rho
    period: Period

    def __str__(self) -> str:
        per = "in total" if self.period is Period.TOTAL else f"per {self.period.value}"
        return f"rho {self.rho} {per}"


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    task_id: str
    spec_digest: str
    run_id: str
    analysis_id: str
    requester: str
    description: str
    mode: str
    rho: Rho


@dataclass(frozen=True, slots=True)
class NewCharge:
    """The task was charged now; compute the answer, then ``record_answer``."""

    task_id: str
    period: str


@dataclass(frozen=True, slots=True)
class PendingCharge:
    """Charged earlier but no answer was stored (the process stopped in between).

    No answer of it can have left the node (answers leave only after they are stored), so a fresh
    computation is safe, and the budget is not charged again.
    """

    task_id: str
    period: str


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    task_id: str
    answer: bytes


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    task_id: str
    run_id: str
    analysis_id: str
    requester: str
    description: str
    mode: str
    rho: Rho
    period: str
    charged_at: str
    status: str
    answered_at: str | None
    failure: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    task_id: str
    requester: str
    description: str
    code: str
    reason: str
    refused_at: str


class LedgerError(Exception):
    """The ledger file cannot be used (corrupt, wrong schema, unwritable)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Ledger:
    def __init__(self, path: Path, cap: BudgetCap, clock: Callable[[], datetime] = _utcnow) -> None:
        self.path = path
        self.cap = cap
        self._clock = clock
        self._lock = threading.RLock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # The agent answers tasks in a worker thread; the lock below serialises access.
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=30.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._check_schema()
        except sqlite3.DatabaseError as err:
            hint = ""
            if any(w in str(err) for w in ("readonly", "full", "unable to open")):
                hint = (
                    "; the node must be able to write it: check that the file and its folder"
                    " are writable by the node's user and that the disk has room"
                )
            raise LedgerError(f"cannot open the budget ledger {path}: {err}{hint}") from err

    def _check_schema(self) -> None:
        row = self._db.execute(
            "SELECT value FROM ledger_meta WHERE key='schema_version'"
        ).fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO ledger_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        elif row[0] != str(SCHEMA_VERSION):
            raise LedgerError(
                f"ledger {self.path} has schema version {row[0]}; this node reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two processes on one ledger serialise
        # instead of both reading the same "remaining" and both spending it.
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as err:
                raise self._unwritable(err) from err
            try:
                yield self._db
            except sqlite3.DatabaseError as err:
                self._rollback()
                raise self._unwritable(err) from err
            except BaseException:
                self._rollback()
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as err:
                # A full disk often shows only at commit: nothing of the transaction is kept.
                self._rollback()
                raise self._unwritable(err) from err

    def _rollback(self) -> None:
        # SQLite may already have rolled back (SQLITE_FULL does): then there is nothing to undo.
        with suppress(sqlite3.DatabaseError):
            self._db.execute("ROLLBACK")

    def _unwritable(self, err: sqlite3.DatabaseError) -> LedgerError:
        return LedgerError(
            f"the budget ledger {self.path} cannot be written ({err}): is the disk full, or the"
            " file or its folder read-only? Nothing was charged, so nothing was answered"
        )

    def _now(self) -> datetime:
        return self._clock()

    def _spent_in(self, db: sqlite3.Connection, period: str) -> Rho:
        total = Rho.zero()
        for (rho,) in db.execute("SELECT rho FROM charges WHERE period = ?", (period,)):
            total = total + Rho.parse(rho)
        return total

    def begin(
        self, req: ChargeRequest, run_cap: Rho | None = None
    ) -> NewCharge | PendingCharge | StoredAnswer:
        """Charge a task, or recognise it from before. Raises PublicError on refusal.

        ``run_cap``: the most all tasks of the task's run may cost together (the policy's
        ``max_rho_per_run``), checked in the same transaction as the charge. A secure round
        is admitted at setup but charged at its masked input, so a check at setup alone would
        let a coordinator open several rounds of one run before charging any of them.
        """
        now = self._now()
        period = self.cap.period.key(now)
        with self._transaction() as db:
            row = db.execute(
                "SELECT spec_digest, status, answer, period FROM charges WHERE task_id = ?",
                (req.task_id,),
            ).fetchone()
            if row is not None:
                digest, status, answer, charged_period = row
                if digest != req.spec_digest:
                    raise PublicError(
                        ErrorCode.TASK_ID_CONFLICT,
                        f"task {req.task_id} was answered before with a different specification;"
                        " a task id is never reused",
                    )
                if status == "answered":
                    return StoredAnswer(req.task_id, bytes(answer))
                return PendingCharge(req.task_id, charged_period)
            if run_cap is not None:
                in_run = _spent_in_run(db, req.run_id, req.task_id)
                if in_run + req.rho > run_cap:
                    raise PublicError(
                        ErrorCode.POLICY_REFUSED,
                        f"one run may cost at most rho {run_cap}, with task {req.task_id} it"
                        f" would cost rho {in_run + req.rho} (rho {in_run} spent on its other"
                        " tasks)",
                    )
            spent = self._spent_in(db, period)
            if spent + req.rho > self.cap.rho:
                remaining = self._left(spent)
                raise PublicError(
                    ErrorCode.BUDGET_EXCEEDED,
                    f"task {req.task_id} costs rho {req.rho} but this node has only rho"
                    f" {remaining} left of its cap of {self.cap} (period {period});"
                    " the cap is set by the institution, not by the coordinator",
                )
            db.execute(
                "INSERT INTO charges (task_id, spec_digest, run_id, analysis_id, requester,"
                " description, mode, rho, period, charged_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'charged')",
                (
                    req.task_id,
                    req.spec_digest,
                    req.run_id,
                    req.analysis_id,
                    req.requester,
                    req.description,
                    req.mode,
                    str(req.rho),
                    period,
                    now.isoformat(timespec="seconds"),
                ),
            )
        return NewCharge(req.task_id, period)

    def preflight(self, req: ChargeRequest) -> PublicError | None:
        """Why ``begin(req)`` would refuse, or None; charges nothing (for a secure round's setup).

        Unlike ``begin``, an already answered task counts as a refusal: in secure mode an answer
        that left cannot be sent again in another round.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT spec_digest, status FROM charges WHERE task_id = ?", (req.task_id,)
            ).fetchone()
            if row is not None:
                if row[0] != req.spec_digest:
                    return PublicError(
                        ErrorCode.TASK_ID_CONFLICT,
                        f"task {req.task_id} was answered before with a different specification",
                    )
                if row[1] == "answered":
                    return PublicError(
                        ErrorCode.TASK_ID_CONFLICT,
                        f"this node already contributed to task {req.task_id}",
                    )
                return None  # charged earlier, nothing left: it may take part without a charge
            period = self.cap.period.key(self._now())
            spent = self._spent_in(self._db, period)
        if spent + req.rho > self.cap.rho:
            return PublicError(
                ErrorCode.BUDGET_EXCEEDED,
                f"task {req.task_id} costs rho {req.rho} but this node has only rho"
                f" {self._left(spent)} left of its cap of {self.cap} (period {period})",
            )
        return None

    def record_answer(self, task_id: str, answer: bytes) -> bytes:
        """Store the answer; returns the answer that must be sent (the first one stored wins)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, answer FROM charges WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is None:
                raise LedgerError(f"task {task_id} was never charged; refusing to store an answer")
            if row[0] == "answered":
                return bytes(row[1])
            db.execute(
                "UPDATE charges SET status='answered', answer=?, answered_at=?, failure=NULL"
                " WHERE task_id=?",
                (answer, self._now().isoformat(timespec="seconds"), task_id),
            )
        return answer

    def record_failure(self, task_id: str, reason: str) -> None:
        """The task stays charged (its cost was committed) but produced no answer."""
        with self._transaction() as db:
            db.execute(
                "UPDATE charges SET status='failed', failure=?"
                " WHERE task_id=? AND status!='answered'",
                (reason[:500], task_id),
            )

    def record_refusal(
        self, task_id: str, requester: str, description: str, code: str, reason: str
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO refusals (task_id, requester, description, code, reason, refused_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    task_id[:128],
                    requester[:128],
                    description[:300],
                    code,
                    reason[:500],
                    self._now().isoformat(timespec="seconds"),
                ),
            )

    def spent(self, period: str | None = None) -> Rho:
        key = period if period is not None else self.cap.period.key(self._now())
        with self._lock:
            return self._spent_in(self._db, key)

    def spent_in_run(self, run_id: str, *, excluding: str | None = None) -> Rho:
        """What the tasks of one run have cost, in every period (for a per-run policy cap).

        ``excluding`` leaves one task out: asking again about a task that was already charged
        is not a new cost.
        """
        with self._lock:
            return _spent_in_run(self._db, run_id, excluding if excluding is not None else "")

    def _left(self, spent: Rho) -> Rho:
        # A cap lowered below what was already spent leaves nothing, not a negative budget.
        return self.cap.rho - spent if spent <= self.cap.rho else Rho.zero()

    def remaining(self) -> Rho:
        return self._left(self.spent())

    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, run_id, analysis_id, requester, description, mode, rho, period,"
                " charged_at, status, answered_at, failure FROM charges"
                " ORDER BY charged_at, task_id"
            ).fetchall()
        return [
            LedgerEntry(
                task_id=r[0],
                run_id=r[1],
                analysis_id=r[2],
                requester=r[3],
                description=r[4],
                mode=r[5],
                rho=Rho.parse(r[6]),
                period=r[7],
                charged_at=r[8],
                status=r[9],
                answered_at=r[10],
                failure=r[11],
            )
            for r in rows
        ]

    def refusals(self) -> list[Refusal]:
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, requester, description, code, reason, refused_at FROM refusals"
                " ORDER BY id"
            ).fetchall()
        return [Refusal(*r) for r in rows]


def _spent_in_run(db: sqlite3.Connection, run_id: str, excluding: str) -> Rho:
    """What the run's tasks other than ``excluding`` have been charged, in every period."""
    rows = db.execute(
        "SELECT rho FROM charges WHERE run_id = ? AND task_id != ?", (run_id, excluding)
    ).fetchall()
    total = Rho.zero()
    for (rho,) in rows:
        total = total + Rho.parse(rho)
    return total
