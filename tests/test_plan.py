"""Plans: the example and the demo plan are valid; a bad plan reports every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy.budget import Rho
from protocols.plan import EXAMPLE, PlanError, load_plan, parse_plan

REPO = Path(__file__).resolve().parent.parent


def test_example_plan_is_valid() -> None:
    plan = parse_plan(EXAMPLE)
    [a] = plan.analyses
    assert a.query.n_cells == 15 * 4
    assert plan.rho_per_node == Rho.parse("0.1")


def test_demo_plans_are_valid() -> None:
    assert load_plan(REPO / "deploy" / "plans" / "s1-demo.toml").mode.value == "secure"
    assert load_plan(REPO / "deploy" / "plans" / "s1-open.toml").mode.value == "open"


def test_secure_is_the_default_and_open_must_be_asked_for() -> None:
    assert parse_plan(EXAMPLE.replace('mode = "secure"', "")).mode.value == "secure"


BAD = """
[plan]
id = "Bad Id"
mode = "whatever"
min_nodes = 0

[[analysis]]
id = "a"
statistic = "S1"
measure = "emails"
dimensions = ["discipline", "shoe_size"]
max_cells = 0
max_per_cell = 8
rho = "-1"

[[analysis]]
id = "a"
statistic = "S1"
measure = "tickets"
dimensions = ["discipline"]
max_cells = 1
max_per_cell = 1
rho = "0.1"
"""


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(PlanError) as err:
        parse_plan(BAD)
    text = "\n".join(err.value.problems)
    for expected in (
        "plan.id",
        "plan.mode",
        "min_nodes",
        "measure must be one of",
        "shoe_size",
        "max_cells",
        "non-negative",
        "id is used twice",
    ):
        assert expected in text, expected
    assert len(err.value.problems) >= 8


@pytest.mark.parametrize(
    "text",
    ["", "not toml [", "[plan]\nid='x'\nmode='open'\n"],
    ids=["empty", "broken", "no-analysis"],
)
def test_unusable_plans_fail_clearly(text: str) -> None:
    with pytest.raises(PlanError):
        parse_plan(text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="file not found"):
        load_plan(tmp_path / "nope.toml")


def test_a_plan_can_pick_some_keys_of_a_dimension() -> None:
    text = EXAMPLE.replace(
        'dimensions = ["discipline", "quarter"]',
        'dimensions = ["price_type"]\nkeys = { price_type = ["full", "youth", "senior"] }',
    )
    [a] = parse_plan(text).analyses
    assert a.query.dimensions[0].keys == ("full", "youth", "senior")
    bad = EXAMPLE.replace(
        'dimensions = ["discipline", "quarter"]',
        'dimensions = ["price_type"]\nkeys = { price_type = ["gratis"], channel = ["phone"] }',
    )
    with pytest.raises(PlanError) as err:
        parse_plan(bad)
    text = "\n".join(err.value.problems)
    assert "not in its public set: ['gratis']" in text
    assert "keys.channel names a dimension the analysis does not have" in text


def test_bookers_must_be_bounded_at_one_per_cell() -> None:
    # A booker is counted once per cell by the node; a larger bound only adds noise.
    bookers = EXAMPLE.replace('measure = "tickets"', 'measure = "bookers"')
    assert 'measure = "bookers"' in bookers
    with pytest.raises(PlanError, match="max_per_cell must be 1, not 8"):
        parse_plan(bookers)
    [a] = parse_plan(bookers.replace("max_per_cell = 8", "max_per_cell = 1")).analyses
    assert a.query.bound.l2_sensitivity == pytest.approx(a.query.bound.max_cells**0.5)
