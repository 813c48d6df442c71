"""A SQL source against a real PostgreSQL server, started for this test and thrown away after.

The server is Debian's own (``/usr/lib/postgresql/<version>/bin``; ``make test`` installs the
``postgresql`` package when it is missing and it runs as root). ``initdb`` refuses to run as
root, so as root the cluster belongs to the unprivileged user ``nobody``; it listens on a free
loopback port only, with its socket in its own folder, and is stopped and deleted afterwards.
Nothing is mocked: the node connects through SQLAlchemy and psycopg like an institution would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from node.data import load
from node.ingest.mapping import parse_mapping
from node.ingest.pipeline import IngestSettings
from node.ingest.problems import DataError
from node.ingest.sources import SqlQuery, file_source
from synthetic import SectorConfig, generate_sector
from synthetic.schema import TICKET_LINE_COLUMNS, write_ticket_line_csv
from tests.ports import unused_port

TODAY = date(2026, 11, 21)
SERVER_USER = "nobody"


def _server_binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    return found[-1].parent if found else None


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    return [runuser, "-u", SERVER_USER, "--", *argv]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bin_dir = _server_binaries()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found in /usr/lib/postgresql (make test installs"
            " the Debian 'postgresql' package when run as root)"
        )
    folder = Path(tempfile.mkdtemp(prefix="publiek-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, SERVER_USER)
        shutil.chown(sockets, SERVER_USER)
    port = unused_port()
    log = folder / "server.log"
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    try:
        subprocess.run(
            _as_server_user(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "publiek", "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--no-instructions"]
            ),
            **run,  # type: ignore[call-overload]
        )  # fmt: skip
        options = (
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c synchronous_commit=off"
        )
        subprocess.run(
            _as_server_user(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
                 "-w", "-t", "60", "start"]
            ),
            **run,  # type: ignore[call-overload]
        )  # fmt: skip
    except subprocess.CalledProcessError as err:
        detail = (err.stderr or "") + (log.read_text() if log.exists() else "")
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start a throw-away PostgreSQL server: {detail[-2000:]}")
    try:
        yield f"postgresql+psycopg://publiek@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tickets() -> pl.DataFrame:
    sector = generate_sector(SectorConfig(n_institutions=1, seed=4, years=(2024, 2024), scale=0.02))
    return sector.tickets(sector.institutions[0].institution_id).head(2000)


def _fill(url: str, frame: pl.DataFrame, table: str) -> None:
    import sqlalchemy

    types: dict[type[pl.DataType], str] = {
        pl.String: "text",
        pl.Float64: "numeric(10, 2)",
        pl.Int64: "integer",
        pl.Boolean: "boolean",
    }

    def sql_type(dtype: pl.DataType) -> str:
        return "timestamp" if isinstance(dtype, pl.Datetime) else types[dtype.base_type()]

    columns = ", ".join(f'"{c}" {sql_type(frame.schema[c])}' for c in frame.columns)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(sqlalchemy.text(f"CREATE TABLE {table} ({columns})"))
        names = ", ".join(f'"{c}"' for c in frame.columns)
        marks = ", ".join(f":{c}" for c in frame.columns)
        conn.execute(
            sqlalchemy.text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), frame.to_dicts()
        )
    engine.dispose()


def test_postgres_query_reads_like_the_csv_export(
    postgres_url: str, tickets: pl.DataFrame, tmp_path: Path
) -> None:
    csv = tmp_path / "t.csv"
    write_ticket_line_csv(tickets, csv)
    reference = load(file_source(csv), IngestSettings(today=TODAY))
    _fill(postgres_url, tickets.select(TICKET_LINE_COLUMNS), "ticket_export")
    loaded = load(
        SqlQuery(postgres_url, "SELECT * FROM ticket_export"), IngestSettings(today=TODAY)
    )
    assert loaded.report.rows_read == tickets.height and loaded.report.quarantined == 0
    for ours, theirs in (
        (reference.table.frame, loaded.table.frame),
        (reference.table.customers, loaded.table.customers),
    ):
        assert_frame_equal(ours.sort(ours.columns), theirs.sort(theirs.columns))
    assert_frame_equal(
        reference.features.frame, loaded.features.frame, check_exact=False, rel_tol=1e-12
    )


def test_postgres_view_with_house_names_and_bad_rows(
    postgres_url: str, tickets: pl.DataFrame
) -> None:
    frame = tickets.select(TICKET_LINE_COLUMNS).with_columns(
        pl.when(pl.int_range(pl.len()) == 7)
        .then(-12.5)
        .otherwise(pl.col("price_paid_eur"))
        .alias("price_paid_eur")
    )
    _fill(postgres_url, frame, "verkoop")
    query = "SELECT ticket_id AS ticketnummer, * FROM verkoop ORDER BY ticket_id"
    mapping = parse_mapping({"columns": {"ticket_id": "ticketnummer"}})
    loaded = load(SqlQuery(postgres_url, query), IngestSettings(mapping=mapping, today=TODAY))
    assert loaded.report.quarantined == 1
    problem = loaded.report.problems.row(0, named=True)
    assert problem["kind"] == "negative price" and "'-12.50' is negative" in problem["message"]
    assert loaded.report.source.startswith("SQL postgresql+psycopg://publiek@127.0.0.1:")


def test_postgres_errors_are_reported_not_raised(postgres_url: str) -> None:
    with pytest.raises(DataError, match='relation "nothing_here" does not exist'):
        load(SqlQuery(postgres_url, "SELECT * FROM nothing_here"), IngestSettings(today=TODAY))
