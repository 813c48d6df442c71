"""Reading ticket lines: identifiers are gone after loading; problems are all reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from node.data import DataError, load_ticket_lines
from tests.conftest import COLUMNS, ticket_row


def test_loaded_table_holds_no_identifiers(tickets_file: Callable[..., Path]) -> None:
    path = tickets_file([ticket_row(ticket_id=f"T{i}", customer_id=f"C{i % 3}") for i in range(9)])
    table = load_ticket_lines(path)
    assert set(table.frame.columns) == {
        "unit",
        "has_account",
        "order",
        "performance",
        "order_status",
        "channel",
        "discipline",
        "price_type",
        "year",
        "quarter",
        "region",
        "price_cents",
        "lead_time_band",
        "order_size_band",
    }
    assert set(table.customers.columns) == {
        "unit",
        "year",
        "frequency_band",
        "returning",
        "age_band",
        "distance_band",
    }
    assert table.frame["unit"].n_unique() == 3
    assert table.frame["quarter"].unique().to_list() == ["2024Q1"]
    assert table.frame["region"].unique().to_list() == ["NL-NH"]  # 1012 AB is Amsterdam


def test_anonymous_buyers_are_one_unit_per_order(tickets_file: Callable[..., Path]) -> None:
    rows = [ticket_row(ticket_id=f"T{i}", customer_id="", order_id=f"O{i // 2}") for i in range(6)]
    table = load_ticket_lines(tickets_file(rows))
    assert table.frame["unit"].n_unique() == 3


@pytest.mark.parametrize(
    ("postcode", "country", "region"),
    [
        ("2000", "BE", "BE-VAN"),
        ("9711 AB", "NL", "NL-GR"),
        ("", "NL", "UNKNOWN"),
        ("75001", "FR", "ABROAD"),
        ("1000", "BE", "BE-BRU"),
        ("4000", "BE", "BE-WAL"),
    ],
)
def test_region_from_postcode(
    tickets_file: Callable[..., Path], postcode: str, country: str, region: str
) -> None:
    table = load_ticket_lines(tickets_file([ticket_row(postcode=postcode, country=country)]))
    assert table.frame["region"].to_list() == [region]


def test_every_problem_is_reported(tickets_file: Callable[..., Path]) -> None:
    rows = [
        ticket_row(ticket_id="T1", discipline="opera"),
        ticket_row(ticket_id="T1", order_status="maybe"),
        ticket_row(ticket_id="T2", performance_start="yesterday"),
    ]
    with pytest.raises(DataError) as err:
        load_ticket_lines(tickets_file(rows))
    text = "\n".join(err.value.problems)
    assert "'opera'" in text and "'maybe'" in text
    assert "duplicate ticket_id" in text
    assert "not an ISO date-time" in text


def test_missing_columns_are_named(tickets_file: Callable[..., Path]) -> None:
    cols = [c for c in COLUMNS if c not in ("discipline", "customer_id")]
    with pytest.raises(DataError) as err:
        load_ticket_lines(tickets_file([ticket_row()], columns=cols))
    assert err.value.problems == [
        "required column 'customer_id' is missing",
        "required column 'discipline' is missing",
    ]


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_ticket_lines(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError):
        load_ticket_lines(tmp_path / "empty.csv")
