"""``publiek-node init`` and ``check`` on the ways exports write dates (review 5, defect 2).

init's date guess must agree with what check reads: a zone suffix or a mix of ISO variants
needs no pattern, a pattern with a zone offset reads local times (never an internal error),
and no split of the sample between patterns may crash the guess. Each test writes a real
export, runs the command line in this process and then reads the data as the node would.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from node.cli import main as node_main
from node.ingest.mapping import Mapping, load_mapping
from node.ingest.pipeline import IngestSettings, ingest
from node.ingest.sources import file_source
from node.ingest.starter import guess_date_format
from tests.conftest import COLUMNS, ticket_row, write_tickets

TODAY = date(2026, 11, 21)
ALARMS = ("could not recognise", "written differently", "internal error")


def init(export: Path, capsys: Any) -> tuple[str, Path]:
    """``publiek-node init`` beside the export: (what it said, the mapping it wrote)."""
    mapping = export.with_suffix(".toml")
    argv = ["init", str(export), "--mapping-out", str(mapping)]
    code = node_main([*argv, "--config-out", str(export.with_name("node.toml")), "--force"])
    said = capsys.readouterr()
    assert code == 0, said.err
    return said.out, mapping


def check(capsys: Any, *args: str | Path) -> tuple[int, str]:
    code = node_main(["check", *map(str, args)])
    said = capsys.readouterr()
    assert "internal error" not in said.err
    return code, said.out


def lines(export: Path, mapping: Path | None = None) -> pl.DataFrame:
    chosen = load_mapping(mapping) if mapping is not None else Mapping()
    settings = IngestSettings(mapping=chosen, today=TODAY)
    return ingest(file_source(export), settings).lines


def dated(n: int, order: list[str], start: list[str]) -> list[dict[str, Any]]:
    """``n`` ticket rows whose dates cycle through ``order`` and ``start``."""
    return [
        ticket_row(
            ticket_id=f"T{i}",
            order_id=f"O{i}",
            customer_id=f"C{i % 7}",
            order_datetime=order[i % len(order)],
            performance_start=start[i % len(start)],
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("order", "start"),
    [
        (["2024-01-14T11:00:00+01:00"], ["2024-02-14T20:00:00+01:00", "2024-06-14T20:00:00+02:00"]),
        (["2024-01-14T10:00:00Z"], ["2024-02-14T19:00:00Z"]),
        (["2024-02-07 20:15", "2024-02-07 20:15:00"], ["2024-03-01 20:00", "2024-03-01 20:00:00"]),
        (["2024-02-07T20:15:00", "2024-02-07 20:15:00"], ["2024-03-01T20:00", "2024-03-01"]),
    ],
    ids=["offset", "utc-z", "with-and-without-seconds", "t-space-and-date-only"],
)
def test_iso_dates_with_a_zone_or_mixed_variants_need_no_pattern(
    tmp_path: Path, capsys: Any, order: list[str], start: list[str]
) -> None:
    export = write_tickets(tmp_path / "t.csv", dated(30, order, start))
    said, mapping = init(export, capsys)
    assert not [alarm for alarm in ALARMS if alarm in said], said
    text = mapping.read_text(encoding="utf-8")
    assert '\n# datetime = "%d-%m-%Y %H:%M"\n' in text and "\ndatetime =" not in text
    assert load_mapping(mapping).datetime_format is None  # ISO, as check reads it
    code, out = check(capsys, export, "--mapping", mapping)
    assert code == 0, out
    assert "30 usable, 0 quarantined (0.00%; limit 1.00%); 0 warning(s)" in out


@pytest.mark.parametrize(
    "pattern", ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%:z", "%Y-%m-%dT%H:%M:%S%#z", "%+"]
)
def test_a_pattern_with_a_zone_offset_reads_local_times(
    tmp_path: Path, capsys: Any, pattern: str
) -> None:
    """What init used to advise for '+01:00' dates ended check in "internal error"."""
    # UTC, winter and summer offsets, and a Z (which polars' %z alone does not read).
    written = [
        "2024-01-14T10:00:00+00:00",
        "2024-01-14T11:00:00+01:00",
        "2024-07-14T18:00:00Z",
        "2024-07-14T20:00:00+0200",
        "2024-07-14T14:00:00-04:00",
    ]
    rows = dated(250, written, ["2024-12-31T23:30:00Z"])
    rows.append(ticket_row(ticket_id="NO-ZONE", order_datetime="2024-07-14T20:00:00"))
    export = write_tickets(tmp_path / "t.csv", rows)
    mapping = tmp_path / "m.toml"
    mapping.write_text(f'[formats]\ndatetime = "{pattern}"\n', encoding="utf-8")
    code, out = check(capsys, export, "--mapping", mapping)
    assert code == 0, out
    assert "250 usable, 1 quarantined" in out  # the value without an offset, named:
    assert f"'2024-07-14T20:00:00' is not a date-time in the format '{pattern}'" in out
    # Every moment as the wall clock in Amsterdam: 11:00 in January, 20:00 in July (CEST),
    # and 23:30 UTC on New Year's Eve is already 2025 there.
    got = lines(export, mapping)
    assert got.schema["order_datetime"] == pl.Datetime("us")  # naive, like every other path
    assert sorted(set(got["order_datetime"].to_list())) == [
        datetime(2024, 1, 14, 11, 0),
        datetime(2024, 7, 14, 20, 0),
    ]
    assert set(got["performance_start"].to_list()) == {datetime(2025, 1, 1, 0, 30)}


def test_a_pattern_with_a_zone_name_reads_the_time_as_written(tmp_path: Path, capsys: Any) -> None:
    """polars reads %Z and drops it (no zone-aware result): the time is taken as local. (A
    numeric offset is converted, with %z or without a pattern: see the next test.)"""
    rows = dated(30, ["2024-01-14 11:00 CET"], ["2024-07-14 20:00 CEST"])
    export = write_tickets(tmp_path / "t.csv", rows)
    mapping = tmp_path / "m.toml"
    mapping.write_text('[formats]\ndatetime = "%Y-%m-%d %H:%M %Z"\n', encoding="utf-8")
    code, out = check(capsys, export, "--mapping", mapping)
    assert code == 0, out
    got = lines(export, mapping)
    assert set(got["order_datetime"].to_list()) == {datetime(2024, 1, 14, 11, 0)}
    assert set(got["performance_start"].to_list()) == {datetime(2024, 7, 14, 20, 0)}


def test_a_column_split_evenly_between_iso_and_day_first_is_guessed_without_a_crash(
    tmp_path: Path, capsys: Any
) -> None:
    """Both patterns read half and together all of it: init used to raise IndexError."""
    rows = dated(500, ["2024-02-07 20:15", "07-02-2024 20:15"], ["2024-03-01 20:00"])
    export = write_tickets(tmp_path / "t.csv", rows)
    said, mapping = init(export, capsys)
    assert "could not recognise" not in said
    assert load_mapping(mapping).datetime_format is None  # a tie goes to ISO, check's default
    code, out = check(capsys, export, "--mapping", mapping)
    assert code == 1  # the other half is named, with the pattern that reads it
    assert "order_datetime: '07-02-2024 20:15' is not an ISO date-time" in out
    assert "for values like '07-02-2024 20:15' set datetime = \"%d-%m-%Y %H:%M\"" in out
    # check's date hint runs the same guess on the unread values: here one ISO and one
    # day-first value, a tie again, under a pattern that reads neither.
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[formats]\ndatetime = "%d/%m/%Y %H:%M"\n', encoding="utf-8")
    code, out = check(capsys, export, "--mapping", wrong)
    assert code == 1
    assert "[formats] datetime in the mapping is '%d/%m/%Y %H:%M', which does not read" in out


def test_no_split_of_the_sample_between_patterns_crashes_the_guess() -> None:
    """Every mix of ISO, day-first, two-digit-year and unreadable values, up to six of them."""
    kinds = ["2024-02-07 20:15", "07-02-2024 20:15", "07-02-24 20:15", "morgen", "2024-02-07Z"]
    seen: set[tuple[str | None, bool]] = set()
    for n in range(1, 7):
        for mix in itertools.combinations_with_replacement(kinds, n):
            for two_digit_years in (True, False):
                guess = guess_date_format(pl.Series(mix), two_digit_years)
                if guess.unrecognised is not None:
                    assert guess.unrecognised in mix
                seen.add((guess.format, guess.unrecognised is None))
    # The loop reached ISO, a day-first pattern and "unrecognised" (it is not vacuous).
    assert {(None, True), ("%d-%m-%Y %H:%M", True)} <= seen
    assert any(not recognised for _, recognised in seen)


@pytest.mark.parametrize(
    ("born", "pattern"),
    [
        ("1970-05-17 00:00:00", None),
        ("1970-05-17T00:00:00+02:00", None),
        (" 1970-05-17 ", None),
        ("17-05-1970 00:00", "%d-%m-%Y %H:%M"),
        ("17.05.1970", "%d.%m.%Y"),
    ],
)
def test_birth_dates_init_calls_readable_are_read(
    tmp_path: Path, capsys: Any, born: str, pattern: str | None
) -> None:
    """init's guess said ISO for '1970-05-17 00:00:00' and check then read no birth date; for
    '17-05-1970 00:00' it wrote the pattern '%d-%m-%Y', which reads none of them either."""
    columns = [c for c in COLUMNS if c != "birth_year"] + ["geboortedatum"]
    rows = [dict(r, geboortedatum=born) for r in dated(30, ["2024-01-02 10:00"], ["2024-03-01"])]
    export = write_tickets(tmp_path / "t.csv", rows, columns=columns)
    said, mapping = init(export, capsys)
    assert not [alarm for alarm in ALARMS if alarm in said], said
    assert load_mapping(mapping).birth_date_format == pattern
    code, out = check(capsys, export, "--mapping", mapping)
    assert code == 0, out
    assert "0 quarantined (0.00%; limit 1.00%); 0 warning(s)" in out  # no "not a birth year"
    homes = ingest(file_source(export), IngestSettings(mapping=load_mapping(mapping), today=TODAY))
    assert set(homes.homes["birth_year"].to_list()) == {1970}


def test_typed_zone_aware_dates_in_parquet_need_no_pattern(tmp_path: Path, capsys: Any) -> None:
    """init looked at the text of a zone-aware timestamp ('... 20:00:00.000000+01:00')."""
    frame = pl.DataFrame(dated(30, ["2024-01-02T10:00:00"], ["2024-07-15T20:00:00"]))
    frame = frame.with_columns(
        pl.col("order_datetime", "performance_start")
        .str.to_datetime()
        .dt.replace_time_zone("Europe/Amsterdam")
    )
    export = tmp_path / "t.parquet"
    frame.write_parquet(export)
    said, mapping = init(export, capsys)
    assert not [alarm for alarm in ALARMS if alarm in said], said
    assert load_mapping(mapping).datetime_format is None
    code, out = check(capsys, export, "--mapping", mapping)
    assert code == 0, out
    assert set(lines(export, mapping)["performance_start"].to_list()) == {
        datetime(2024, 7, 15, 20, 0)
    }


def test_iso_dates_with_an_offset_and_no_pattern_are_converted_like_a_zone_pattern(
    tmp_path: Path, capsys: Any
) -> None:
    """Without a pattern, 19:00Z is 20:00 in Amsterdam in winter, as with %z: one reading of a
    written offset whichever way the export is read (they differed: the zone was dropped)."""
    rows = dated(30, ["2024-01-14T19:00:00Z"], ["2023-12-31T23:30:00+00:00"])
    export = write_tickets(tmp_path / "t.csv", rows)
    code, out = check(capsys, export)
    assert code == 0, out
    got = lines(export)
    assert set(got["order_datetime"].to_list()) == {datetime(2024, 1, 14, 20, 0)}
    assert set(got["performance_start"].to_list()) == {datetime(2024, 1, 1, 0, 30)}
