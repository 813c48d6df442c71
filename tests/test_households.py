"""S8's denominators: the household table a plan names, checked before any round, used in the
release and named there (source and SHA-256); the built-in table otherwise."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import pytest

from coordinator.cli import main as coordinator_main
from coordinator.runner import RunAborted, RunSettings, run_plan
from coordinator.state import RunStateStore
from deploy.devcerts import DevPki
from protocols.households import (
    BUILT_IN,
    COUNTED_REGIONS,
    MAX_FILE_BYTES,
    HouseholdsError,
    read_households,
)
from protocols.plan import PlanError, load_plan, parse_plan
from tests.test_reach_resume import Nodes, handlers, sector, transport

__all__ = ["sector"]  # the module-scoped fixture: five synthetic institutions with match keys

SOURCE = "CBS StatLine 71486ned and Statbel, 1 January 2025 (test)"
PLAN = f"""
[plan]
id = "households-test"
min_nodes = 4
task_timeout_s = 60

[[reach]]
id = "reach"
years = [2024, 2024]
rho = "0.05"
by = ["region"]
households = "households.csv"
households_source = "{SOURCE}"
"""


def _table(rows: dict[str, int], delimiter: str = ",") -> str:
    return f"region{delimiter}households\n" + "".join(
        f"{r}{delimiter}{n}\n" for r, n in rows.items()
    )


# Round numbers far from the built-in ones, so a release that used the wrong table shows it.
GIVEN = {region: 100_000 * (i + 1) for i, region in enumerate(COUNTED_REGIONS)}


def _plan_dir(tmp_path: Path, table: str | bytes, plan: str = PLAN) -> Path:
    (tmp_path / "plan.toml").write_text(plan)
    target = tmp_path / "households.csv"
    if isinstance(table, bytes):
        target.write_bytes(table)
    else:
        target.write_text(table, encoding="utf-8")
    return tmp_path / "plan.toml"


def test_a_good_table_is_read_with_its_source_and_hash(tmp_path: Path) -> None:
    # Semicolons and a byte-order mark, as a spreadsheet saves it; one region left out.
    rows = {r: n for r, n in GIVEN.items() if r != "BE-WAL"}
    data = ("\ufeff" + _table(rows, ";")).encode("utf-8")
    (tmp_path / "h.csv").write_bytes(data)
    table = read_households(tmp_path / "h.csv", "h.csv", SOURCE)
    assert dict(table.counts) == rows
    assert table.sha256 == hashlib.sha256(data).hexdigest()
    assert table.missing == ("BE-WAL",)
    assert table.note == f"households: {SOURCE} (file h.csv, sha256 {table.sha256})"
    # The built-in table covers every Dutch and Belgian region, and says it is unchecked.
    assert BUILT_IN.missing == ()
    assert "to be checked" in BUILT_IN.note


def test_every_problem_in_a_bad_table_is_listed_at_once(tmp_path: Path) -> None:
    text = (
        "region,households\n"
        "NL-UT,600000\n"
        "NL-XX,5000\n"  # unknown region
        "NL-UT,601000\n"  # twice
        "NL-GR,308.000\n"  # a thousands separator
        "NL-FR,296\n"  # in thousands
        "NL-DR,-224000\n"  # negative
        "NL-OV\n"  # a field short
        "ABROAD,1000000\n"  # no denominator exists for abroad
    )
    path = _plan_dir(tmp_path, text)
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    message = str(caught.value)
    for expected in (
        "line 3: unknown region 'NL-XX'",
        "line 4: NL-UT is given twice",
        "line 5: NL-GR: households must be a whole number of households without separators,"
        " not '308.000'",
        "line 6: NL-FR: 296 households is outside 1,000 to 20,000,000",
        "line 7: NL-DR: households must be a whole number",
        "line 8: 1 fields, expected 2",
        "line 9: unknown region 'ABROAD'",
    ):
        assert expected in message, (expected, message)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "empty: give a header 'region,households'"),
        ("region,households\n", "no regions"),
        ("provincie;huishoudens\nNL-UT;600000\n", "the header must be 'region;households'"),
        (b"region,households\nNL-FR,296000\nFrysl\xe2n,1\n", "not UTF-8 text"),
        (b"region,households\n" + b"NL-UT,600000\n" * 6000, "larger than 64 KiB"),
    ],
    ids=["empty", "header only", "other header", "latin-1", "too large"],
)
def test_an_unreadable_table_is_refused_with_a_reason(
    tmp_path: Path, content: str | bytes, expected: str
) -> None:
    if isinstance(content, bytes) and len(content) > 1000:
        assert len(content) > MAX_FILE_BYTES
    path = _plan_dir(tmp_path, content)
    with pytest.raises(PlanError, match=re.escape("households households.csv: " + expected)):
        load_plan(path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("households_source", ""), "households_source must say where the counts"),
        (("households", ""), "households must be the path of a CSV file"),
        (("households", "missing.csv"), "households missing.csv: cannot be read"),
    ],
)
def test_a_households_field_given_wrongly_is_refused(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    field, value = change
    lines = [
        f'{field} = "{value}"' if line.startswith(f"{field} =") else line
        for line in PLAN.splitlines()
    ]
    path = _plan_dir(tmp_path, _table(GIVEN), "\n".join(lines))
    with pytest.raises(PlanError, match=expected):
        load_plan(path)


def test_a_source_without_a_file_is_refused_and_an_unread_file_is_not_run(
    sector: tuple[Nodes, DevPki], tmp_path: Path
) -> None:
    no_file = PLAN.replace('households = "households.csv"\n', "")
    with pytest.raises(PlanError, match="households_source is given without a households file"):
        parse_plan(no_file)
    # Parsed from its text alone the file is named but not read; a run refuses it before
    # any round, so no node is asked or charged.
    plan = parse_plan(PLAN)
    hs = handlers(sector, tmp_path)
    settings = RunSettings("test-coordinator", len(hs), 5, run_id="unread")
    with pytest.raises(RunAborted, match=r"household table 'households\.csv' was not read"):
        asyncio.run(run_plan(plan, transport(hs), settings, lambda _: None))
    for h in hs.values():
        assert h.ledger.entries() == []


def test_check_plan_names_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _plan_dir(tmp_path, _table({r: n for r, n in GIVEN.items() if r != "NL-ZE"}))
    assert coordinator_main(["check-plan", str(path)]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256((tmp_path / "households.csv").read_bytes()).hexdigest()
    assert f"S8 households from households.csv (sha256 {digest[:12]}): {SOURCE}" in out
    assert "no count for NL-ZE" in out


def test_the_release_divides_by_the_given_table_and_names_it(
    sector: tuple[Nodes, DevPki], tmp_path: Path
) -> None:
    # ZE left out: a region without a count gets no S8 cell, while S7 still has it.
    given = {r: n for r, n in GIVEN.items() if r != "NL-ZE"}
    plan = load_plan(_plan_dir(tmp_path, _table(given)))
    hs = handlers(sector, tmp_path)
    settings = RunSettings(
        "test-coordinator", len(hs), 5, run_id="hh", state=RunStateStore(tmp_path / "s.sqlite")
    )
    doc = asyncio.run(run_plan(plan, transport(hs), settings, lambda _: None))
    tables = {t["analysis_id"]: t for t in doc["tables"]}
    people = {c["region"]: c for c in tables["reach_people_by_region"]["cells"]}
    s8 = tables["reach_participation_per_1000_households"]
    assert s8["statistic"] == "S8"
    digest = hashlib.sha256((tmp_path / "households.csv").read_bytes()).hexdigest()
    assert s8["reach"]["note"] == f"households: {SOURCE} (file households.csv, sha256 {digest})"
    cells = {c["region"]: c for c in s8["cells"]}
    assert set(cells) == set(given)
    assert "NL-ZE" in people
    # People were reached in several regions (the check below is not about zeros only).
    assert sum(1 for r in given if people[r]["noisy_sum"] > 20) >= 3
    for region, n in given.items():
        # S8 is S7's estimate per 1,000 of the given households, up to both roundings: S7 to
        # whole people (500 / n after scaling) and S8 to hundredths (0.005). Both are reached at
        # once when the estimate is a half-integer, which the estimator's (F2 - F1) / 2 makes
        # common: 15.5 people is published as 16, and 0.155 per 1,000 as 0.15 (binary 0.155 is
        # a hair under), 0.01 apart to the last bit; hence the 1e-9.
        expected = 1000.0 * people[region]["noisy_sum"] / n
        assert cells[region]["noisy_sum"] == pytest.approx(expected, abs=0.005 + 500.0 / n + 1e-9)
        # With the built-in table the value would differ by its ratio of households.
        built_in = BUILT_IN.get(region)
        assert built_in is not None
        if people[region]["noisy_sum"] > 20 and abs(built_in - n) > 0.1 * n:
            assert cells[region]["noisy_sum"] != pytest.approx(
                1000.0 * people[region]["noisy_sum"] / built_in, rel=0.05
            )


def test_the_reader_rejects_what_it_cannot_use(tmp_path: Path) -> None:
    """Direct use (``read_households``): a clear HouseholdsError, never a traceback from csv."""
    (tmp_path / "h.csv").write_text('region,households\n"NL-UT,600000\n')
    with pytest.raises(HouseholdsError):
        read_households(tmp_path / "h.csv", "h.csv", SOURCE)
