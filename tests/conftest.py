"""Shared fixtures: small canonical ticket files written to real temporary folders."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from node.policy import Policy
from protocols.messages import ReleaseMode
from protocols.vocabulary import REQUIRED_COLUMNS

# Property tests check behaviour, not speed (benchmarks do that): Hypothesis's default 200 ms
# deadline per example only turns a stall of a loaded CI machine into a failure.
settings.register_profile("publiek", deadline=None)
settings.load_profile("publiek")

# Nodes accept only secure aggregation unless they opt in; tests of open mode opt in.
OPEN_POLICY = Policy(allowed_modes=frozenset({ReleaseMode.OPEN}))

COLUMNS = [*REQUIRED_COLUMNS, "postcode", "country", "email", "birth_year"]


def num(value: object) -> float:
    """A polars scalar (typed as any Python literal) as the number a test compares."""
    assert isinstance(value, int | float), f"expected a number, got {value!r}"
    return float(value)


def ticket_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ticket_id": "T1",
        "order_id": "O1",
        "customer_id": "C1",
        "order_datetime": "2024-01-02T10:00:00",
        "order_status": "paid",
        "channel": "online_own",
        "performance_id": "P1",
        "performance_start": "2024-02-15T20:00:00",
        "venue_id": "V1",
        "discipline": "toneel",
        "price_type": "full",
        "price_paid_eur": "25.00",
        "postcode": "1012 AB",
        "country": "NL",
        "email": "someone@example.nl",
        "birth_year": "1970",
    }
    row.update(overrides)
    return row


def write_tickets(
    path: Path, rows: Iterable[dict[str, Any]], columns: list[str] | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = columns or COLUMNS
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow(r)
    return path


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """CLI tests run ``main()`` in-process, and it sets up the root logger for the whole
    process; give every test the root logger as it found it, so no test logs through another's
    handlers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def tickets_file(tmp_path: Path) -> Callable[..., Path]:
    def make(rows: Iterable[dict[str, Any]], name: str = "ticket_line.csv", **kw: Any) -> Path:
        return write_tickets(tmp_path / name, rows, **kw)

    return make
