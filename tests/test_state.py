"""The coordinator's run state on real SQLite files: round trips, idempotency, conflicting
writes refused, bad files refused by name, and crash safety (a writer killed with SIGKILL,
also in the middle of a commit, leaves a consistent file with every write that returned)."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coordinator.state import (
    AnalysisRecord,
    NodeSnapshot,
    RoundCheckpoint,
    RunStateStore,
    StateError,
)
from coordinator.store import ReleaseStore
from protocols.plan import Plan, parse_plan

REPO = Path(__file__).resolve().parent.parent

PLAN_TEXT = """\
[plan]
id = "{id}"
min_nodes = 3
{analyses}
"""
ANALYSIS = """
[[analysis]]
id = "{id}"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
max_cells = 2
max_per_cell = 8
rho = "0.01"
"""


def plan(plan_id: str = "state-test", n: int = 3) -> Plan:
    analyses = "".join(ANALYSIS.format(id=f"a{i}") for i in range(n))
    return parse_plan(PLAN_TEXT.format(id=plan_id, analyses=analyses))


def begin(state: RunStateStore, run_id: str, p: Plan | None = None) -> Plan:
    p = p or plan()
    state.begin_run(run_id, p.id, p.sha256, p.source_text)
    return p


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite"


@pytest.fixture
def state(path: Path) -> Iterator[RunStateStore]:
    with RunStateStore(path) as s:
        yield s


def test_a_run_from_begin_to_release_survives_reopening(state: RunStateStore, path: Path) -> None:
    p = begin(state, "run-1")
    [rec] = state.runs()
    assert (rec.run_id, rec.plan_id, rec.plan_sha256, rec.status) == (
        "run-1",
        "state-test",
        p.sha256,
        "running",
    )
    assert (rec.done, rec.failed, rec.total, rec.release_id) == (0, 0, 3, None)
    assert rec.created_at <= rec.updated_at <= time.time()
    assert state.participants("run-1") is None

    state.set_participants("run-1", ["inst-02", "inst-01", "inst-03"])
    result = {"sums": [1, -2, 3], "scale": 52.25, "nested": {"k": ["x", None, True]}}
    state.save_analysis("run-1", "a0", result)
    state.fail_analysis("run-1", "a1", "too few nodes answered", ["inst-01", "inst-03"])

    with RunStateStore(path) as again:  # a new connection: what is on disk
        assert again.participants("run-1") == ["inst-02", "inst-01", "inst-03"]
        assert again.analyses("run-1") == {
            "a0": AnalysisRecord("a0", "done", result, None, []),
            "a1": AnalysisRecord(
                "a1", "failed", None, "too few nodes answered", ["inst-01", "inst-03"]
            ),
        }
        [rec] = again.runs()
        assert (rec.done, rec.failed, rec.total) == (1, 1, 3)
        again.finish_run("run-1", "released", "rel-0123456789abcdef")
    [rec] = state.runs()
    assert (rec.status, rec.release_id, rec.alive_at) == ("released", "rel-0123456789abcdef", None)


def test_total_counts_analyses_recorded_beyond_the_plan(state: RunStateStore) -> None:
    begin(state, "run-1", plan(n=2))
    state.save_analysis("run-1", "a0", {"v": 1})
    state.save_analysis("run-1", "extra", {"v": 2})
    [rec] = state.runs()
    assert (rec.done, rec.total) == (2, 3)


def test_saving_is_idempotent_and_conflicts_are_refused(state: RunStateStore) -> None:
    begin(state, "run-1")
    state.save_analysis("run-1", "a0", {"b": 2, "a": [1, 2]})
    state.save_analysis("run-1", "a0", {"a": [1, 2], "b": 2})  # the same, keys in another order
    with pytest.raises(StateError, match="'a0' is done already with a different outcome"):
        state.save_analysis("run-1", "a0", {"a": [1, 2], "b": 3})
    with pytest.raises(StateError, match="is done already"):
        state.fail_analysis("run-1", "a0", "late failure", [])
    state.fail_analysis("run-1", "a1", "why", ["inst-01"])
    state.fail_analysis("run-1", "a1", "why", ["inst-01"])
    with pytest.raises(StateError, match="is failed already"):
        state.fail_analysis("run-1", "a1", "why", ["inst-02"])
    with pytest.raises(StateError, match="is failed already"):
        state.save_analysis("run-1", "a1", {"a": 1})
    assert list(state.analyses("run-1")) == ["a0", "a1"]


@pytest.mark.parametrize("bad", [{"x": {1, 2}}, {"x": math.nan}, {"x": b"bytes"}])
def test_results_must_be_plain_json(state: RunStateStore, bad: dict[str, object]) -> None:
    begin(state, "run-1")
    with pytest.raises(StateError, match="not plain JSON"):
        state.save_analysis("run-1", "a0", bad)
    assert state.analyses("run-1") == {}


def test_participants_first_call_wins(state: RunStateStore) -> None:
    begin(state, "run-1")
    state.set_participants("run-1", ["inst-01", "inst-02"])
    state.set_participants("run-1", ["inst-01", "inst-02"])
    with pytest.raises(StateError, match="has participants"):
        state.set_participants("run-1", ["inst-01", "inst-02", "inst-03"])
    with pytest.raises(StateError, match="has participants"):
        state.set_participants("run-1", ["inst-02", "inst-01"])
    assert state.participants("run-1") == ["inst-01", "inst-02"]


def test_unfinished_run_is_the_newest_running_run_of_that_exact_plan(state: RunStateStore) -> None:
    p, other = plan(), plan("other-plan")
    assert state.unfinished_run(p.sha256) is None
    begin(state, "old", p)
    begin(state, "new", p)
    begin(state, "elsewhere", other)
    assert state.unfinished_run(p.sha256) == "new"
    state.finish_run("new", "aborted", None)
    assert state.unfinished_run(p.sha256) == "old"
    state.finish_run("old", "failed", None)
    assert state.unfinished_run(p.sha256) is None
    assert state.unfinished_run(other.sha256) == "elsewhere"
    # The same plan with one character changed is another plan.
    edited = parse_plan(p.source_text + "\n")
    assert state.unfinished_run(edited.sha256) is None
    assert [r.run_id for r in state.runs()] == ["elsewhere", "new", "old"]  # newest first


def test_begin_run_again_resumes_or_refuses(state: RunStateStore) -> None:
    p = begin(state, "run-1")
    begin(state, "run-1", p)  # resuming: a no-op
    assert len(state.runs()) == 1
    with pytest.raises(StateError, match="exists already"):
        begin(state, "run-1", plan("other-plan"))
    state.finish_run("run-1", "aborted", None)
    with pytest.raises(StateError, match="exists already"):
        begin(state, "run-1", p)


def test_begin_run_checks_the_plan(state: RunStateStore) -> None:
    p = plan()
    with pytest.raises(StateError, match="not a valid plan"):
        state.begin_run("run-1", "x", "0" * 64, "[plan]\nid = 'x'\n")
    with pytest.raises(StateError, match="do not belong to the plan text"):
        state.begin_run("run-1", p.id, "0" * 64, p.source_text)
    with pytest.raises(StateError, match="do not belong to the plan text"):
        state.begin_run("run-1", "another-id", p.sha256, p.source_text)
    assert state.runs() == []


def test_finish_run_rules(state: RunStateStore) -> None:
    begin(state, "run-1")
    with pytest.raises(StateError, match="not 'done'"):
        state.finish_run("run-1", "done", None)
    with pytest.raises(StateError, match="needs its release id"):
        state.finish_run("run-1", "released", None)
    with pytest.raises(StateError, match="needs its release id"):
        state.finish_run("run-1", "aborted", "rel-x")
    state.finish_run("run-1", "released", "rel-x")
    state.finish_run("run-1", "released", "rel-x")  # idempotent
    with pytest.raises(StateError, match=r"is released already \(release rel-x\)"):
        state.finish_run("run-1", "aborted", None)
    # A finished run is final.
    writes: list[Callable[[], object]] = [
        lambda: state.save_analysis("run-1", "a0", {}),
        lambda: state.fail_analysis("run-1", "a0", "x", []),
        lambda: state.set_participants("run-1", ["inst-01"]),
        lambda: state.save_stage("run-1", "a0", "r1", "setup", {}),
        lambda: state.clear_round("run-1", "a0"),
    ]
    for write in writes:
        with pytest.raises(StateError, match="'run-1' is released: its state is final"):
            write()


def test_unknown_runs_are_named(state: RunStateStore, path: Path) -> None:
    calls: list[Callable[[], object]] = [
        lambda: state.participants("nope"),
        lambda: state.analyses("nope"),
        lambda: state.stages("nope", "a0"),
        lambda: state.save_analysis("nope", "a0", {}),
        lambda: state.finish_run("nope", "aborted", None),
        lambda: state.heartbeat("nope"),
    ]
    for call in calls:
        with pytest.raises(StateError, match=f"no run 'nope' in {path}"):
            call()


def test_stage_checkpoints(state: RunStateStore, path: Path) -> None:
    begin(state, "run-1")
    assert state.stages("run-1", "a0") is None
    every_byte = bytes(range(256))
    state.save_stage("run-1", "a0", "round-1", "setup", {"inst-02": b"\x00", "inst-01": b""})
    state.save_stage("run-1", "a0", "round-1", "share_keys", {"inst-01": every_byte})
    state.save_stage("run-1", "a0", "round-1", "masked_input", {"inst-03": b"m" * 100_000})
    state.save_stage("run-1", "a1", "round-9", "setup", {"inst-01": b"other analysis"})
    expected = RoundCheckpoint(
        "round-1",
        {
            "setup": {"inst-02": b"\x00", "inst-01": b""},
            "share_keys": {"inst-01": every_byte},
            "masked_input": {"inst-03": b"m" * 100_000},
        },
    )
    with RunStateStore(path) as again:
        got = again.stages("run-1", "a0")
    assert got == expected
    assert got is not None
    assert list(got.stages) == ["setup", "share_keys", "masked_input"]  # order saved
    assert list(got.stages["setup"]) == ["inst-02", "inst-01"]  # order given

    # The same stage again: fine if identical, refused if not.
    state.save_stage("run-1", "a0", "round-1", "setup", {"inst-01": b"", "inst-02": b"\x00"})
    with pytest.raises(StateError, match="saved already with different replies"):
        state.save_stage("run-1", "a0", "round-1", "setup", {"inst-01": b"x", "inst-02": b"\x00"})
    with pytest.raises(StateError, match="round 'round-1' is in progress"):
        state.save_stage("run-1", "a0", "round-2", "setup", {})
    with pytest.raises(StateError, match="not bytes"):
        state.save_stage("run-1", "a0", "round-1", "unmask", {"inst-01": "text"})  # type: ignore[dict-item]

    state.clear_round("run-1", "a0")
    state.clear_round("run-1", "a0")  # nothing to clear: fine
    assert state.stages("run-1", "a0") is None
    state.save_stage("run-1", "a0", "round-2", "setup", {"inst-01": b"fresh"})
    assert state.stages("run-1", "a0") == RoundCheckpoint(
        "round-2", {"setup": {"inst-01": b"fresh"}}
    )
    assert state.stages("run-1", "a1") == RoundCheckpoint(
        "round-9", {"setup": {"inst-01": b"other analysis"}}
    )

    # A finished run cannot be resumed: its checkpoints go.
    state.finish_run("run-1", "aborted", None)
    assert state.stages("run-1", "a0") is None
    raw = sqlite3.connect(path)
    counts = [
        raw.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("rounds", "stages", "stage_replies")
    ]
    raw.close()
    assert counts == [0, 0, 0]


def test_nodes_and_heartbeat(state: RunStateStore, path: Path) -> None:
    a = NodeSnapshot("inst-01", "0.1.0", 1, ("histogram", "secagg"), True, 1000.5, 1010.25)
    b = NodeSnapshot("inst-02", "0.1.1", 1, (), False, 900.0, 950.0)
    state.record_nodes([b, a])
    assert state.nodes() == [a, b]
    a2 = NodeSnapshot("inst-01", "0.2.0", 2, ("histogram",), False, 1000.5, 1020.0)
    state.record_nodes([a2])
    with RunStateStore(path) as again:
        assert again.nodes() == [a2, b]

    begin(state, "run-1")
    state.heartbeat("run-1", alive=False)
    assert state.runs()[0].alive_at is None
    state.heartbeat("run-1")
    alive = state.runs()[0].alive_at
    assert alive is not None and abs(alive - time.time()) < 5


# -- bad files -------------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "publiek-state.sqlite"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(
        StateError,
        match=rf"{bad} is not a publiek coordinator run-state file: it is not an SQLite database",
    ):
        RunStateStore(bad)


def read_everything(path: Path) -> None:
    with RunStateStore(path) as s:
        s.runs()
        s.analyses("run-1")


@pytest.mark.parametrize("damage", ["truncated", "page at 10%", "page at 50%", "page at 90%"])
def test_a_damaged_state_file_is_refused_by_name(path: Path, tmp_path: Path, damage: str) -> None:
    with RunStateStore(path) as s:
        begin(s, "run-1")
        for i in range(20):
            s.save_analysis("run-1", f"a{i}", {"v": list(range(2000))})
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        at = len(data) * int(damage.split()[-1].rstrip("%")) // 100 // 4096 * 4096
        data[at : at + 4096] = b"\xff" * 4096
    bad = tmp_path / "damaged.sqlite"
    bad.write_bytes(bytes(data))
    # Where SQLite notices depends on which page is bad: opening or reading. Either way it is
    # one clear error that names the file, never an sqlite3 exception.
    with pytest.raises(StateError, match=rf"{bad} is damaged .*restore it from a backup"):
        read_everything(bad)


def test_foreign_and_newer_files_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "releases.sqlite"
    ReleaseStore(store).close()
    with pytest.raises(
        StateError,
        match="is not a publiek coordinator run-state file: it is a publiek release store",
    ):
        RunStateStore(store)

    # A node's ledger: an SQLite file of something else, left untouched.
    ledger = tmp_path / "ledger.sqlite"
    raw = sqlite3.connect(ledger)
    raw.execute("CREATE TABLE ledger_meta (key TEXT, value TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(StateError, match="of something else"):
        RunStateStore(ledger)

    newer = tmp_path / "newer.sqlite"
    RunStateStore(newer).close()
    raw = sqlite3.connect(newer)
    raw.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(
        StateError, match=r"newer publiek \(schema 3\); this publiek-coordinator reads schema 1"
    ):
        RunStateStore(newer)

    with pytest.raises(StateError, match="does not exist"):
        RunStateStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(StateError, match="is a folder"):
        RunStateStore(tmp_path)


def test_the_file_is_in_wal_mode_with_a_schema_version(path: Path) -> None:
    RunStateStore(path).close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(raw.execute("SELECT key, value FROM meta").fetchall())
    finally:
        raw.close()
    assert meta["format"] == "publiek.coordinator.state"
    assert meta["schema_version"] == "1"


# -- crash safety ----------------------------------------------------------------------------

# The writer: announces each write on stdout only after the call has returned. With
# KILL_AT_COMMIT=n it kills itself inside the n-th transaction, between the row being written
# and the COMMIT, the worst moment for a file.
WRITER = """
import os, signal, sys
from pathlib import Path
from coordinator.state import NodeSnapshot, RunStateStore
from tests.test_state import plan

