"""The release store on real SQLite files: immutable (also against raw SQL), versioned per plan,
found by id, plan@version or plan, and exported to CSV, JSON and Parquet with exactly the
stored numbers; exports never overwrite; bad files are refused by name."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from coordinator import release
from coordinator.aggregate import AggregatedTable
from coordinator.release import build_release, table_csv, write_release
from coordinator.state import RunStateStore
from coordinator.store import (
    ExportExists,
    ReleaseExists,
    ReleaseNotFound,
    ReleaseStore,
    StoreError,
    document_text,
)
from coordinator.transport import NodeInfo
from protocols.plan import Plan, parse_plan

REPO = Path(__file__).resolve().parent.parent

# A real plan with two analyses (two tables of different shapes).
PLAN_TEXT = """\
[plan]
id = "{id}"
title = "Store test: {id}"
min_nodes = 3

[[analysis]]
id = "s1_tickets_discipline_quarter"
title = "Tickets by discipline and quarter"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline", "quarter"]
years = [2024, 2024]
max_cells = 8
max_per_cell = 32
rho = "0.1"

[[analysis]]
id = "s1_tickets_discipline"
title = "Tickets by discipline"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
years = [2024, 2024]
max_cells = 2
max_per_cell = 16
rho = "0.05"
"""


def plan(plan_id: str = "store-test") -> Plan:
    return parse_plan(PLAN_TEXT.format(id=plan_id))


def make_release(p: Plan, n: int) -> dict[str, Any]:
    """A release built by the real build_release; the sums are awkward on purpose (negative
    noisy sums that clamp, large values, odd float scales)."""
    tables = []
    for k, analysis in enumerate(p.analyses):
        cells = analysis.query.n_cells
        sums = tuple(((i * 7919 + n * 104729 + k) % 20011) - 3000 for i in range(cells))
        tables.append(
            AggregatedTable(
                analysis=analysis,
                contributors=("inst-01", "inst-02", "inst-03"),
                excluded=(("inst-04", "refused: over its budget cap"),),
                sums=sums,
                per_node_scale=52.25 + n / 3,
                sd_total=90.49723756906077 + k,
                half_width_95=177.37213 + n,
                secure_round={"n_min": 3, "survivors": 3},
            )
        )
    nodes = [NodeInfo(f"inst-0{i}", "0.1.0", 1, ("histogram",), f"s{i}", 1.7e9) for i in (1, 2, 3)]
    return build_release(
        plan=p,
        run_id=f"{p.id}-run-{n}",
        coordinator_id="test-coordinator",
        participants=nodes,
        tables=tables,
        failed=[],
        created_at=datetime(2026, 11, 1, 12, 0, tzinfo=UTC) + timedelta(minutes=n),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReleaseStore]:
    with ReleaseStore(tmp_path / "releases.sqlite") as s:
        yield s


def test_versions_per_plan_and_every_way_to_find_a_release(store: ReleaseStore) -> None:
    a1, a2 = make_release(plan("plan-a"), 1), make_release(plan("plan-a"), 2)
    b1 = make_release(plan("plan-b"), 3)
    stored = [store.put(d) for d in (a1, b1, a2)]
    assert [(s.plan_id, s.version) for s in stored] == [("plan-a", 1), ("plan-b", 1), ("plan-a", 2)]
    assert stored[2].ref == "plan-a@2"

    assert store.get(a1["release_id"]).ref == "plan-a@1"
    assert store.get("plan-a@1").release_id == a1["release_id"]
    assert store.get("plan-a@2").release_id == a2["release_id"]
    assert store.get("plan-a").release_id == a2["release_id"]  # the latest
    assert store.get("plan-b").release_id == b1["release_id"]

    got = store.get("plan-a@1")
    assert got.document() == a1
    assert got.title == "Store test: plan-a"
    assert got.run_id == "plan-a-run-1"
    assert got.created_at == a1["created_at"]
    assert got.plan_sha256 == plan("plan-a").sha256
    assert (got.n_tables, got.n_participants, got.mode) == (2, 3, "secure")

    assert [r.ref for r in store.list()] == ["plan-a@1", "plan-b@1", "plan-a@2"]


def test_the_stored_text_is_the_release_json_byte_for_byte(
    store: ReleaseStore, tmp_path: Path
) -> None:
    doc = make_release(plan(), 1)
    written = write_release(doc, tmp_path / "out")
    stored = store.put(doc)
    assert stored.text == (tmp_path / "out" / "release.json").read_text(encoding="utf-8")
    assert stored.text == document_text(doc)
    assert len(written) == 3


def test_a_release_is_stored_once(store: ReleaseStore) -> None:
    doc = make_release(plan(), 1)
    store.put(doc)
    with pytest.raises(ReleaseExists, match=r"already stored as store-test@1"):
        store.put(doc)
    # The same exception the file writer uses, so callers handle both alike.
    with pytest.raises(release.ReleaseExists):
        store.put(doc)
    assert [r.version for r in store.list()] == [1]


def test_a_document_changed_after_it_was_built_is_refused(store: ReleaseStore) -> None:
    doc = make_release(plan(), 1)
    doc["tables"][0]["cells"][0]["noisy_sum"] += 1
    with pytest.raises(StoreError, match="does not match its content"):
        store.put(doc)
    with pytest.raises(StoreError, match=r"no plan\.id"):
        store.put({"release_id": "rel-x", "plan": {}})
    assert store.list() == []


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE releases SET title = 'edited'",
        "UPDATE releases SET document = replace(document, '\"noisy_sum\": 1', '\"noisy_sum\": 2')",
        "UPDATE releases SET version = 7",
        "DELETE FROM releases",
        "INSERT OR REPLACE INTO releases SELECT * FROM releases",
        "REPLACE INTO releases SELECT * FROM releases",
        "INSERT INTO releases SELECT * FROM releases WHERE true"
        " ON CONFLICT DO UPDATE SET title = 'edited'",
    ],
)
def test_raw_sql_cannot_change_or_delete_a_release(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "releases.sqlite"
    with ReleaseStore(path) as s:
        doc = make_release(plan(), 1)
        s.put(doc)
    raw = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="releases are immutable"):
            raw.execute(sql)
        raw.commit()
    finally:
        raw.close()
    with ReleaseStore(path) as s:
        assert s.get("store-test@1").document() == doc
        assert [r.title for r in s.list()] == ["Store test: store-test"]


def test_a_damaged_text_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "releases.sqlite"
    with ReleaseStore(path) as s:
        s.put(make_release(plan(), 1))
    # Someone who drops the triggers can edit; the hash stored alongside still tells.
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER releases_are_immutable_update")
    raw.execute("UPDATE releases SET document = replace(document, 'Store test', 'Edited')")
    raw.commit()
    raw.close()
    with ReleaseStore(path) as s, pytest.raises(StoreError, match="is damaged"):
        s.get("store-test")


def test_unknown_releases_are_named(store: ReleaseStore) -> None:
    store.put(make_release(plan(), 1))
    for ref in ("rel-0000000000000000", "other-plan", "store-test@2"):
        with pytest.raises(ReleaseNotFound, match="publiek-coordinator releases"):
            store.get(ref)
    with pytest.raises(ReleaseNotFound, match="must be a number"):
        store.get("store-test@latest")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def columns(table: dict[str, Any]) -> list[str]:
    return next(csv.reader(table_csv(table).splitlines()))


def test_csv_export_holds_the_stored_numbers(store: ReleaseStore, tmp_path: Path) -> None:
    doc = make_release(plan(), 1)
    store.put(doc)
    paths = store.export("store-test@1", "csv", tmp_path / "csv")
    assert [p.name for p in paths] == [
        "s1_tickets_discipline_quarter.csv",
        "s1_tickets_discipline.csv",
    ]
    for table, path in zip(doc["tables"], paths, strict=True):
        # Byte for byte what the coordinator wrote next to release.json ...
        assert path.read_text(encoding="utf-8") == table_csv(table)
        # ... and, read back, every cell's values exactly.
        rows = read_csv(path)
        dims = [d["name"] for d in table["dimensions"]]
        assert list(rows[0]) == columns(table)
        assert columns(table)[: len(dims)] == dims
        assert {"estimate", "ci95_low", "ci95_high", "noisy_sum"} <= set(columns(table))
        assert len(rows) == len(table["cells"])
        for row, cell in zip(rows, table["cells"], strict=True):
            for c in columns(table):
                value = cell[c]
                assert row[c] == ("" if value is None else str(value)), (c, row, cell)
    cells = [c for t in doc["tables"] for c in t["cells"]]
    # The awkward cases were exercised: negative noisy sums, suppressed and shown estimates.
    assert any(c["noisy_sum"] < 0 for c in cells)
    assert any(c["estimate"] is None for c in cells)
    assert any(isinstance(c["estimate"], int) and c["estimate"] > 1000 for c in cells)


def test_json_export_is_the_document(store: ReleaseStore, tmp_path: Path) -> None:
    doc = make_release(plan(), 1)
    stored = store.put(doc)
    [path] = store.export(doc["release_id"], "json", tmp_path / "sub" / "r.json")
    assert path.read_text(encoding="utf-8") == stored.text
    assert json.loads(path.read_text(encoding="utf-8")) == doc


def test_parquet_export_is_typed_and_exact(store: ReleaseStore, tmp_path: Path) -> None:
    doc = make_release(plan(), 1)
    store.put(doc)
    paths = store.export("store-test", "parquet", tmp_path / "pq")
    for table, path in zip(doc["tables"], paths, strict=True):
        frame = pl.read_parquet(path)
        dims = [d["name"] for d in table["dimensions"]]
        assert frame.columns == columns(table)
        types = dict(frame.schema)
        assert [types.pop(d) for d in dims] == [pl.String] * len(dims)
        assert types == {
            "estimate": pl.Int64,
            "ci95_low": pl.Int64,
            "ci95_high": pl.Int64,
            "noisy_sum": pl.Int64,
            "suppressed": pl.Boolean,
        }
        # Every value exactly; a suppressed estimate is a null, not a zero.
        assert frame.to_dicts() == [{c: cell[c] for c in frame.columns} for cell in table["cells"]]
        meta = pl.read_parquet_metadata(path)
        assert meta["publiek.release_id"] == doc["release_id"]
        assert meta["publiek.release"] == "store-test@1"
        assert meta["publiek.analysis_id"] == table["analysis_id"]
        assert json.loads(meta["publiek.interval"]) == table["interval"]


@pytest.mark.parametrize(("fmt", "dest"), [("csv", "out"), ("parquet", "out"), ("json", "r.json")])
def test_exports_never_overwrite(store: ReleaseStore, tmp_path: Path, fmt: Any, dest: str) -> None:
    store.put(make_release(plan(), 1))
    target = tmp_path / dest
    first = store.export("store-test", fmt, target)
    before = {p: p.read_bytes() for p in first}
    with pytest.raises(ExportExists, match="never overwrite"):
        store.export("store-test", fmt, target)
    assert {p: p.read_bytes() for p in first} == before


def test_a_refused_export_writes_nothing(store: ReleaseStore, tmp_path: Path) -> None:
    store.put(make_release(plan(), 1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "s1_tickets_discipline.csv").write_text("someone else's file\n")
    with pytest.raises(ExportExists, match=r"s1_tickets_discipline\.csv"):
        store.export("store-test", "csv", out)
    assert sorted(p.name for p in out.iterdir()) == ["s1_tickets_discipline.csv"]
    assert (out / "s1_tickets_discipline.csv").read_text() == "someone else's file\n"
    with pytest.raises(ExportExists, match="not a folder"):
        store.export("store-test", "parquet", out / "s1_tickets_discipline.csv")


def test_files_that_are_not_a_release_store_are_refused_by_name(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a database, just some text " * 20)
    with pytest.raises(StoreError, match=r"notes\.txt is not a publiek release store: it is not"):
        ReleaseStore(text)
    assert text.read_text().startswith("this is not")

    other = tmp_path / "other.sqlite"
    raw = sqlite3.connect(other)
    raw.execute("CREATE TABLE customers (id INTEGER)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match=r"SQLite database of something else.*customers"):
        ReleaseStore(other)
    raw = sqlite3.connect(other)
    tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    raw.close()
    assert tables == ["customers"]  # nothing of ours was added to someone else's file

    state = tmp_path / "state.sqlite"
    RunStateStore(state).close()
    with pytest.raises(StoreError, match="it is a publiek coordinator run-state file"):
        ReleaseStore(state)

    with pytest.raises(StoreError, match=r"missing\.sqlite does not exist"):
        ReleaseStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()


def test_a_store_from_a_newer_publiek_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "releases.sqlite"
    ReleaseStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match=r"written by a newer publiek.*reads schema 1"):
        ReleaseStore(path)


CONCURRENT_PUT = """
import sys
from coordinator.store import ReleaseStore
from tests.test_store import make_release, plan
with ReleaseStore(__import__("pathlib").Path(sys.argv[1])) as s:
    for n in range(int(sys.argv[2]), int(sys.argv[2]) + 3):
        s.put(make_release(plan(), n))
"""


def test_concurrent_coordinators_get_distinct_versions(tmp_path: Path) -> None:
    path = tmp_path / "releases.sqlite"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_PUT, str(path), str(10 * k)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with ReleaseStore(path) as s:
        listed = s.list()
    assert sorted(r.version for r in listed) == list(range(1, 13))
    assert len({r.release_id for r in listed}) == 12
