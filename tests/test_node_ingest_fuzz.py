"""Fuzzing the reader: whatever bytes a file holds, the node answers with a report, not a crash.

The property: ``check_source`` always returns a report, and ``load`` either returns data or
raises ``DataError`` (which the command line prints as a problem report). Any other exception
(a polars panic, a UnicodeDecodeError, an IndexError in our code) fails the test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.data import load
from node.ingest.mapping import parse_mapping
from node.ingest.pipeline import IngestSettings, check_source
from node.ingest.problems import DataError
from node.ingest.sources import file_source
from protocols.vocabulary import REQUIRED_COLUMNS
from tests.conftest import COLUMNS, ticket_row

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _read(data: bytes, suffix: str = ".csv", mapping: dict[str, object] | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"export{suffix}"
        path.write_bytes(data)
        m = parse_mapping(mapping or {})
        ingest = IngestSettings(mapping=m, max_bad_share=0.5)
        report = check_source(
            file_source(path, encoding=m.encoding, delimiter=m.delimiter), ingest
        ).report
        assert report.format()  # the report can always be printed
        source = file_source(path, encoding=m.encoding, delimiter=m.delimiter)
        if report.passed:
            loaded = load(source, ingest)
            assert loaded.table.rows == loaded.report.rows_kept
        else:
            with pytest.raises(DataError) as err:
                load(source, ingest)
            assert err.value.problems


@FUZZ
@given(st.binary(max_size=4096))
def test_any_bytes(data: bytes) -> None:
    _read(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_after_a_valid_header(data: bytes) -> None:
    _read((",".join(COLUMNS) + "\n").encode() + data)


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_as_parquet(data: bytes) -> None:
    _read(b"PAR1" + data, suffix=".parquet")


cell = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", '"', '""', ",", ";", "\n", "\r\n", "\t", "é", "\x00", "2024-02-30", "-1"]),
    st.sampled_from(list(ticket_row().values())),
)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    header = draw(st.lists(st.one_of(st.sampled_from(COLUMNS), st.text(max_size=12)), max_size=20))
    if draw(st.booleans()):
        header = list(dict.fromkeys([*REQUIRED_COLUMNS, *header]))
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    rows = draw(st.lists(st.lists(cell, max_size=len(header) + 2), max_size=25))

    def quote(v: str) -> str:
        if draw(st.booleans()) or any(c in v for c in (delimiter, '"', "\n", "\r")):
            return '"' + v.replace('"', '""' if draw(st.booleans()) else '"') + '"'
        return v

    lines = [delimiter.join(quote(h) for h in header)]
    lines += [delimiter.join(quote(v) for v in row) for row in rows]
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines)
    if draw(st.booleans()):
        text += "\n"
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "cp1252", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    mapping: dict[str, object] = {}
    if draw(st.booleans()):
        mapping = {"source": {"delimiter": delimiter}}
    return data, mapping


@FUZZ
@given(csv_files())
def test_csv_shaped_input(case: tuple[bytes, dict[str, object]]) -> None:
    data, mapping = case
    _read(data, mapping=mapping)