state = RunStateStore(Path(sys.argv[1]))
kill_at = int(os.environ.get("KILL_AT_COMMIT", "0"))
commits = 0

def trace(sql):
    global commits
    if sql == "COMMIT":
        commits += 1
        if commits == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

state._db.set_trace_callback(trace)
p = plan(n=1)
state.begin_run("run-1", p.id, p.sha256, p.source_text)
print("begun", flush=True)
i = 0
while True:
    state.save_analysis("run-1", f"a{i}", {"i": i, "values": list(range(i % 50))})
    state.save_stage("run-1", f"a{i}", "round", "setup", {"n1": bytes([i % 256]) * 1000})
    state.record_nodes([NodeSnapshot("n1", "v", 1, (), True, 0.0, float(i))])
    print(i, flush=True)
    i += 1
"""


def writer(path: Path, kill_at: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KILL_AT_COMMIT": str(kill_at)},
    )


def check_consistent(path: Path, completed: int) -> None:
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        raw.close()
    with RunStateStore(path) as s:
        records = s.analyses("run-1")
        # Every write that returned is there; the one in flight may or may not be, but whole.
        assert len(records) in (completed, completed + 1)
        for i in range(len(records)):
            assert records[f"a{i}"].result == {"i": i, "values": list(range(i % 50))}
        for i in range(completed):
            assert s.stages("run-1", f"a{i}") == RoundCheckpoint(
                "round", {"setup": {"n1": bytes([i % 256]) * 1000}}
            )
        if completed:
            assert s.nodes()[0].last_seen >= completed - 1
        # And the file takes new writes.
        s.save_analysis("run-1", "after-restart", {"ok": True})


def test_sigkill_while_writing_loses_nothing_that_returned(path: Path) -> None:
    proc = writer(path)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "begun"
    completed = 0
    for line in proc.stdout:
        completed = int(line) + 1
        if completed >= 25:
            break
    proc.send_signal(signal.SIGKILL)
    # The writer does not wait for us: it may have finished more writes before the signal
    # landed. What it printed after line 24 is still in the pipe, and says how many returned.
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    printed = [int(x) for x in rest.split()]
    if printed:
        completed = printed[-1] + 1
    check_consistent(path, completed)


@pytest.mark.parametrize("kill_at", [2, 5, 9])
def test_sigkill_inside_a_commit(path: Path, kill_at: int) -> None:
    # Commits: 1 begin_run, then three per loop (analysis, stage, nodes).
    proc = writer(path, kill_at)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    assert "Traceback" not in err
    lines = out.split()
    assert lines[0] == "begun"
    completed = len(lines) - 1
    assert completed == (kill_at - 2) // 3
    check_consistent(path, completed)
    with RunStateStore(path) as s:
        # The write being committed when the process died is not there at all.
        if (kill_at - 2) % 3 == 0:  # killed committing save_analysis
            assert f"a{completed}" not in s.analyses("run-1")
        elif (kill_at - 2) % 3 == 1:  # killed committing save_stage
            assert f"a{completed}" in s.analyses("run-1")
            assert s.stages("run-1", f"a{completed}") is None


def test_status_can_read_while_a_coordinator_writes(path: Path) -> None:
    proc = writer(path)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "begun"
        seen = []
        for _ in range(5):
            with RunStateStore(path, create=False) as reader:
                seen.append(reader.runs()[0].done)
            time.sleep(0.05)
        assert seen == sorted(seen)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
