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


# --- strict parsing: nothing in a plan is ignored or rounded -------------------------------------

ANALYSIS_KEYS = (
    "expected: dimensions, id, keys, max_cells, max_per_cell, measure, rho, statistic, title,"
    " years)"
)
PLAN_KEYS = (
    "expected: degree, delta, id, min_nodes, mode, suppress_below, task_timeout_s, threshold,"
    " title)"
)
WHERE = "analysis 's1_tickets_discipline_quarter'"
SEGMENTATION = """
[[segmentation]]
id = "s12"
k = 4
epsilon = 1.0
[[segmentation.table]]
by = "region"
rho = "0.01"
"""
REACH = """
[[reach]]
id = "reach"
rho = "0.05"
by = ["sector"]
"""


def _changed(old: str, new: str, text: str = EXAMPLE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The review's case: a misspelt `keys` left the whole key set, the social tariff
        # included, in a table meant to leave it out.
        (
            _changed('rho = "0.1"', 'rho = "0.1"\nkey = { discipline = ["toneel", "dans"] }'),
            f"{WHERE}: unknown key 'key' (did you mean 'keys'? {ANALYSIS_KEYS}",
        ),
        (
            _changed("min_nodes = 3", "min_node = 10"),
            f"[plan]: unknown key 'min_node' (did you mean 'min_nodes'? {PLAN_KEYS}",
        ),
        (
            _changed("task_timeout_s = 120", "tasktimeout = 5"),
            f"[plan]: unknown key 'tasktimeout' (did you mean 'task_timeout_s'? {PLAN_KEYS}",
        ),
        (
            _changed("task_timeout_s = 120", 'colour = "red"'),
            f"[plan]: unknown key 'colour' ({PLAN_KEYS}",
        ),
        (
            _changed("[[analysis]]", "[[analyses]]"),
            "plan file: unknown section or key 'analyses' (did you mean 'analysis'? expected:"
            " analysis, plan, reach, segmentation)",
        ),
        (
            "min_nodes = 3\n" + EXAMPLE,
            "plan file: unknown section or key 'min_nodes' (it belongs in [plan]; expected:"
            " analysis, plan, reach, segmentation)",
        ),
        # A plan setting written after [[analysis]] lands in the analysis (TOML's rule).
        (
            EXAMPLE + "suppress_below = 2\n",
            f"{WHERE}: unknown key 'suppress_below' (it belongs in [plan]; {ANALYSIS_KEYS}",
        ),
        (
            _changed('rho = "0.1"', 'rho = "0.1"\ncolour = "red"'),
            f"{WHERE}: unknown key 'colour' ({ANALYSIS_KEYS}",
        ),
        (
            _changed('statistic = "S1"', 'statistic = "S13"'),
            f"{WHERE}: statistic must be one of S1, S2, S3, S4, S5, S6 (docs/statistics.md),"
            ' not "S13"',
        ),
        (
            _changed('statistic = "S1"', "statistic = 1"),
            f"{WHERE}: statistic must be one of S1, S2, S3, S4, S5, S6 (docs/statistics.md), not 1",
        ),
        (
            _changed('statistic = "S1"', 'statistic = "S7"'),
            f"{WHERE}: statistic S7 (sector and regional reach (distinct people)) counts distinct"
            " people across institutions and comes from a [[reach]] section; an [[analysis]]"
            " sums each institution's own counts: S1, S2, S3, S4, S5, S6",
        ),
        (
            _changed('statistic = "S1"', 'statistic = "S12"'),
            "comes from a [[segmentation]] section",
        ),
        (
            _changed('statistic = "S1"', 'statistic = "S11"'),
            "needs people matched across institutions, which no plan section computes yet",
        ),
        # int() truncated these: the noise followed a bound the operator did not write.
        (
            _changed("max_per_cell = 8", "max_per_cell = 100.5"),
            f"{WHERE}: max_per_cell must be a whole number (what one customer may add to a"
            " cell), not 100.5",
        ),
        (
            _changed("max_per_cell = 8", "max_per_cell = 8.0"),
            f"{WHERE}: max_per_cell must be a whole number (what one customer may add to a"
            " cell), not 8.0",
        ),
        (
            _changed("max_cells = 4", "max_cells = true"),
            f"{WHERE}: max_cells must be a whole number (cells one customer may touch), not true",
        ),
        (
            _changed("max_cells = 4", 'max_cells = "4"'),
            f'{WHERE}: max_cells must be a whole number (cells one customer may touch), not "4"',
        ),
        (
            _changed("max_cells = 4", ""),
            f"{WHERE}: max_cells is missing (a whole number: cells one customer may touch)",
        ),
        (
            _changed("years = [2024, 2024]", "years = [2024.0, 2024]"),
            f"{WHERE}: years must be [first, last] with 1990 <= first <= last <= 2100",
        ),
        (
            _changed("min_nodes = 3", "min_nodes = true"),
            "plan.min_nodes must be a whole number of at least 1",
        ),
        (
            _changed("min_nodes = 3", "min_nodes = 2.5"),
            "plan.min_nodes must be a whole number of at least 1",
        ),
        (
            _changed("# degree = 8", "degree = true"),
            "plan.degree must be a whole number of at least 1",
        ),
        (
            _changed("task_timeout_s = 120", "task_timeout_s = true"),
            "plan.task_timeout_s must be between 1 and 86400 seconds",
        ),
        (
            _changed("suppress_below = 1.0", "suppress_below = false"),
            "plan.suppress_below must be a number of half-widths between 0 and 10",
        ),
        (
            _changed('title = "Tickets by discipline and quarter, 2024"', "title = 2024"),
            "plan.title must be text (in quotes)",
        ),
        (
            _changed('title = "Tickets by discipline and quarter"', "title = 1"),
            f"{WHERE}: title must be text (in quotes)",
        ),
        (
            _changed(
                'dimensions = ["discipline", "quarter"]',
                'dimensions = ["price_type"]\nkeys = { price_typ = ["full", "youth"] }',
            ),
            f"{WHERE}: keys.price_typ names a dimension the analysis does not have"
            " (did you mean 'price_type'?)",
        ),
        (
            _changed('measure = "tickets"', 'measure = "ticket"'),
            f"{WHERE}: measure must be one of tickets, visits, orders, bookers, revenue_cents"
            " (did you mean 'tickets'?)",
        ),
        (
            _changed("[[analysis]]", "[analysis]"),
            "analyses must be written [[analysis]] (a list of tables), not [analysis]",
        ),
        (
            _changed("[plan]", "[[plan]]"),
            "plan must be one [plan] table",
        ),
        (
            EXAMPLE + SEGMENTATION.replace("k = 4", "k = 4\nmax_loyd_rounds = 3"),
            "segmentation 's12': unknown key 'max_loyd_rounds' (did you mean"
            " 'max_lloyd_rounds'? expected: as_of, epsilon, id, k, max_depth, max_lloyd_rounds,"
            " model, rho, table, title, years)",
        ),
        (
            EXAMPLE + SEGMENTATION.replace('by = "region"', 'by = "region"\nmax_cell = 2'),
            "segmentation 's12', table #1: unknown key 'max_cell' (did you mean 'max_cells'?"
            " expected: by, max_cells, rho)",
        ),
        (
            EXAMPLE + SEGMENTATION.replace("k = 4", "k = 4.0"),
            "segmentation 's12': k must be a whole number from 2 to 64",
        ),
        (
            EXAMPLE + SEGMENTATION.replace("[[segmentation]]", "[segmentation]"),
            "segmentation must be written [[segmentation]] (a list of tables), not [segmentation]",
        ),
        (
            EXAMPLE + SEGMENTATION.replace("[[segmentation.table]]", "[segmentation.table]"),
            "segmentation 's12': its tables must be written [[segmentation.table]] (a list of"
            " tables), not [segmentation.table]",
        ),
        (
            EXAMPLE + REACH.replace('by = ["sector"]', 'bye = ["sector"]'),
            "reach 'reach': unknown key 'bye' (did you mean 'by'? expected: buckets, by,"
            " epsilon, households, households_source, id, max_disciplines, rho, sector_copies,"
            " split, title, years)",
        ),
        (
            EXAMPLE + REACH.replace('id = "reach"', 'id = "reach"\ntitle = true'),
            "reach 'reach': title must be text (in quotes)",
        ),
    ],
)
def test_a_key_or_value_the_plan_does_not_take_is_refused_clearly(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coordinator.cli import main as coordinator_main

    with pytest.raises(PlanError) as err:
        parse_plan(text)
    # The message is one of the listed problems, each on a line of its own under the source.
    problem = next((p for p in err.value.problems if message in p), None)
    assert problem is not None, str(err.value)
    assert str(err.value).startswith("plan: ") and f"\n  - {problem}" in str(err.value)

    # Nothing runs: `run` stops at the plan, before its state, store, port or release exist.
    plan = tmp_path / "plan.toml"
    plan.write_text(text)
    files = {name: tmp_path / name for name in ("state.sqlite", "releases.sqlite", "port", "out")}
    code = coordinator_main(
        [
            "run",
            str(plan),
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--out",
            str(files["out"]),
            "--state",
            str(files["state.sqlite"]),
            "--store",
            str(files["releases.sqlite"]),
            "--port-file",
            str(files["port"]),
        ]
    )
    out, err_text = capsys.readouterr()
    assert code == 2
    assert f"publiek-coordinator: {plan}: " in err_text and message in err_text
    assert "Traceback" not in err_text and "listening" not in out
    assert not any(f.exists() for f in files.values())


def test_the_reviews_broken_plan_lists_every_problem_at_once() -> None:
    text = """\
[plan]
id = "s2-prices"
min_node = 10
colour = "red"

[[analysis]]
id = "s2_price_type"
statistic = "S13"
measure = "tickets"
dimensions = ["price_type"]
key = { price_type = ["full", "youth", "senior", "group"] }
max_cells = 1
max_per_cell = 100.5
rho = "0.1"
"""
    with pytest.raises(PlanError) as err:
        parse_plan(text, "broken.toml")
    where = "analysis 's2_price_type'"
    assert str(err.value) == (
        "broken.toml: 5 problem(s)\n"
        f"  - [plan]: unknown key 'min_node' (did you mean 'min_nodes'? {PLAN_KEYS}\n"
        f"  - [plan]: unknown key 'colour' ({PLAN_KEYS}\n"
        f"  - {where}: unknown key 'key' (did you mean 'keys'? {ANALYSIS_KEYS}\n"
        f"  - {where}: statistic must be one of S1, S2, S3, S4, S5, S6 (docs/statistics.md),"
        ' not "S13"\n'
        f"  - {where}: max_per_cell must be a whole number (what one customer may add to a"
        " cell), not 100.5"
    )
    # Fixed as meant, it parses, and the social tariff stays out.
    fixed = (
        text.replace("min_node =", "min_nodes =")
        .replace('colour = "red"\n', "")
        .replace('"S13"', '"S2"')
        .replace("key =", "keys =")
        .replace("100.5", "100")
    )
    plan = parse_plan(fixed)
    assert plan.min_nodes == 10
    assert plan.analyses[0].query.dimensions[0].keys == ("full", "youth", "senior", "group")


DEPLOYED_PLANS = sorted(p for p in (REPO / "deploy").glob("**/*.toml") if "[plan]" in p.read_text())


@pytest.mark.parametrize("path", DEPLOYED_PLANS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_plan_in_deploy_still_parses(path: Path) -> None:
    assert load_plan(path).analysis_ids


def test_the_deployed_plans_are_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in DEPLOYED_PLANS}
    assert {"deploy/plans/sector-2024.toml", "deploy/compose/plan.toml"} <= names
