"""check-plan warns about what every node with the default policy would refuse.

A plan can be valid and still be refused by every node that kept node/policy.py's defaults (a
run of min_nodes = 1, the social tariff, a task over the rho cap, open mode); the operator should
learn that from check-plan, not from a failed run. coordinator/ does not import node/, so
check-plan states the defaults itself: these tests hold them to node.policy.Policy() and to the
node's own verdict, task by task, so the two cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.cli import (
    DEFAULT_POLICY_MAX_CELLS,
    DEFAULT_POLICY_MAX_RHO_PER_TASK,
    DEFAULT_POLICY_MIN_N_MIN,
    DEFAULT_POLICY_MODES,
    SOCIAL_TARIFF_KEY,
    default_policy_refusals,
)
from coordinator.cli import main as coordinator_main
from node.policy import SENSITIVE_PRICE_TYPE, Policy
from node.segment_preview import preview_segmentation
from privacy.budget import Rho
from protocols.messages import MAX_CELLS, ReleaseMode
from protocols.plan import EXAMPLE, Plan, PlanError, load_plan, parse_plan

REPO = Path(__file__).resolve().parent.parent
PLANS = REPO / "deploy" / "plans"
WARNING = "warning: every node with the default policy will refuse "
SOCIAL = EXAMPLE.replace(
    'dimensions = ["discipline", "quarter"]', 'dimensions = ["price_type"]'
).replace("max_cells = 4", "max_cells = 2")
SEGMENTATION = """
[[segmentation]]
id = "s12"
k = 4
epsilon = {epsilon}
[[segmentation.table]]
by = "region"
rho = "{table_rho}"
"""
REACH = """
[[reach]]
id = "reach"
rho = "{rho}"
by = ["sector", "region"]
"""


def _changed(old: str, new: str, text: str = EXAMPLE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_the_stated_defaults_are_the_nodes() -> None:
    default = Policy()
    assert default.allowed_modes == DEFAULT_POLICY_MODES
    assert default.min_n_min == DEFAULT_POLICY_MIN_N_MIN
    assert default.max_rho_per_task == DEFAULT_POLICY_MAX_RHO_PER_TASK
    assert default.max_cells == DEFAULT_POLICY_MAX_CELLS
    assert SENSITIVE_PRICE_TYPE == SOCIAL_TARIFF_KEY and not default.allow_social_tariff
    # The rules check-plan does not state refuse nothing by default; a new default limit in
    # node/policy.py must be stated in check-plan too, and this fails until it is.
    assert default.allowed_statistics is None and default.allowed_measures is None
    assert default.max_rho_per_run is None and default.max_contribution is None


def test_a_table_over_the_default_cells_is_an_error_already() -> None:
    # The default max_cells is the protocol's own cap, which the plan parser enforces: such a
    # plan never reaches the warnings.
    assert DEFAULT_POLICY_MAX_CELLS == MAX_CELLS
    text = _changed(
        'dimensions = ["discipline", "quarter"]\nyears = [2024, 2024]',
        'dimensions = ["discipline", "quarter", "region", "age_band"]\nyears = [2000, 2024]',
    )
    with pytest.raises(PlanError, match=r"the table has 189000 cells \(at most 100000\)"):
        parse_plan(text)


def _node_refusals(plan: Plan) -> dict[str, list[str]]:
    """What node.policy.Policy() refuses, task by task, as a node checks it before a charge."""
    policy = Policy()
    out: dict[str, list[str]] = {}
    for a in plan.analyses:
        n_min = plan.min_nodes if a.query.mode is ReleaseMode.SECURE else None
        out[f"analysis {a.id!r}"] = policy.reasons(a.query, n_min=n_min)
    for seg in plan.segmentations:
        preview = preview_segmentation(
            seg, policy, plan.min_nodes, plan.delta, Rho.zero(), seg.total_rho
        )
        out[f"segmentation {seg.id!r}"] = list(preview.refusals)
    for reach in plan.reaches:
        for by in reach.run_order:
            query = reach.query(by, "check")
            out[f"reach {reach.id!r}, round by {by}"] = policy.reasons(query, n_min=plan.min_nodes)
    return out


CASES = {
    "demo": (PLANS / "s1-demo.toml").read_text(),
    "sector": (PLANS / "sector-2024.toml").read_text(),
    "open": (PLANS / "s1-open.toml").read_text(),
    "n_min 1": (PLANS / "s1-demo.toml").read_text().replace("min_nodes = 10", "min_nodes = 1"),
    "social": SOCIAL,
    "social left out": _changed(
        "rho =", 'keys = { price_type = ["full", "youth"] }\nrho =', SOCIAL
    ),
    "rho at the cap": _changed('rho = "0.1"', 'rho = "0.5"'),
    "rho over the cap": _changed('rho = "0.1"', 'rho = "0.5000001"'),
    "segmentation fit": EXAMPLE + SEGMENTATION.format(epsilon=40.0, table_rho="0.01"),
    "segmentation modest": EXAMPLE + SEGMENTATION.format(epsilon=1.0, table_rho="0.01"),
    "segmentation table": EXAMPLE + SEGMENTATION.format(epsilon=1.0, table_rho="0.7"),
    "reach": EXAMPLE + REACH.format(rho="1.2"),
    "reach modest": EXAMPLE + REACH.format(rho="0.05"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_check_plan_warns_about_exactly_what_the_default_node_refuses(name: str) -> None:
    plan = parse_plan(CASES[name])
    warnings = default_policy_refusals(plan)
    refusals = _node_refusals(plan)
    every_round = any(w.startswith("every round of this plan") for w in warnings)
    every_analysis = any(w.startswith(f"all {len(plan.analyses)} analysis(es)") for w in warnings)
    for task, reasons in refusals.items():
        warned = (
            every_round
            or (every_analysis and task.startswith("analysis "))
            or any(w.startswith(task) for w in warnings)
        )
        assert warned == bool(reasons), (task, reasons, warnings)
    # And no warning about anything the node accepts.
    for w in warnings:
        part = w.split(":", 1)[0]
        if not part.startswith(("every round", "all ")):
            assert any(part.startswith(t) and refusals[t] for t in refusals), (part, refusals)


def test_the_cases_cover_every_rule() -> None:
    # Each rule is warned about in at least one case above, and some plans get no warning.
    text = "\n".join(
        w for case in CASES.values() for w in default_policy_refusals(parse_plan(case))
    )
    for rule in ("min_n_min = 1", "allowed_modes", "max_rho_per_task", "allow_social_tariff"):
        assert rule in text, rule
    for quiet in ("demo", "sector", "social left out", "rho at the cap", "reach modest"):
        assert default_policy_refusals(parse_plan(CASES[quiet])) == [], quiet


def _check_plan(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    code = coordinator_main(["check-plan", str(path)])
    out = capsys.readouterr().out
    assert out.startswith("plan ") and " is valid: " in out.splitlines()[0]
    return code, [line for line in out.splitlines() if line.startswith("warning:")]


def test_check_plan_warns_about_min_nodes_below_the_default_n_min(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, warnings = _check_plan(tmp_path, CASES["n_min 1"], capsys)
    assert code == 0  # valid: a sector whose nodes lowered min_n_min can run it
    assert warnings == [
        WARNING + "every round of this plan: min_nodes = 1 lets a round release a sum of 1"
        " institution(s), and the default takes part only in sums of at least 2 (n_min); nodes"
        " must allow it in their policy (min_n_min = 1)"
    ]


def test_check_plan_warns_about_the_social_tariff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, warnings = _check_plan(tmp_path, CASES["social"], capsys)
    assert code == 0
    assert warnings == [
        WARNING + "analysis 's1_tickets_discipline_quarter': its price_type keys include the"
        " social tariff, which can reveal poverty (a plan leaves it out with keys = { price_type"
        ' = ["full", "youth", "senior", "group", "subscription", "member_friend", "pass_flat",'
        ' "complimentary", "other_discount"] }); nodes must allow it in their policy'
        " (allow_social_tariff = true)"
    ]
    # The suggested keys are valid plan TOML, and with them the warning is gone.
    suggested = warnings[0].split("keys = ", 1)[1].split("); nodes", 1)[0]
    fixed = _changed("rho =", f"keys = {suggested}\nrho =", CASES["social"])
    assert _check_plan(tmp_path, fixed, capsys) == (0, [])


def test_check_plan_warns_about_a_task_over_the_default_rho_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, warnings = _check_plan(tmp_path, CASES["rho over the cap"], capsys)
    assert code == 0
    assert warnings == [
        WARNING + "analysis 's1_tickets_discipline_quarter': one task costs rho 0.5000001, and"
        " the default allows at most rho 0.5 per task; nodes must allow it in their policy"
        ' (max_rho_per_task = "0.5000001")'
    ]
    code, warnings = _check_plan(tmp_path, CASES["reach"], capsys)
    assert code == 0
    assert warnings == [
        WARNING + "reach 'reach', round by sector: one task costs rho 0.9, and the default"
        " allows at most rho 0.5 per task; nodes must allow it in their policy"
        ' (max_rho_per_task = "0.9")'
    ]
    code, warnings = _check_plan(tmp_path, CASES["segmentation fit"], capsys)
    assert code == 0 and len(warnings) == 1
    assert warnings[0].startswith(
        WARNING + "segmentation 's12', its largest possible fit round (if the tree stops early):"
        " one task costs rho "
    )


def test_check_plan_warns_about_open_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert coordinator_main(["check-plan", str(PLANS / "s1-open.toml")]) == 0
    warnings = [x for x in capsys.readouterr().out.splitlines() if x.startswith("warning:")]
    assert warnings == [
        WARNING + "all 1 analysis(es): release mode 'open' shows the coordinator each node's"
        " own noisy table, and the default allows secure mode only; nodes must allow it in their"
        ' policy (allowed_modes = ["secure", "open"])'
    ]


def test_check_plan_prints_every_warning_of_a_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _changed("min_nodes = 3", "min_nodes = 1", CASES["social"])
    text = _changed('rho = "0.1"', 'rho = "0.6"', text)
    code, warnings = _check_plan(tmp_path, text, capsys)
    assert code == 0
    assert [w.removeprefix(WARNING).split(":")[0] for w in warnings] == [
        "every round of this plan",
        "analysis 's1_tickets_discipline_quarter'",
        "analysis 's1_tickets_discipline_quarter'",
    ]
    assert "max_rho_per_task" in warnings[1] and "allow_social_tariff" in warnings[2]


def test_the_deployed_plans_get_no_warning_but_open_mode() -> None:
    for path in sorted(PLANS.glob("*.toml")):
        plan = load_plan(path)
        assert bool(default_policy_refusals(plan)) == (plan.mode is ReleaseMode.OPEN), path
