"""The coordinator's run state: what a restarted coordinator needs to carry on, and what
``publiek-coordinator status`` shows.

One SQLite file (``publiek-state.sqlite`` by default) in WAL mode with ``synchronous=FULL``.
Every method that writes is one transaction that has committed (and is on disk) when the call
returns, so a coordinator killed at any moment leaves a consistent file that holds every write
that returned: a finished analysis is never lost and never half-saved.

What it holds:
- runs: one row per run (plan, status, participants, release), status ``running`` until
  ``finish_run`` makes it ``released``, ``aborted`` or ``failed`` (all final). A run that is
  still ``running`` when no coordinator runs it was interrupted and can be resumed; the
  coordinator running it says so every few seconds (``heartbeat``), which is how ``status``
  tells the two apart;
- analyses: per run, the result of every finished analysis (``done``) or why it failed and
  which nodes were charged for it anyway (``failed``);
- round checkpoints: per analysis, the secure-aggregation round in progress and every stage's
  replies as opaque bytes, so a round can carry on after a restart or be started over
  (``clear_round``). A finished run's checkpoints are dropped: nothing can resume it;
- nodes: the latest snapshot of each node the coordinator has seen (version, connected or not,
  last contact), written every few seconds while a run is on.

Nothing here is personal data: results are noisy aggregates, stage replies are what the nodes
sent the coordinator (masked vectors, encrypted shares, signatures).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.sqlitefile import (
    STATE_FORMAT,
    CoordinatorFileError,
    open_database,
    reading,
    transaction,
)
from protocols.plan import PlanError, parse_plan
from protocols.version import software_version

SCHEMA_VERSION = 1

RUNNING = "running"
FINAL_STATUSES = ("released", "aborted", "failed")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id        TEXT PRIMARY KEY,
        plan_id       TEXT NOT NULL,
        plan_sha256   TEXT NOT NULL,
        plan_text     TEXT NOT NULL,
        plan_analyses TEXT NOT NULL,  -- JSON list of the plan's analysis ids
        status        TEXT NOT NULL
                      CHECK (status IN ('running', 'released', 'aborted', 'failed')),
        created_at    REAL NOT NULL,  -- unix time
        updated_at    REAL NOT NULL,
        alive_at      REAL,           -- the coordinator running it said so; NULL: none does
        participants  TEXT,           -- JSON list, NULL until set
        release_id    TEXT,
        CHECK ((status = 'released') = (release_id IS NOT NULL))
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_plan ON runs (plan_sha256, status)",
    """CREATE TABLE IF NOT EXISTS analyses (
        run_id      TEXT NOT NULL REFERENCES runs (run_id),
        analysis_id TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('done', 'failed')),
        result      TEXT,           -- JSON, when done
        reason      TEXT,           -- when failed
        charged     TEXT NOT NULL,  -- JSON list of node ids
        saved_at    REAL NOT NULL,
        PRIMARY KEY (run_id, analysis_id)
    )""",
    """CREATE TABLE IF NOT EXISTS rounds (
        run_id      TEXT NOT NULL REFERENCES runs (run_id),
        analysis_id TEXT NOT NULL,
        round_id    TEXT NOT NULL,
        started_at  REAL NOT NULL,
        PRIMARY KEY (run_id, analysis_id)
    )""",
    """CREATE TABLE IF NOT EXISTS stages (
        run_id      TEXT NOT NULL,
        analysis_id TEXT NOT NULL,
        stage       TEXT NOT NULL,
        seq         INTEGER NOT NULL,  -- order saved
        saved_at    REAL NOT NULL,
        PRIMARY KEY (run_id, analysis_id, stage),
        FOREIGN KEY (run_id, analysis_id) REFERENCES rounds (run_id, analysis_id)
            ON DELETE CASCADE
    )""",
    """CREATE TABLE IF NOT EXISTS stage_replies (
        run_id      TEXT NOT NULL,
        analysis_id TEXT NOT NULL,
        stage       TEXT NOT NULL,
        node        TEXT NOT NULL,
        ord         INTEGER NOT NULL,  -- the order the caller gave
        reply       BLOB NOT NULL,
        PRIMARY KEY (run_id, analysis_id, stage, node),
        FOREIGN KEY (run_id, analysis_id, stage) REFERENCES stages (run_id, analysis_id, stage)
            ON DELETE CASCADE
    )""",
    """CREATE TABLE IF NOT EXISTS nodes (
        institution_id   TEXT PRIMARY KEY,
        software_version TEXT NOT NULL,
        protocol_version INTEGER NOT NULL,
        capabilities     TEXT NOT NULL,  -- JSON list
        connected        INTEGER NOT NULL CHECK (connected IN (0, 1)),
        connected_at     REAL NOT NULL,
        last_seen        REAL NOT NULL,
        recorded_at      REAL NOT NULL
    )""",
)


class StateError(CoordinatorFileError):
    """The run state cannot do what was asked (unknown run, conflicting write, bad file)."""


@dataclass(frozen=True, slots=True)
class AnalysisRecord:
    analysis_id: str
    status: str  # "done" | "failed"
    result: dict[str, Any] | None  # as saved, after a JSON round trip (tuples become lists)
    reason: str | None
    charged: list[str]


@dataclass(frozen=True, slots=True)
class RoundCheckpoint:
    round_id: str
    stages: dict[str, dict[str, bytes]]  # stage -> node -> reply, stages in the order saved


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    institution_id: str
    software_version: str
    protocol_version: int
    capabilities: tuple[str, ...]
    connected: bool
    connected_at: float  # unix time
    last_seen: float  # unix time


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    plan_id: str
    plan_sha256: str
    status: str  # "running" | "released" | "aborted" | "failed"
    created_at: float  # unix time
    updated_at: float  # unix time of the run's latest write
    done: int  # analyses finished
    failed: int  # analyses failed
    total: int  # the plan's analyses (plus any other recorded for this run)
    release_id: str | None
    # Last sign of life of the coordinator running it (``heartbeat``); None once it stopped.
    # A ``running`` run whose coordinator is silent was interrupted.
    alive_at: float | None = None


def _json(value: Any, what: str) -> str:
    # Canonical text (sorted keys), so that "the same result again" is a text comparison.
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise StateError(f"{what} cannot be stored: it is not plain JSON ({err})") from err


class RunStateStore:
    def __init__(self, path: Path, *, create: bool = True) -> None:
        """Open the state file at ``path``; ``create=False`` (for commands that only read)
        refuses a file that does not exist instead of creating an empty one."""
        self.path = path
        self._lock = threading.RLock()
        self._db = open_database(
            path,
            fmt=STATE_FORMAT,
            schema_version=SCHEMA_VERSION,
            schema=_SCHEMA,
            created_by=f"publiek {software_version()}",
            create=create,
            error=StateError,
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock, self.path, StateError)

    def _reading(self) -> contextlib.AbstractContextManager[None]:
        return reading(self._lock, self.path, StateError)

    def _loads(self, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError as err:
            raise StateError(
                f"{self.path} is damaged (a stored value is not JSON: {err}); restore it from"
                " a backup (docs/operating.md)"
            ) from err

    def _run_status(self, db: sqlite3.Connection, run_id: str) -> str:
        row = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise StateError(f"no run {run_id!r} in {self.path}")
        return str(row[0])

    def _running(self, db: sqlite3.Connection, run_id: str) -> None:
        status = self._run_status(db, run_id)
        if status != RUNNING:
            raise StateError(f"run {run_id!r} is {status}: its state is final")

    @staticmethod
    def _touch(db: sqlite3.Connection, run_id: str) -> None:
        db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (time.time(), run_id))

    # -- runs -----------------------------------------------------------------------------------

    def begin_run(self, run_id: str, plan_id: str, plan_sha256: str, plan_text: str) -> None:
        """Record a new run (status ``running``). Beginning a run that exists, is still
        running and is of the same plan is a no-op (a resumed run); anything else is refused."""
        try:
            plan = parse_plan(plan_text, "plan_text")
        except PlanError as err:
            raise StateError(f"run {run_id!r}: the plan text is not a valid plan: {err}") from err
        if plan.id != plan_id or plan.sha256 != plan_sha256:
            raise StateError(
                f"run {run_id!r}: plan id {plan_id!r} / sha256 {plan_sha256[:12]} do not belong"
                f" to the plan text given (id {plan.id!r}, sha256 {plan.sha256[:12]})"
            )
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT plan_sha256, status FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is not None:
                if row[0] == plan_sha256 and row[1] == RUNNING:
                    db.execute("UPDATE runs SET alive_at = ? WHERE run_id = ?", (now, run_id))
                    return
                raise StateError(
                    f"run {run_id!r} exists already ({row[1]}, plan sha256 {str(row[0])[:12]})"
                )
            db.execute(
                "INSERT INTO runs (run_id, plan_id, plan_sha256, plan_text, plan_analyses,"
                " status, created_at, updated_at, alive_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    plan_id,
                    plan_sha256,
                    plan_text,
                    json.dumps(list(plan.analysis_ids)),
                    RUNNING,
                    now,
                    now,
                    now,
                ),
            )

    def unfinished_run(self, plan_sha256: str) -> str | None:
        """The newest run of exactly this plan (by hash) that is still ``running``."""
        with self._reading():
            row = self._db.execute(
                "SELECT run_id FROM runs WHERE plan_sha256 = ? AND status = ?"
                " ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (plan_sha256, RUNNING),
            ).fetchone()
        return None if row is None else str(row[0])

    def heartbeat(self, run_id: str, *, alive: bool = True) -> None:
        """The coordinator running this run is alive (``alive=False``: it has stopped).

        Lets ``status`` tell a run in progress from one whose coordinator was killed or
        stopped: both are ``running`` (unfinished, resumable) in the file.
        """
        with self._transaction() as db:
            self._run_status(db, run_id)
            db.execute(
                "UPDATE runs SET alive_at = ? WHERE run_id = ?",
                (time.time() if alive else None, run_id),
            )

    def set_participants(self, run_id: str, participants: list[str]) -> None:
        """The nodes taking part. The first call wins; a later call must give the same list."""
        text = _json(list(participants), "participants")
        with self._transaction() as db:
            self._running(db, run_id)
            (current,) = db.execute(
                "SELECT participants FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if current is not None:
                if current != text:
                    raise StateError(
                        f"run {run_id!r} has participants {json.loads(current)} already;"
                        f" refusing {list(participants)}"
                    )
                return
            db.execute("UPDATE runs SET participants = ? WHERE run_id = ?", (text, run_id))
            self._touch(db, run_id)

    def participants(self, run_id: str) -> list[str] | None:
        with self._reading():
            row = self._db.execute(
                "SELECT participants FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        if row is None:
            raise StateError(f"no run {run_id!r} in {self.path}")
        return None if row[0] is None else [str(p) for p in self._loads(row[0])]

    def finish_run(self, run_id: str, status: str, release_id: str | None) -> None:
        """Make the run final: ``released`` (with its release id), ``aborted`` or ``failed``
        (without). Finishing it again the same way is a no-op; differently, an error. Its round
        checkpoints are dropped: nothing can resume a finished run."""
        if status not in FINAL_STATUSES:
            raise StateError(
                f"a run finishes as one of {', '.join(FINAL_STATUSES)}, not {status!r}"
            )
        if (status == "released") != (release_id is not None):
            raise StateError(
                "a released run needs its release id; an aborted or failed one has none"
            )
        with self._transaction() as db:
            current = self._run_status(db, run_id)
            if current != RUNNING:
                (stored_release,) = db.execute(
                    "SELECT release_id FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                if current == status and stored_release == release_id:
                    return
                raise StateError(
                    f"run {run_id!r} is {current} already"
                    + (f" (release {stored_release})" if stored_release else "")
                )
            db.execute(
                "UPDATE runs SET status = ?, release_id = ?, updated_at = ?, alive_at = NULL"
                " WHERE run_id = ?",
                (status, release_id, time.time(), run_id),
            )
            db.execute("DELETE FROM rounds WHERE run_id = ?", (run_id,))

    def runs(self) -> list[RunRecord]:
        """Every run, newest first, with its progress."""
        with self._reading():
            rows = self._db.execute(
                "SELECT run_id, plan_id, plan_sha256, status, created_at, updated_at,"
                " release_id, plan_analyses, alive_at FROM runs"
                " ORDER BY created_at DESC, rowid DESC"
            ).fetchall()
            recorded: dict[str, dict[str, str]] = {}
            for run_id, analysis_id, status in self._db.execute(
                "SELECT run_id, analysis_id, status FROM analyses"
            ):
                recorded.setdefault(run_id, {})[analysis_id] = status
        out = []
        for run_id, plan_id, sha, status, created, updated, release_id, planned, alive in rows:
            # A segmentation also records each of its rounds ("<id>/<round>"): progress counts
            # the plan's own analyses only.
            seen = {a: st for a, st in recorded.get(run_id, {}).items() if "/" not in a}
            statuses = list(seen.values())
            out.append(
                RunRecord(
                    run_id=run_id,
                    plan_id=plan_id,
                    plan_sha256=sha,
                    status=status,
                    created_at=float(created),
                    updated_at=float(updated),
                    done=statuses.count("done"),
                    failed=statuses.count("failed"),
                    total=len(set(self._loads(planned)) | set(seen)),
                    release_id=release_id,
                    alive_at=None if alive is None else float(alive),
                )
            )
        return out

    # -- analyses -------------------------------------------------------------------------------

    def _analysis_write(
        self,
        run_id: str,
        analysis_id: str,
        status: str,
        result: str | None,
        reason: str | None,
        charged: str,
    ) -> None:
        with self._transaction() as db:
            self._running(db, run_id)
            row = db.execute(
                "SELECT status, result, reason, charged FROM analyses"
                " WHERE run_id = ? AND analysis_id = ?",
                (run_id, analysis_id),
            ).fetchone()
            if row is not None:
                if tuple(row) == (status, result, reason, charged):
                    return  # the same write again: idempotent
                raise StateError(
                    f"run {run_id!r}, analysis {analysis_id!r} is {row[0]} already with a"
                    " different outcome; an analysis is recorded once"
                )
            db.execute(
                "INSERT INTO analyses (run_id, analysis_id, status, result, reason, charged,"
                " saved_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, analysis_id, status, result, reason, charged, time.time()),
            )
            self._touch(db, run_id)

    def save_analysis(self, run_id: str, analysis_id: str, result: dict[str, Any]) -> None:
        """Record a finished analysis (status ``done``). Saving the identical result again is a
        no-op; a different one (or after it failed) is an error."""
        text = _json(result, f"the result of {analysis_id!r}")
        self._analysis_write(run_id, analysis_id, "done", text, None, "[]")

    def fail_analysis(self, run_id: str, analysis_id: str, reason: str, charged: list[str]) -> None:
        """Record a failed analysis and the nodes whose budgets it was charged to regardless
        (status ``failed``). Idempotent like ``save_analysis``."""
        self._analysis_write(
            run_id, analysis_id, "failed", None, reason, _json(list(charged), "charged")
        )

    def analyses(self, run_id: str) -> dict[str, AnalysisRecord]:
        """The run's recorded analyses, in the order they were recorded."""
        with self._reading():
            self._run_status(self._db, run_id)
            rows = self._db.execute(
                "SELECT analysis_id, status, result, reason, charged FROM analyses"
                " WHERE run_id = ? ORDER BY saved_at, rowid",
                (run_id,),
            ).fetchall()
        return {
            aid: AnalysisRecord(
                analysis_id=aid,
                status=status,
                result=None if result is None else self._loads(result),
                reason=reason,
                charged=[str(c) for c in self._loads(charged)],
            )
            for aid, status, result, reason, charged in rows
        }

    # -- secure-aggregation round checkpoints ---------------------------------------------------

    def save_stage(
        self, run_id: str, analysis_id: str, round_id: str, stage: str, replies: dict[str, bytes]
    ) -> None:
        """Checkpoint one stage of the analysis's round: each node's reply as opaque bytes.

        The first stage saved starts the round (``round_id``); later stages must name the same
        round (``clear_round`` first to start another). Saving a stage again with identical
        replies is a no-op; with different replies, an error.
        """
        for node, reply in replies.items():
            if not isinstance(reply, bytes | bytearray | memoryview):
                raise StateError(f"stage {stage!r}: the reply of {node!r} is not bytes")
        now = time.time()
        with self._transaction() as db:
            self._running(db, run_id)
            row = db.execute(
                "SELECT round_id FROM rounds WHERE run_id = ? AND analysis_id = ?",
                (run_id, analysis_id),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO rounds (run_id, analysis_id, round_id, started_at)"
                    " VALUES (?, ?, ?, ?)",
                    (run_id, analysis_id, round_id, now),
                )
            elif row[0] != round_id:
                raise StateError(
                    f"run {run_id!r}, analysis {analysis_id!r}: round {row[0]!r} is in progress;"
                    f" clear it before saving stages of round {round_id!r}"
                )
            key = (run_id, analysis_id, stage)
            if db.execute(
                "SELECT 1 FROM stages WHERE run_id = ? AND analysis_id = ? AND stage = ?", key
            ).fetchone():
                saved = {
                    str(n): bytes(r)
                    for n, r in db.execute(
                        "SELECT node, reply FROM stage_replies"
                        " WHERE run_id = ? AND analysis_id = ? AND stage = ?",
                        key,
                    )
                }
                if saved == {n: bytes(r) for n, r in replies.items()}:
                    return
                raise StateError(
                    f"run {run_id!r}, analysis {analysis_id!r}: stage {stage!r} of round"
                    f" {round_id!r} is saved already with different replies"
                )
            (seq,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM stages WHERE run_id = ? AND analysis_id = ?",
                (run_id, analysis_id),
            ).fetchone()
            db.execute(
                "INSERT INTO stages (run_id, analysis_id, stage, seq, saved_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (*key, seq, now),
            )
            db.executemany(
                "INSERT INTO stage_replies (run_id, analysis_id, stage, node, ord, reply)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(*key, n, i, bytes(r)) for i, (n, r) in enumerate(replies.items())],
            )
            self._touch(db, run_id)

    def stages(self, run_id: str, analysis_id: str) -> RoundCheckpoint | None:
        """The analysis's round in progress and its saved stages; None if no round started."""
        with self._reading():
            self._run_status(self._db, run_id)
            row = self._db.execute(
                "SELECT round_id FROM rounds WHERE run_id = ? AND analysis_id = ?",
                (run_id, analysis_id),
            ).fetchone()
            if row is None:
                return None
            stages: dict[str, dict[str, bytes]] = {
                str(s): {}
                for (s,) in self._db.execute(
                    "SELECT stage FROM stages WHERE run_id = ? AND analysis_id = ? ORDER BY seq",
                    (run_id, analysis_id),
                )
            }
            for stage, node, reply in self._db.execute(
                "SELECT stage, node, reply FROM stage_replies WHERE run_id = ? AND analysis_id = ?"
                " ORDER BY stage, ord",
                (run_id, analysis_id),
            ):
                stages[str(stage)][str(node)] = bytes(reply)
        return RoundCheckpoint(round_id=str(row[0]), stages=stages)

    def clear_round(self, run_id: str, analysis_id: str) -> None:
        """Forget the analysis's round in progress (it must start over). No round: no-op."""
        with self._transaction() as db:
            self._running(db, run_id)
            deleted = db.execute(
                "DELETE FROM rounds WHERE run_id = ? AND analysis_id = ?", (run_id, analysis_id)
            ).rowcount
            if deleted:
                self._touch(db, run_id)

    # -- nodes ----------------------------------------------------------------------------------

    def record_nodes(self, nodes: list[NodeSnapshot]) -> None:
        """Upsert these nodes' snapshots (others keep their last one)."""
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO nodes (institution_id, software_version, protocol_version,"
                " capabilities, connected, connected_at, last_seen, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (institution_id) DO UPDATE SET"
                " software_version = excluded.software_version,"
                " protocol_version = excluded.protocol_version,"
                " capabilities = excluded.capabilities, connected = excluded.connected,"
                " connected_at = excluded.connected_at, last_seen = excluded.last_seen,"
                " recorded_at = excluded.recorded_at",
                [
                    (
                        n.institution_id,
                        n.software_version,
                        int(n.protocol_version),
                        json.dumps(list(n.capabilities)),
                        int(bool(n.connected)),
                        float(n.connected_at),
                        float(n.last_seen),
                        now,
                    )
                    for n in nodes
                ],
            )

    def nodes(self) -> list[NodeSnapshot]:
        """The latest snapshot of every node ever recorded, by institution id."""
        with self._reading():
            rows = self._db.execute(
                "SELECT institution_id, software_version, protocol_version, capabilities,"
                " connected, connected_at, last_seen FROM nodes ORDER BY institution_id"
            ).fetchall()
        return [
            NodeSnapshot(
                institution_id=i,
                software_version=v,
                protocol_version=int(p),
                capabilities=tuple(self._loads(c)),
                connected=bool(conn),
                connected_at=float(at),
                last_seen=float(seen),
            )
            for i, v, p, c, conn, at, seen in rows
        ]
